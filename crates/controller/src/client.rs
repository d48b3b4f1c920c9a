//! One HTTP client for every command that talks to a controller or a head: JSON in and out,
//! and errors that say what to do. [`ControllerClient`] is a controller's API, typed.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::coordinator::{LinkRow, NodeRow, Status};
use crate::coordinator::{PathRow, RouteFilter, RouteRequest, RouteRow};
use crate::flows::FlowRow;
use crate::server::RouteApplied;

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the {what} at {base} does not answer ({message}): {hint}")]
    Unreachable {
        what: &'static str,
        base: String,
        message: String,
        hint: &'static str,
    },
    /// The server's own words (a 4xx or 5xx answer).
    #[error("{0}")]
    Refused(String),
    #[error("the {what} at {base} answered {path} with something unreadable: {message}")]
    Unreadable {
        what: &'static str,
        base: String,
        path: String,
        message: String,
    },
}

/// A token as commands and agents find it: `NEXTMINI_TOKEN`, else the file a server on this
/// host wrote in its default state directory; trimmed, and none when empty.
pub fn token_from_env_or_file(file: &std::path::Path) -> Option<String> {
    std::env::var("NEXTMINI_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .or_else(|| std::fs::read_to_string(file).ok())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// A JSON API at one address.
#[derive(Debug, Clone)]
pub struct Http {
    base: String,
    what: &'static str,
    hint: &'static str,
    /// Sent as `Authorization: Bearer …` with every request, when set.
    token: Option<String>,
    /// For an `https://` address: the certificate trusted (`NEXTMINI_CA`), or why there is
    /// none.
    tls: Option<Result<ureq::tls::TlsConfig, String>>,
}

impl Http {
    /// `addr` is `host:port` or `http://host:port`; `what` and `hint` name the server and say
    /// what to do when it does not answer.
    /// `https://host:port` is reached over TLS, trusting the certificate `NEXTMINI_CA` names.
    pub fn new(addr: &str, what: &'static str, hint: &'static str) -> Http {
        let (scheme, rest) = match addr.strip_prefix("https://") {
            Some(rest) => ("https", rest),
            None => ("http", addr.trim_start_matches("http://")),
        };
        let bare = rest.trim_end_matches('/');
        let tls = (scheme == "https").then(|| {
            tls::Trust::required(&format!("the {what} at {addr}"))
                .map(|trust| {
                    let certs = trust
                        .certificates()
                        .iter()
                        .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
                        .collect();
                    ureq::tls::TlsConfig::builder()
                        .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(certs)))
                        .build()
                })
                .map_err(|e| e.to_string())
        });
        Http {
            base: format!("{scheme}://{bare}"),
            what,
            hint,
            token: None,
            tls,
        }
    }

    /// Sends `token` with every request, when given.
    pub fn with_token(mut self, token: Option<String>) -> Http {
        self.token = token;
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The host part of the address (for printing other ports of the same server).
    pub fn host(&self) -> &str {
        let bare = self
            .base
            .split_once("://")
            .map_or(self.base.as_str(), |(_, rest)| rest);
        bare.rsplit_once(':').map_or(bare, |(h, _)| h)
    }

    fn call(&self, path: &str, body: Option<String>) -> Result<String, ClientError> {
        let url = format!("{}{path}", self.base);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let tls = match &self.tls {
            Some(Ok(config)) => Some(config.clone()),
            Some(Err(why)) => return Err(ClientError::Refused(why.clone())),
            None => None,
        };
        let response = match body {
            None => {
                let mut r = ureq::get(&url);
                if let Some(a) = &auth {
                    r = r.header("authorization", a);
                }
                let mut config = r.config().http_status_as_error(false);
                if let Some(tls) = tls {
                    config = config.tls_config(tls);
                }
                config.build().call()
            }
            Some(b) => {
                let mut r = ureq::post(&url).header("content-type", "application/json");
                if let Some(a) = &auth {
                    r = r.header("authorization", a);
                }
                let mut config = r.config().http_status_as_error(false);
                if let Some(tls) = tls {
                    config = config.tls_config(tls);
                }
                config.build().send(b.as_str())
            }
        };
        let mut response = response.map_err(|e| ClientError::Unreachable {
            what: self.what,
            base: self.base.clone(),
            message: e.to_string(),
            hint: self.hint,
        })?;
        let status = response.status();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| self.unreadable(path, e))?;
        if !status.is_success() {
            let text = text.trim();
            return Err(ClientError::Refused(if text.is_empty() {
                format!("the {what} answered {status}", what = self.what)
            } else {
                text.to_owned()
            }));
        }
        Ok(text)
    }

    fn unreadable(&self, path: &str, e: impl std::fmt::Display) -> ClientError {
        ClientError::Unreadable {
            what: self.what,
            base: self.base.clone(),
            path: path.to_owned(),
            message: e.to_string(),
        }
    }

    fn decode<T: DeserializeOwned>(&self, path: &str, text: &str) -> Result<T, ClientError> {
        serde_json::from_str(text).map_err(|e| self.unreadable(path, e))
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let text = self.call(path, None)?;
        self.decode(path, &text)
    }

    /// POSTs `body` as JSON and reads the answer as `T`.
    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_string(body).map_err(|e| self.unreadable(path, e))?;
        let text = self.call(path, Some(body))?;
        self.decode(path, &text)
    }

    /// POSTs `body` (or nothing) and ignores what comes back, but for errors.
    pub fn post_only<B: Serialize>(&self, path: &str, body: Option<&B>) -> Result<(), ClientError> {
        let body = match body {
            Some(b) => serde_json::to_string(b).map_err(|e| self.unreadable(path, e))?,
            None => String::new(),
        };
        self.call(path, Some(body)).map(|_| ())
    }
}

/// A controller's API: the running experiment's state, and its links.
#[derive(Debug, Clone)]
pub struct ControllerClient(Http);

impl ControllerClient {
    pub fn new(addr: &str) -> ControllerClient {
        ControllerClient(Http::new(
            addr,
            "controller",
            "is the experiment still running?",
        ))
    }

    pub fn http(&self) -> &Http {
        &self.0
    }

    /// Sends `token` with every request (a run started with `up --token`).
    pub fn with_token(self, token: Option<String>) -> ControllerClient {
        ControllerClient(self.0.with_token(token))
    }

    pub fn status(&self) -> Result<Status, ClientError> {
        self.0.get("/api/status")
    }

    pub fn nodes(&self) -> Result<Vec<NodeRow>, ClientError> {
        self.0.get("/api/nodes")
    }

    pub fn links(&self) -> Result<Vec<LinkRow>, ClientError> {
        self.0.get("/api/links")
    }

    /// Changes link `a`-`b`, both directions; the new parameters from `a` to `b`.
    pub fn set_link(
        &self,
        a: u32,
        b: u32,
        change: &linkem::LinkChange,
    ) -> Result<linkem::LinkParams, ClientError> {
        self.0.post(&format!("/api/links/{a}/{b}"), change)
    }

    /// Every generated flow and what is known of it.
    pub fn flows(&self) -> Result<Vec<FlowRow>, ClientError> {
        self.0.get("/api/flows")
    }

    /// Adds a flow; its id.
    pub fn add_flow(&self, flow: &experiment::flows::FlowEntry) -> Result<u64, ClientError> {
        #[derive(serde::Deserialize)]
        struct Added {
            id: u64,
        }
        self.0.post::<_, Added>("/api/flows", flow).map(|a| a.id)
    }

    /// Pins a route; answers once every node it changed has it in place.
    pub fn set_route(&self, req: &RouteRequest) -> Result<RouteApplied, ClientError> {
        self.0.post("/api/routes", req)
    }

    pub fn clear_routes(&self, filter: &RouteFilter) -> Result<RouteApplied, ClientError> {
        self.0.post("/api/routes/clear", filter)
    }

    pub fn routes(&self) -> Result<Vec<RouteRow>, ClientError> {
        self.0.get("/api/routes")
    }

    /// Where traffic from `src` to `dst` (of one flow) goes now.
    pub fn route_path(
        &self,
        src: u32,
        dst: u32,
        flow: Option<u64>,
    ) -> Result<PathRow, ClientError> {
        let flow = flow.map_or_else(String::new, |f| format!("&flow={f}"));
        self.0
            .get(&format!("/api/routes/path?src={src}&dst={dst}{flow}"))
    }

    /// The multicast groups.
    pub fn groups(&self) -> Result<Vec<crate::coordinator::GroupRow>, ClientError> {
        self.0.get("/api/groups")
    }

    /// Changes the groups (creates, joins, leaves, sets trees, deletes); the group after it.
    pub fn group(
        &self,
        op: &crate::coordinator::GroupOp,
    ) -> Result<crate::coordinator::GroupRow, ClientError> {
        use crate::coordinator::GroupOp;
        match op {
            GroupOp::Create {
                source,
                address,
                members,
            } => self.0.post(
                "/api/groups",
                &serde_json::json!({ "source": source, "address": address, "members": members }),
            ),
            GroupOp::Join { group, nodes } => self.0.post(
                &format!("/api/groups/{group}/join"),
                &serde_json::json!({ "nodes": nodes }),
            ),
            GroupOp::Leave { group, nodes } => self.0.post(
                &format!("/api/groups/{group}/leave"),
                &serde_json::json!({ "nodes": nodes }),
            ),
            GroupOp::Trees { group, trees } => self.0.post(
                &format!("/api/groups/{group}/trees"),
                &serde_json::json!({ "trees": trees }),
            ),
            GroupOp::Delete { group } => self.0.post(
                &format!("/api/groups/{group}/delete"),
                &serde_json::json!({}),
            ),
        }
    }

    /// Asks the run to tear down (it answers at once and tears down after).
    pub fn down(&self) -> Result<(), ClientError> {
        self.0.post_only::<()>("/api/down", None)
    }

    /// Ends the run and keeps its nodes for the next run of the same layout.
    pub fn down_keeping_nodes(&self) -> Result<(), ClientError> {
        self.0.post_only::<()>("/api/down?keep=1", None)
    }
}
