//! The head's server (`nextmini serve`): host agents register over WebSocket (`/host`);
//! experiments are created, given hosts, planned, launched and cleared over HTTP (see
//! [`crate::api`]); each launched experiment gets its own controller on its own port, which
//! the hosts' agent runs register with. The bookkeeping is [`crate::state::Head`]'s.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use controller::coordinator::{Milestone, NodeState};
use experiment::ExperimentFile;
use futures_util::{SinkExt, StreamExt};
use proto::{HeadToHost, HostToHead};
use tokio::sync::{mpsc, oneshot};

use crate::api::{
    ClearReport, ExecRequest, ExecResult, ExperimentDoc, ExperimentRow, HostRow, HostsChange,
    LaunchDoc, LaunchRequest, MoveRequest, PlanDoc, QueueingRequest,
};
use crate::state::{Head, HeadError, HostInfo};

/// Where and how a head runs.
#[derive(Clone)]
pub struct HeadConfig {
    pub listen: Ipv4Addr,
    pub port: u16,
    /// This host's name: the default experiment's only host.
    pub host: String,
    /// Where the head keeps its state and the store of experiment runs.
    pub state_dir: PathBuf,
    /// What host agents, changes through the API and the experiments' agents must carry
    /// (`Authorization: Bearer`); each experiment's controller asks for it too.
    pub token: String,
    /// TLS on the head's listener and its experiments' controllers (`serve --tls`).
    pub tls: Option<tls::TlsAcceptor>,
}

/// Why a head could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create the state directory {}: {source}", dir.display())]
    StateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not the head's state ({message}): move it away to start afresh", path.display())]
    State { path: PathBuf, message: String },
    #[error(transparent)]
    Bind(#[from] controller::server::BindError),
    #[error("the head's server stopped: {0}")]
    Server(std::io::Error),
}

/// A launched experiment's live parts.
struct Running {
    handle: controller::server::ControllerHandle,
    /// Agent ids of the experiment's controller, by host.
    agents: HashMap<u64, String>,
    /// Hosts whose clear is awaited, and who to tell when all are done.
    clearing: Option<(Vec<String>, oneshot::Sender<()>)>,
    recorder: tokio::task::JoinHandle<()>,
}

/// An experiment's nodes (demands, constraints), links, and what cutting each link costs.
type Demands = (Vec<scheduler::NodeReq>, Vec<(u32, u32)>, Vec<u64>);

struct Shared {
    head: Head,
    hosts: HashMap<String, mpsc::UnboundedSender<HeadToHost>>,
    running: HashMap<String, Running>,
    /// The parsed experiment of each launched or dry-run experiment (for `mv`).
    files: HashMap<String, Demands>,
    /// The experiment file last given to each experiment (what a launch without one uses).
    texts: HashMap<String, String>,
    /// Commands running in nodes, by request, and who waits for their output.
    execs: HashMap<u64, oneshot::Sender<ExecResult>>,
    next_request: u64,
}

#[derive(Clone)]
struct App {
    shared: Arc<Mutex<Shared>>,
    db_url: String,
    /// Where the head keeps experiments across restarts.
    state_file: PathBuf,
    token: Arc<str>,
    tls: Option<tls::TlsAcceptor>,
}

impl App {
    /// Writes the head's experiments and owed clears (whole file, then renamed into place).
    fn save(&self) {
        let snapshot = self
            .shared
            .lock()
            .expect("no panics hold it")
            .head
            .snapshot();
        let tmp = self.state_file.with_extension("json.tmp");
        let written = serde_json::to_vec_pretty(&snapshot)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &self.state_file));
        if let Err(e) = written {
            tracing::warn!(
                "cannot save the head's state to {}: {e}",
                self.state_file.display()
            );
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs the head until `shutdown`; then clears every experiment on the hosts that are up.
pub async fn serve(cfg: HeadConfig, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    std::fs::create_dir_all(&cfg.state_dir).map_err(|source| ServeError::StateDir {
        dir: cfg.state_dir.clone(),
        source,
    })?;
    let state_file = cfg.state_dir.join("head.json");
    let head = match std::fs::read(&state_file) {
        Ok(bytes) => {
            let snapshot = serde_json::from_slice(&bytes).map_err(|e| ServeError::State {
                path: state_file.clone(),
                message: e.to_string(),
            })?;
            Head::restore(&cfg.host, snapshot)
        }
        Err(_) => Head::new(&cfg.host),
    };
    let app = App {
        state_file,
        token: Arc::from(cfg.token.as_str()),
        tls: cfg.tls.clone(),
        shared: Arc::new(Mutex::new(Shared {
            head,
            hosts: HashMap::new(),
            running: HashMap::new(),
            files: HashMap::new(),
            texts: HashMap::new(),
            execs: HashMap::new(),
            next_request: 1,
        })),
        db_url: controller::run::default_db_url(&cfg.state_dir),
    };
    let listener = controller::server::bind(SocketAddr::from((cfg.listen, cfg.port))).await?;
    eprintln!(
        "head {} listening on {}:{}; host agents: NEXTMINI_TOKEN=<head.token of its state directory> nextmini agent --head <this address>:{}",
        cfg.host, cfg.listen, cfg.port, cfg.port
    );
    let router = axum::Router::new()
        .route(proto::HOST_PATH, get(host_session))
        .route("/api/hosts", get(api_hosts))
        .route("/api/exps", get(api_exps))
        .route("/api/exps/{name}", post(api_switch).get(api_exp))
        .route("/api/exps/{name}/hosts", post(api_exp_hosts))
        .route("/api/exps/{name}/launch", post(api_launch))
        .route("/api/exps/{name}/mv", post(api_mv))
        .route("/api/exps/{name}/queueing", post(api_queueing))
        .route("/api/exps/{name}/exec", post(api_exec))
        .route("/api/exps/{name}/clear", post(api_clear))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            require_token,
        ))
        .with_state(app.clone());
    let served = async {
        match cfg.tls {
            Some(acceptor) => {
                let listener = controller::bounded::TlsListener::new(listener, acceptor);
                axum::serve(listener, router).await
            }
            None => axum::serve(listener, router).await,
        }
    };
    tokio::select! {
        r = served => r.map_err(ServeError::Server)?,
        () = shutdown => {}
    }
    // Leaving: clear every experiment on the hosts that are up.
    let names = app
        .shared
        .lock()
        .expect("no panics hold it")
        .head
        .experiment_names();
    for name in names {
        let _ = clear(&app, &name).await;
    }
    Ok(())
}

/// Host agents and every change carry the head's token; reading is open.
async fn require_token(
    State(app): State<App>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if request.method() != axum::http::Method::POST && request.uri().path() != proto::HOST_PATH {
        return next.run(request).await;
    }
    if controller::server::carries_token(request.headers(), &app.token) {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            "the head takes host agents and changes with its token: set NEXTMINI_TOKEN to the contents of head.token in the head's state directory\n",
        )
            .into_response()
    }
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, format!("{}\n", self.1)).into_response()
    }
}

impl From<HeadError> for ApiError {
    fn from(e: HeadError) -> Self {
        let status = match e {
            HeadError::NoExperiment(_) => StatusCode::NOT_FOUND,
            HeadError::StillLaunching(..) | HeadError::AlreadyLaunched(_) => StatusCode::CONFLICT,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError(status, e.to_string())
    }
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, e.to_string())
}

async fn api_hosts(State(app): State<App>) -> Json<Vec<HostRow>> {
    Json(
        app.shared
            .lock()
            .expect("no panics hold it")
            .head
            .host_rows(),
    )
}

async fn api_exps(State(app): State<App>) -> Json<Vec<ExperimentRow>> {
    Json(
        app.shared
            .lock()
            .expect("no panics hold it")
            .head
            .experiment_rows(),
    )
}

async fn api_switch(
    State(app): State<App>,
    UrlPath(name): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    app.shared
        .lock()
        .expect("no panics hold it")
        .head
        .switch(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn api_exp(
    State(app): State<App>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<ExperimentDoc>, ApiError> {
    let (mut doc, handle) = {
        let s = app.shared.lock().expect("no panics hold it");
        let e = s.head.experiment(&name)?;
        let launch = e.launch.as_ref().map(|l| LaunchDoc {
            prefix: l.prefix.clone(),
            underlay_base: l.base,
            vni: l.vni,
            port: l.port,
            shares: l
                .shares
                .iter()
                .map(|(h, ids)| (h.clone(), topology::ids::format_ids(ids)))
                .collect(),
        });
        let doc = ExperimentDoc {
            name: name.clone(),
            hosts: e.hosts.clone(),
            load: e.load.to_string(),
            queueing: e.queueing,
            schedules: e.schedules.clone(),
            dry_run: e.dry_run.as_ref().map(|p| p.host_of.clone()),
            launch,
            status: None,
            failed_nodes: Vec::new(),
            lost_links: Vec::new(),
        };
        (doc, s.running.get(&name).map(|r| r.handle.clone()))
    };
    if let Some(h) = handle {
        doc.status = h.status().await;
        doc.failed_nodes = h
            .nodes()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n.state == NodeState::Failed)
            .map(|n| n.node_id)
            .collect();
        // Links whose connection is down (a lost node's, or one taken down).
        doc.lost_links = h
            .links()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|l| !l.up)
            .map(|l| format!("{}-{}", l.a, l.b))
            .collect();
    }
    Ok(Json(doc))
}

async fn api_exp_hosts(
    State(app): State<App>,
    UrlPath(name): UrlPath<String>,
    Json(body): Json<HostsChange>,
) -> Result<StatusCode, ApiError> {
    let mut s = app.shared.lock().expect("no panics hold it");
    if let Some(list) = &body.add {
        s.head.hosts_add(&name, list)?;
    }
    if let Some(list) = &body.del {
        s.head.hosts_del(&name, list)?;
    }
    drop(s);
    app.save();
    Ok(StatusCode::NO_CONTENT)
}

/// A plan as the API shows it: node ids by host.
fn plan_doc(plan: &scheduler::Plan, edges: &[(u32, u32)]) -> PlanDoc {
    let mut hosts: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (id, h) in &plan.host_of {
        hosts.entry(h.clone()).or_default().push(*id);
    }
    PlanDoc {
        hosts,
        links_across_hosts: plan.cut_links(edges),
        queued: false,
        launch: None,
    }
}

async fn api_launch(
    State(app): State<App>,
    UrlPath(name): UrlPath<String>,
    Json(body): Json<LaunchRequest>,
) -> Result<Json<PlanDoc>, ApiError> {
    let path = format!("{name}.toml");
    let (text, queueing) = {
        let mut s = app.shared.lock().expect("no panics hold it");
        let queueing = s.head.experiment(&name)?.queueing;
        let text = match &body.file {
            Some(t) => {
                s.texts.insert(name.clone(), t.clone());
                t.clone()
            }
            None => s.texts.get(&name).cloned().ok_or_else(|| {
                bad(format!(
                    "nothing queued in {name}: give a file (`nextmini exp {name} launch FILE`)"
                ))
            })?,
        };
        (text, queueing)
    };
    // With queueing on, a file only queues (as a dry run); a launch without one starts it.
    let dry_run = body.dry_run || (queueing && body.file.is_some());
    let file = ExperimentFile::parse(&path, &text).map_err(bad)?;
    let mut exp = file.resolve(None).map_err(bad)?;
    let nodes = exp.placement.clone();
    let edges = exp.topology.edges().to_vec();
    // Cutting a fast link costs more than a slow one: placement weighs links by rate.
    let weights: Vec<u64> = edges
        .iter()
        .map(|&(a, b)| exp.links.cut_weight(a, b))
        .collect();
    let load: scheduler::LoadMetric = body
        .load
        .as_deref()
        .unwrap_or("cpucommit")
        .parse()
        .map_err(bad)?;
    let plan = {
        let mut s = app.shared.lock().expect("no panics hold it");
        let plan = s
            .head
            .plan(&name, &nodes, (&edges, &weights), load, dry_run)?;
        s.files.insert(
            name.clone(),
            (nodes.clone(), edges.clone(), weights.clone()),
        );
        plan
    };
    if dry_run {
        let mut doc = plan_doc(&plan, &edges);
        doc.queued = queueing && !body.dry_run;
        return Ok(Json(doc));
    }
    // The experiment's own controller, on a port of its own.
    let listener = controller::server::bind(SocketAddr::from(([0, 0, 0, 0], 0)))
        .await
        .map_err(bad)?;
    let port = listener.local_addr().map_err(bad)?.port();
    let (launch, orders) = {
        let mut s = app.shared.lock().expect("no panics hold it");
        s.head.launch(&name, &plan, &nodes, port, now())?
    };
    exp.prefix = Some(launch.prefix.clone());
    exp.underlay_base = Some(launch.base);
    exp.name = name.clone();
    // Its agents carry the head's token (the hosts have it); so do changes through its API.
    let access = controller::run::Access {
        token: Some(app.token.to_string()),
        node_listeners: Vec::new(),
        tls: app.tls.clone(),
    };
    let started = match controller::run::start(&exp, listener, &app.db_url, true, access).await {
        Ok(s) => s,
        Err(e) => {
            // Nothing was sent to the hosts: the launch failed everywhere, and can be cleared.
            let mut s = app.shared.lock().expect("no panics hold it");
            for host in launch.shares.keys() {
                s.head.host_launched(&name, host, false, now());
            }
            return Err(ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot start the experiment's controller: {e}"),
            ));
        }
    };
    let controller::run::Started {
        handle,
        writer,
        mut milestones,
        ..
    } = started;
    // Milestones: into the store, and a host's plumbing done confirms its launch.
    let recorder = {
        let app = app.clone();
        let name = name.clone();
        tokio::spawn(async move {
            while let Some(m) = milestones.recv().await {
                writer.record(&m);
                let mut s = app.shared.lock().expect("no panics hold it");
                match &m {
                    Milestone::AgentRegistered { agent, host, .. } => {
                        if let Some(r) = s.running.get_mut(&name) {
                            r.agents.insert(*agent, host.clone());
                        }
                    }
                    Milestone::PlumbingDone { agent, .. } => {
                        let host = s
                            .running
                            .get(&name)
                            .and_then(|r| r.agents.get(agent).cloned());
                        if let Some(host) = host {
                            s.head.host_launched(&name, &host, true, now());
                        }
                    }
                    _ => {}
                }
            }
            let _ = writer.close().await;
        })
    };
    let mut s = app.shared.lock().expect("no panics hold it");
    s.running.insert(
        name.clone(),
        Running {
            handle,
            agents: HashMap::new(),
            clearing: None,
            recorder,
        },
    );
    for order in orders {
        let msg = HeadToHost::Launch {
            experiment: name.clone(),
            port,
            prefix: launch.prefix.clone(),
            base: launch.base,
            vni: launch.vni,
            node_ids: order.node_ids,
            peers: order.peers,
        };
        match s.hosts.get(&order.host) {
            Some(tx) if tx.send(msg).is_ok() => {}
            _ => s.head.host_launched(&name, &order.host, false, now()),
        }
    }
    drop(s);
    app.save();
    let mut doc = plan_doc(&plan, &edges);
    doc.launch = Some(LaunchDoc {
        prefix: launch.prefix,
        underlay_base: launch.base,
        vni: launch.vni,
        port,
        shares: BTreeMap::new(),
    });
    Ok(Json(doc))
}

/// Runs a command in a node, on whichever host holds it; answers with its exit code and what
/// it printed.
async fn api_exec(
    State(app): State<App>,
    UrlPath(name): UrlPath<String>,
    Json(body): Json<ExecRequest>,
) -> Result<Json<ExecResult>, ApiError> {
    let timeout = Duration::from_secs(body.timeout_s.unwrap_or(60));
    let rx = {
        let mut s = app.shared.lock().expect("no panics hold it");
        let launch = s
            .head
            .experiment(&name)?
            .launch
            .clone()
            .ok_or_else(|| bad(format!("experiment {name} is not launched")))?;
        let host = launch
            .shares
            .iter()
            .find(|(_, ids)| ids.contains(&body.node))
            .map(|(h, _)| h.clone())
            .ok_or_else(|| bad(format!("node {} is not in experiment {name}", body.node)))?;
        let tx = s
            .hosts
            .get(&host)
            .cloned()
            .ok_or_else(|| bad(format!("host {host} of node {} is down", body.node)))?;
        let request = s.next_request;
        s.next_request += 1;
        let (reply, rx) = oneshot::channel();
        s.execs.insert(request, reply);
        let order = HeadToHost::Exec {
            request,
            netns: format!("{}{}", launch.prefix, body.node),
            argv: body.argv,
            timeout_ms: timeout.as_millis() as u64,
        };
        if tx.send(order).is_err() {
            s.execs.remove(&request);
            return Err(bad(format!("host {host} of node {} is down", body.node)));
        }
        rx
    };
    match tokio::time::timeout(timeout + Duration::from_secs(5), rx).await {
        Ok(Ok(done)) => Ok(Json(done)),
        _ => Err(ApiError(
            StatusCode::GATEWAY_TIMEOUT,
            "the node's host did not answer".to_owned(),
        )),
    }
}

async fn api_queueing(
    State(app): State<App>,
    UrlPath(name): UrlPath<String>,
    Json(body): Json<QueueingRequest>,
) -> Result<StatusCode, ApiError> {
    app.shared
        .lock()
        .expect("no panics hold it")
        .head
        .set_queueing(&name, body.on)?;
    app.save();
    Ok(StatusCode::NO_CONTENT)
}

async fn api_mv(
    State(app): State<App>,
    UrlPath(name): UrlPath<String>,
    Json(body): Json<MoveRequest>,
) -> Result<Json<PlanDoc>, ApiError> {
    let ids = topology::ids::parse_ids(&body.nodes).map_err(bad)?;
    let mut s = app.shared.lock().expect("no panics hold it");
    let (nodes, edges, weights) = s
        .files
        .get(&name)
        .cloned()
        .ok_or(HeadError::NoDryRun(name.clone()))?;
    let plan = s
        .head
        .move_nodes(&name, &nodes, (&edges, &weights), &ids, &body.host)?;
    Ok(Json(plan_doc(&plan, &edges)))
}

async fn api_clear(
    State(app): State<App>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<ClearReport>, ApiError> {
    Ok(Json(clear(&app, &name).await?))
}

/// Clears an experiment: every host that is up removes its share (waited for, up to 30 s),
/// then its controller stops.
async fn clear(app: &App, name: &str) -> Result<ClearReport, ApiError> {
    let (done_rx, up, down) = {
        let mut s = app.shared.lock().expect("no panics hold it");
        let (up, down) = s.head.clear(name)?;
        s.files.remove(name);
        s.texts.remove(name);
        let (done_tx, done_rx) = oneshot::channel();
        let hosts: Vec<String> = up.iter().map(|(h, _)| h.clone()).collect();
        // The experiment's controller goes down first: it tells its agents, and the nodes
        // that leave now are not reported as failures.
        if let Some(r) = s.running.get(name) {
            r.handle.down();
        }
        for h in &hosts {
            if let Some(tx) = s.hosts.get(h) {
                let _ = tx.send(HeadToHost::Clear {
                    experiment: name.to_owned(),
                });
            }
        }
        match s.running.get_mut(name) {
            Some(r) if !hosts.is_empty() => r.clearing = Some((hosts.clone(), done_tx)),
            _ => {
                let _ = done_tx.send(());
            }
        }
        (done_rx, hosts, down)
    };
    let complete = tokio::time::timeout(Duration::from_secs(30), done_rx)
        .await
        .is_ok();
    let running = app
        .shared
        .lock()
        .expect("no panics hold it")
        .running
        .remove(name);
    if let Some(r) = running {
        r.recorder.abort();
    }
    app.save();
    Ok(ClearReport {
        cleared: up,
        down,
        complete,
    })
}

async fn host_session(State(app): State<App>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| host_task(app, socket))
}

async fn host_task(app: App, socket: WebSocket) {
    let (mut sink, mut incoming) = socket.split();
    let Some(Ok(Message::Binary(first))) = incoming.next().await else {
        return;
    };
    let Ok(HostToHead::Hello {
        version,
        name,
        cpus,
        mem_mib,
        addr,
    }) = proto::decode::<HostToHead>(&first)
    else {
        return;
    };
    let reply = |m: &HeadToHost| Message::Binary(proto::encode(m).unwrap_or_default().into());
    if version != proto::VERSION {
        let reason = format!(
            "host speaks protocol version {version}, the head {}: run the same nextmini build on both",
            proto::VERSION
        );
        let _ = sink.send(reply(&HeadToHost::Rejected { reason })).await;
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<HeadToHost>();
    let pending = {
        let mut s = app.shared.lock().expect("no panics hold it");
        if s.hosts.get(&name).is_some_and(|t| !t.is_closed()) {
            None
        } else {
            s.hosts.insert(name.clone(), tx.clone());
            Some(s.head.host_up(HostInfo {
                name: name.clone(),
                addr,
                cpus,
                mem_mib,
                up: true,
                load1: 0.0,
                mem_available_mib: mem_mib,
            }))
        }
    };
    let Some(pending) = pending else {
        let reason = format!("a host named {name} is already registered: give each its own --host");
        let _ = sink.send(reply(&HeadToHost::Rejected { reason })).await;
        return;
    };
    tracing::info!("host {name} ({addr}, {cpus} CPUs, {mem_mib} MiB) registered");
    if sink.send(reply(&HeadToHost::Accepted)).await.is_err() {
        return;
    }
    if !pending.is_empty() {
        app.save();
    }
    for experiment in pending {
        let _ = tx.send(HeadToHost::Clear { experiment });
    }
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(m) => if sink.send(reply(&m)).await.is_err() { break },
                None => break,
            },
            msg = incoming.next() => {
                let Some(Ok(Message::Binary(b))) = msg else {
                    if matches!(msg, Some(Ok(_))) { continue }
                    break;
                };
                let Ok(m) = proto::decode::<HostToHead>(&b) else { break };
                let mut s = app.shared.lock().expect("no panics hold it");
                match m {
                    HostToHead::Launched { experiment, error } => {
                        if let Some(e) = &error {
                            tracing::warn!("host {name}: experiment {experiment}: {e}");
                        }
                        s.head.host_launched(&experiment, &name, error.is_none(), now());
                    }
                    HostToHead::Cleared { experiment } => {
                        if let Some(r) = s.running.get_mut(&experiment)
                            && let Some((waiting, _)) = &mut r.clearing
                        {
                            waiting.retain(|h| *h != name);
                            if waiting.is_empty()
                                && let Some((_, done)) = r.clearing.take()
                            {
                                let _ = done.send(());
                            }
                        }
                    }
                    HostToHead::ExecDone { request, code, stdout, stderr } => {
                        if let Some(reply) = s.execs.remove(&request) {
                            let _ = reply.send(ExecResult { code, stdout, stderr });
                        }
                    }
                    HostToHead::Load { load1, mem_available_mib } => {
                        s.head.host_load(&name, load1, mem_available_mib);
                    }
                    HostToHead::Hello { .. } => {}
                }
            }
        }
    }
    let mut s = app.shared.lock().expect("no panics hold it");
    s.hosts.remove(&name);
    for (experiment, ids) in s.head.host_down(&name) {
        tracing::warn!(
            "host {name} is down: experiment {experiment} lost nodes {}",
            topology::ids::format_ids(&ids)
        );
    }
    // A clear waiting on this host will not hear from it.
    for r in s.running.values_mut() {
        if let Some((waiting, _)) = &mut r.clearing {
            waiting.retain(|h| *h != name);
            if waiting.is_empty()
                && let Some((_, done)) = r.clearing.take()
            {
                let _ = done.send(());
            }
        }
    }
}
