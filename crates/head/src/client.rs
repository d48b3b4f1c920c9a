//! The head's API from the command line, typed: what `nextmini exp` and `nextmini hosts` call.

use controller::client::{ClientError, Http};

use crate::api::{
    ClearReport, ExecRequest, ExecResult, ExperimentDoc, ExperimentRow, HostRow, HostsChange,
    LaunchRequest, MoveRequest, PlanDoc, QueueingRequest,
};

/// The head's port when none is given.
pub const DEFAULT_HEAD_PORT: u16 = 3900;

/// Where the CLI finds the head: `--head`, else `NEXTMINI_HEAD`, else this host.
pub fn head_addr(flag: Option<&str>) -> String {
    flag.map(str::to_owned)
        .or_else(|| std::env::var("NEXTMINI_HEAD").ok())
        .unwrap_or_else(|| format!("127.0.0.1:{DEFAULT_HEAD_PORT}"))
}

/// Where `nextmini serve` keeps its state when not told otherwise.
pub const DEFAULT_HEAD_STATE_DIR: &str = "/var/lib/nextmini/head";

/// The head's token file in its state directory (readable by its owner only).
pub const TOKEN_FILE: &str = "head.token";

/// The head's token as the CLI finds it: `NEXTMINI_TOKEN`, else the token file of a head
/// with the default state directory on this machine.
pub fn head_token() -> Option<String> {
    controller::client::token_from_env_or_file(
        &std::path::Path::new(DEFAULT_HEAD_STATE_DIR).join(TOKEN_FILE),
    )
}

#[derive(Debug, Clone)]
pub struct HeadClient(Http);

impl HeadClient {
    /// A client of the head at `addr`, with its token as [`head_token`] finds it.
    pub fn new(addr: &str) -> HeadClient {
        HeadClient(
            Http::new(
                addr,
                "head",
                "start it with `nextmini serve`, or give --head",
            )
            .with_token(head_token()),
        )
    }

    pub fn http(&self) -> &Http {
        &self.0
    }

    pub fn hosts(&self) -> Result<Vec<HostRow>, ClientError> {
        self.0.get("/api/hosts")
    }

    pub fn experiments(&self) -> Result<Vec<ExperimentRow>, ClientError> {
        self.0.get("/api/exps")
    }

    /// The active experiment's name.
    pub fn active(&self) -> Result<String, ClientError> {
        self.experiments()?
            .into_iter()
            .find(|e| e.active)
            .map(|e| e.name)
            .ok_or_else(|| ClientError::Refused("the head has no active experiment".into()))
    }

    pub fn experiment(&self, name: &str) -> Result<ExperimentDoc, ClientError> {
        self.0.get(&format!("/api/exps/{name}"))
    }

    /// Creates the experiment if it is new, and makes it the active one.
    pub fn switch(&self, name: &str) -> Result<(), ClientError> {
        self.0.post_only::<()>(&format!("/api/exps/{name}"), None)
    }

    pub fn change_hosts(&self, name: &str, change: &HostsChange) -> Result<(), ClientError> {
        self.0
            .post_only(&format!("/api/exps/{name}/hosts"), Some(change))
    }

    pub fn launch(&self, name: &str, request: &LaunchRequest) -> Result<PlanDoc, ClientError> {
        self.0.post(&format!("/api/exps/{name}/launch"), request)
    }

    pub fn move_nodes(&self, name: &str, request: &MoveRequest) -> Result<PlanDoc, ClientError> {
        self.0.post(&format!("/api/exps/{name}/mv"), request)
    }

    pub fn queueing(&self, name: &str, on: bool) -> Result<(), ClientError> {
        self.0.post_only(
            &format!("/api/exps/{name}/queueing"),
            Some(&QueueingRequest { on }),
        )
    }

    pub fn exec(&self, name: &str, request: &ExecRequest) -> Result<ExecResult, ClientError> {
        self.0.post(&format!("/api/exps/{name}/exec"), request)
    }

    pub fn clear(&self, name: &str) -> Result<ClearReport, ClientError> {
        self.0.post(&format!("/api/exps/{name}/clear"), &())
    }
}
