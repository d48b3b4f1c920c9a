//! The controller's I/O: WebSocket sessions for agents (carrying their nodes' sessions), the HTTP API, and one task
//! that owns the [`Coordinator`] and delivers what it decides.
//!
//! ```text
//! GET  /agent       WebSocket, an agent's session, carrying its nodes' sessions
//! GET  /api/status  phase and counts
//! GET  /api/nodes   every node and its state
//! GET  /api/links   every link: up or not, each direction's parameters and counters
//! POST /api/links/{a}/{b}  change a link (JSON LinkChange), both directions
//! POST /api/down    tear the run down (`?keep=1`: keep the nodes for the next run)
//! GET  /api/flows   every generated flow: state, times, bytes, completion time, TCP figures
//! POST /api/flows   add a flow, as [[flows]] writes one ({"src_node_id": 1, …}); its id
//! GET  /api/routes  the pinned routes
//! POST /api/routes  pin a route ({"src": 1, "dst": 8, "edges": [[1, 3], [3, 8]], "flow": 4});
//!                   answers once every node it changed has it in place
//! POST /api/routes/clear   unpin routes ({"src": 1, "dst": 8}, {} for all)
//! GET  /api/routes/path?src=1&dst=8[&flow=4]   where that traffic goes now
//! GET  /api/groups  multicast groups: source, members, trees
//! POST /api/groups  create one ({"source": 1, "members": [5, 9]}, "address" optional)
//! POST /api/groups/{addr}/join, /leave  ({"nodes": [5]}); /trees ({"trees": [{"tree_id": 1,
//!                   "weight": 2, "edges": [[1, 2], [2, 5]]}], null for the shortest-path
//!                   tree); /delete
//! GET  /api/metrics/links?since_ns=…&src=1&dst=2   link samples of this run, from the store
//! GET  /api/metrics/flows/{id}?since_ns=…          a flow's samples on each link it crossed
//! GET  /metrics     Prometheus text: links, nodes, flows, completion times, route changes
//! GET  /            the live view (with /app.js, /style.css); /api/topology what it draws,
//!                   /api/events its state every second (server-sent events)
//! GET  /api/links/{a}/{b}, /api/nodes/{id}/routes   one link; a node's routes
//! ```
//!
//! With a token (`up --token`), every request that changes the run (the POSTs) must carry
//! `Authorization: Bearer <token>`; without one the page is read-only.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use futures_util::{SinkExt, StreamExt};
use proto::{AgentToController, ControllerToAgent};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::coordinator::{
    AddFlowError, AgentId, ChangeError, Coordinator, LinkRow, Milestone, NodeRow, Output, PathRow,
    RouteChange, RouteError, RouteFilter, RouteRequest, RouteRow, Status,
};
use crate::flows::FlowRow;
use crate::store::Store;

/// Control messages are small; a few KiB of buffer per session keeps thousands of sessions
/// cheap (tungstenite's default read buffer is 128 KiB).
pub const WS_BUFFER: usize = 4096;

enum Input {
    Agent {
        id: AgentId,
        msg: AgentToController,
        tx: Option<mpsc::UnboundedSender<ControllerToAgent>>,
    },
    AgentGone(AgentId),
    /// The experiment's router, computed while the agents plumbed.
    Router(Box<topology::routing::Router>),
    Status(oneshot::Sender<Status>),
    Nodes(oneshot::Sender<Vec<NodeRow>>),
    Links(oneshot::Sender<Vec<LinkRow>>),
    SetLink {
        a: u32,
        b: u32,
        change: proto::LinkChange,
        reply: oneshot::Sender<Result<proto::LinkParams, ChangeError>>,
    },
    /// Would this flow be taken? (Asked before its row is made.)
    CheckFlow {
        src: u32,
        dst: u32,
        spec: proto::FlowSpec,
        reply: oneshot::Sender<Result<(), AddFlowError>>,
    },
    AddFlow {
        id: u64,
        src: u32,
        dst: u32,
        spec: proto::FlowSpec,
        start: Duration,
        reply: Option<oneshot::Sender<Result<(), AddFlowError>>>,
    },
    Flows(oneshot::Sender<Vec<FlowRow>>),
    /// Route changes answer once applied (every node they went to confirmed).
    SetRoute {
        req: RouteRequest,
        reply: oneshot::Sender<Result<RouteApplied, RouteError>>,
    },
    UnsetRoute {
        req: RouteRequest,
        reply: oneshot::Sender<RouteApplied>,
    },
    ClearRoutes {
        filter: RouteFilter,
        reply: oneshot::Sender<RouteApplied>,
    },
    Routes(oneshot::Sender<Vec<RouteRow>>),
    /// The live view's node and link codes, and flows by state.
    View(oneshot::Sender<(Status, String, String)>),
    Link {
        a: u32,
        b: u32,
        reply: oneshot::Sender<Result<LinkRow, String>>,
    },
    NodeRoutes {
        node: u32,
        reply: oneshot::Sender<Result<crate::coordinator::NodeRoutes, String>>,
    },
    RoutePath {
        src: u32,
        dst: u32,
        flow: Option<u64>,
        reply: oneshot::Sender<Result<PathRow, RouteError>>,
    },
    Group {
        op: crate::coordinator::GroupOp,
        reply:
            oneshot::Sender<Result<crate::coordinator::GroupRow, crate::coordinator::GroupError>>,
    },
    Groups(oneshot::Sender<Vec<crate::coordinator::GroupRow>>),
    /// Tear down, or with `keep` end the run and keep the nodes for the next (`down --keep`).
    Down {
        keep: bool,
    },
}

/// A route change in place: its version, the nodes that got new tables, and the time from
/// the request to the last node's confirmation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RouteApplied {
    pub version: u64,
    pub nodes: usize,
    pub applied_ms: f64,
    /// A flow's route, kept until the flow opens its connection.
    pub waits_for_flow: bool,
}

/// What watches the milestones besides the store: the Prometheus registry and the page's
/// link loads.
struct Observers {
    prometheus: Arc<crate::metrics::Prometheus>,
    loads: Arc<std::sync::Mutex<crate::view::Loads>>,
}

/// Who waits for which route version.
type RouteWaiters = HashMap<u64, Vec<(RouteChange, Instant, oneshot::Sender<RouteApplied>)>>;

/// A handle on a running controller.
#[derive(Clone)]
pub struct ControllerHandle {
    tx: mpsc::UnboundedSender<Input>,
    down: watch::Receiver<bool>,
}

impl ControllerHandle {
    /// Hands the coordinator its router (see `Coordinator::without_routes`).
    pub fn install_router(&self, router: topology::routing::Router) {
        let _ = self.tx.send(Input::Router(Box::new(router)));
    }

    pub async fn status(&self) -> Option<Status> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Input::Status(reply)).ok()?;
        rx.await.ok()
    }

    pub async fn nodes(&self) -> Option<Vec<NodeRow>> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Input::Nodes(reply)).ok()?;
        rx.await.ok()
    }

    pub async fn links(&self) -> Option<Vec<LinkRow>> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Input::Links(reply)).ok()?;
        rx.await.ok()
    }

    /// Adds a flow that has its row in the store already (its id is the row's).
    pub async fn add_flow(
        &self,
        id: u64,
        src: u32,
        dst: u32,
        spec: proto::FlowSpec,
        start: Duration,
    ) -> Option<Result<(), AddFlowError>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Input::AddFlow {
                id,
                src,
                dst,
                spec,
                start,
                reply: Some(reply),
            })
            .ok()?;
        rx.await.ok()
    }

    pub async fn flows(&self) -> Option<Vec<FlowRow>> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Input::Flows(reply)).ok()?;
        rx.await.ok()
    }

    /// Pins a route; resolves once every node it changed has it in place.
    pub async fn set_route(&self, req: RouteRequest) -> Option<Result<RouteApplied, RouteError>> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Input::SetRoute { req, reply }).ok()?;
        rx.await.ok()
    }

    /// Unpins `req`'s route if it is the one pinned for its ends and flow.
    pub async fn unset_route(&self, req: RouteRequest) -> Option<RouteApplied> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Input::UnsetRoute { req, reply }).ok()?;
        rx.await.ok()
    }

    pub async fn clear_routes(&self, filter: RouteFilter) -> Option<RouteApplied> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Input::ClearRoutes { filter, reply }).ok()?;
        rx.await.ok()
    }

    /// Asks every agent to tear down; `wait_down` resolves then.
    pub fn down(&self) {
        let _ = self.tx.send(Input::Down { keep: false });
    }

    /// Resolves once a teardown was asked for (API, `down()`).
    pub async fn wait_down(&mut self) {
        let _ = self.down.wait_for(|d| *d).await;
    }

    /// Resolves once a teardown was asked for or the controller is gone.
    pub async fn stopped(&self) {
        let mut down = self.down.clone();
        let _ = down.wait_for(|d| *d).await;
    }
}

#[derive(Clone)]
struct AppState {
    tx: mpsc::UnboundedSender<Input>,
    next_agent: Arc<AtomicU64>,
    /// The store and the run: flows get their ids there.
    run: Option<(Store, i64)>,
    prometheus: Arc<crate::metrics::Prometheus>,
    loads: Arc<std::sync::Mutex<crate::view::Loads>>,
    topology: Arc<crate::view::TopologyView>,
    /// Changes need it when set.
    token: Option<Arc<str>>,
    /// Where programs in nodes connect from: they get the status only.
    node_nets: crate::bounded::NodeNets,
}

/// How the server is set up beyond its coordinator.
#[derive(Default)]
pub struct ServeOptions {
    /// The store and the run: flows get their ids there, and the page its time series.
    pub run: Option<(Store, i64)>,
    /// A token that every change must carry (and the page asks for), and agents too.
    pub token: Option<String>,
    /// Listeners where programs inside nodes reach the controller (their bridges' addresses):
    /// the status only, bounded per peer (see [`crate::bounded`]). Code running inside a
    /// node can dial these, so nothing there changes or stops the experiment.
    pub node_listeners: Vec<TcpListener>,
    /// TLS on the main listener (`--tls`): agents and clients on other hosts.
    pub tls: Option<tls::TlsAcceptor>,
}

/// Starts the controller on `listener`. Milestones go to `milestones` as they happen; flows
/// added through the API get their rows in the options' store.
pub fn spawn(
    listener: TcpListener,
    coordinator: Coordinator,
    milestones: mpsc::UnboundedSender<Milestone>,
    options: ServeOptions,
) -> ControllerHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let (down_tx, down_rx) = watch::channel(false);
    let prometheus = Arc::new(crate::metrics::Prometheus::new());
    let loads = Arc::new(std::sync::Mutex::new(crate::view::Loads::default()));
    let topology = Arc::new(crate::view::TopologyView::of(coordinator.topology()));
    tokio::spawn(run_coordinator(
        coordinator,
        rx,
        milestones,
        down_tx,
        Observers {
            prometheus: prometheus.clone(),
            loads: loads.clone(),
        },
    ));
    let state = AppState {
        tx: tx.clone(),
        next_agent: Arc::new(AtomicU64::new(1)),
        run: options.run,
        prometheus,
        loads,
        topology,
        token: options.token.map(Arc::from),
        node_nets: crate::bounded::NodeNets::default(),
    };
    for listener in options.node_listeners {
        // Node sessions travel inside their agents' sessions: nothing on a bridge speaks for
        // a node, and a program inside one reads the status and nothing else.
        let nodes_only = Router::new()
            .route("/api/status", get(api_status))
            .with_state(state.clone());
        let listener = crate::bounded::BoundedListener::new(listener);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, nodes_only).await {
                tracing::error!("node listener stopped: {e}");
            }
        });
    }
    let app = Router::new()
        .route(proto::AGENT_PATH, get(agent_ws))
        .route("/api/status", get(api_status))
        .route("/api/nodes", get(api_nodes))
        .route("/api/links", get(api_links))
        .route("/api/links/{a}/{b}", get(api_link).post(api_set_link))
        .route("/api/nodes/{id}/routes", get(api_node_routes))
        .route("/api/topology", get(api_topology))
        .route("/api/events", get(api_events))
        .route("/", get(page_index))
        .route("/app.js", get(page_js))
        .route("/style.css", get(page_css))
        .route("/api/down", post(api_down))
        .route("/api/flows", get(api_flows).post(api_add_flow))
        .route("/api/routes", get(api_routes).post(api_set_route))
        .route("/api/routes/clear", post(api_clear_routes))
        .route("/api/routes/path", get(api_route_path))
        .route("/api/groups", get(api_groups).post(api_create_group))
        .route("/api/groups/{addr}/{op}", post(api_change_group))
        .route("/api/metrics/links", get(api_link_points))
        .route("/api/metrics/flows/{id}", get(api_flow_points))
        .route("/metrics", get(prometheus_metrics))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            nodes_read_the_status_only,
        ))
        .with_state(state.clone());
    // Nodes may reach this listener too (on 0.0.0.0, or on a head's host): they are bounded
    // here as on their own listeners.
    let listener = crate::bounded::BoundedListener::nodes_among(listener, state.node_nets);
    let app = app.into_make_service_with_connect_info::<crate::bounded::Peer>();
    tokio::spawn(async move {
        let served = match options.tls {
            Some(acceptor) => {
                let listener = crate::bounded::TlsListener::new(listener, acceptor);
                axum::serve(listener, app).await
            }
            None => axum::serve(listener, app).await,
        };
        if let Err(e) = served {
            tracing::error!("controller server stopped: {e}");
        }
    });
    ControllerHandle { tx, down: down_rx }
}

async fn run_coordinator(
    mut c: Coordinator,
    mut rx: mpsc::UnboundedReceiver<Input>,
    milestones: mpsc::UnboundedSender<Milestone>,
    down: watch::Sender<bool>,
    observers: Observers,
) {
    let mut agents: HashMap<AgentId, mpsc::UnboundedSender<ControllerToAgent>> = HashMap::new();
    let mut waiters: RouteWaiters = HashMap::new();
    let routes_since = Instant::now();
    loop {
        let timeout = c.poll_timeout();
        let input = tokio::select! {
            input = rx.recv() => match input {
                Some(i) => i,
                None => break,
            },
            () = sleep_until(timeout), if timeout.is_some() => {
                c.handle_timeout(Instant::now());
                deliver(&mut c, &agents, &milestones, &mut waiters, &observers);
                continue;
            }
        };
        let now = Instant::now();
        match input {
            Input::Agent { id, msg, tx } => {
                if let Some(tx) = tx {
                    agents.insert(id, tx);
                }
                if let Err(reason) = c.handle_agent_message(now, id, msg) {
                    tracing::error!("agent rejected: {reason}");
                }
            }
            Input::AgentGone(id) => {
                agents.remove(&id);
                c.handle_agent_gone(now, id);
            }
            Input::Router(router) => {
                tracing::info!(
                    "routes computed in {:.3} s",
                    now.duration_since(routes_since).as_secs_f64()
                );
                c.handle_router(now, *router);
            }
            Input::Status(reply) => {
                let _ = reply.send(c.status());
            }
            Input::Nodes(reply) => {
                let _ = reply.send(c.node_rows());
            }
            Input::Links(reply) => {
                let _ = reply.send(c.link_rows());
            }
            Input::SetLink {
                a,
                b,
                change,
                reply,
            } => {
                let result = c.handle_set_link(now, a, b, &change);
                if let Ok(params) = &result {
                    tracing::info!("link {a}-{b}: {}", params.describe());
                }
                let _ = reply.send(result);
            }
            Input::CheckFlow {
                src,
                dst,
                spec,
                reply,
            } => {
                let _ = reply.send(c.check_flow(src, dst, &spec));
            }
            Input::AddFlow {
                id,
                src,
                dst,
                spec,
                start,
                reply,
            } => {
                let result = c.handle_add_flow(now, id, src, dst, spec, start);
                if let Err(e) = &result {
                    tracing::warn!("flow {id} refused: {e}");
                }
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            Input::Flows(reply) => {
                let _ = reply.send(c.flow_rows());
            }
            Input::SetRoute { req, reply } => match c.handle_set_route(now, req) {
                Ok(change) if change.waits_for_flow => {
                    // A route for a flow that has not started is kept; nothing to wait for.
                    let _ = reply.send(Ok(RouteApplied {
                        version: change.version,
                        nodes: 0,
                        applied_ms: 0.0,
                        waits_for_flow: true,
                    }));
                }
                Ok(change) => {
                    let (done, rx) = oneshot::channel();
                    waiters
                        .entry(change.version)
                        .or_default()
                        .push((change, now, done));
                    tokio::spawn(async move {
                        if let Ok(applied) = rx.await {
                            let _ = reply.send(Ok(applied));
                        }
                    });
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Input::UnsetRoute { req, reply } => {
                let change = c.handle_unset_route(now, &req);
                waiters
                    .entry(change.version)
                    .or_default()
                    .push((change, now, reply));
            }
            Input::ClearRoutes { filter, reply } => {
                let change = c.handle_clear_routes(now, filter);
                waiters
                    .entry(change.version)
                    .or_default()
                    .push((change, now, reply));
            }
            Input::Routes(reply) => {
                let _ = reply.send(c.route_rows());
            }
            Input::View(reply) => {
                let (nodes, links) = c.view_codes();
                let _ = reply.send((c.status(), nodes, links));
            }
            Input::Link { a, b, reply } => {
                let _ = reply.send(
                    c.link_row(a, b)
                        .ok_or_else(|| format!("no link {a}-{b} in {}", c.topology().label)),
                );
            }
            Input::NodeRoutes { node, reply } => {
                let _ = reply.send(c.node_routes(node).ok_or_else(|| {
                    format!(
                        "node {node} has no routes (no such node, or no dataplane in {})",
                        c.topology().label
                    )
                }));
            }
            Input::RoutePath {
                src,
                dst,
                flow,
                reply,
            } => {
                let _ = reply.send(c.route_path(src, dst, flow));
            }
            Input::Group { op, reply } => {
                let result = c.handle_group_op(op);
                if let Err(e) = &result {
                    tracing::warn!("group change refused: {e}");
                }
                let _ = reply.send(result);
            }
            Input::Groups(reply) => {
                let _ = reply.send(c.group_rows());
            }
            // The first word counts: `up` asks again once the API has.
            Input::Down { .. } if *down.borrow() => {}
            Input::Down { keep } => {
                c.handle_shutdown();
                tracing::info!(
                    "teardown requested{}; telling {} agent(s)",
                    if keep { " (keeping the nodes)" } else { "" },
                    agents.len()
                );
                for tx in agents.values() {
                    let _ = tx.send(if keep {
                        ControllerToAgent::Park
                    } else {
                        ControllerToAgent::Shutdown
                    });
                }
                let _ = down.send(true);
            }
        }
        deliver(&mut c, &agents, &milestones, &mut waiters, &observers);
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}

/// Delivers what the coordinator decided.
fn deliver(
    c: &mut Coordinator,
    agents: &HashMap<AgentId, mpsc::UnboundedSender<ControllerToAgent>>,
    milestones: &mpsc::UnboundedSender<Milestone>,
    waiters: &mut RouteWaiters,
    observers: &Observers,
) {
    while let Some(out) = c.poll_output() {
        match out {
            // Every node session travels inside its agent's: the coordinator addresses a
            // node's messages to its agent once it has said hello.
            Output::Node(id, m) => {
                tracing::debug!("node {id} has no session to take {m:?}");
            }
            Output::Agent(id, m) => {
                if let Some(tx) = agents.get(&id) {
                    let _ = tx.send(m);
                }
            }
            Output::Milestone(m) => {
                log_milestone(&m);
                observers.prometheus.record(&m);
                observers
                    .loads
                    .lock()
                    .expect("no panics hold it")
                    .record(&m);
                if let Milestone::RoutesApplied { version, .. } = m {
                    let now = Instant::now();
                    for (change, since, reply) in waiters.remove(&version).unwrap_or_default() {
                        let _ = reply.send(RouteApplied {
                            version,
                            nodes: change.nodes.len(),
                            applied_ms: now.duration_since(since).as_secs_f64() * 1e3,
                            waits_for_flow: change.waits_for_flow,
                        });
                    }
                }
                let _ = milestones.send(m);
            }
        }
    }
}

/// The lifecycle at `RUST_LOG=info`, in the seeds' words where they have them.
fn log_milestone(m: &Milestone) {
    match m {
        Milestone::AgentRegistered { agent, host, nodes } => {
            tracing::info!("agent {agent} on {host} registered nodes {nodes}")
        }
        Milestone::PlumbingDone {
            seconds,
            mem_per_node_bytes,
            ..
        } => tracing::info!(
            "namespaces plumbed in {seconds:.3} s ({} KiB per node)",
            mem_per_node_bytes / 1024
        ),
        Milestone::AllConnected { nodes, since_first } => {
            tracing::info!(
                "All {nodes} nodes are now connected. Sending neighbours to dial and waiting for links."
            );
            tracing::info!(
                "All dataplane nodes have connected. It takes {:.2} seconds since the first node arrived.",
                since_first.as_secs_f64()
            );
        }
        Milestone::NodeFailed { node, reason } => tracing::warn!("node {node} failed: {reason}"),
        Milestone::TopologyReady { wiring } => tracing::info!(
            "All dataplane nodes have finished wiring their topologies. Broadcasting topology-ready signal. (wiring time {:.3} s)",
            wiring.as_secs_f64()
        ),
        Milestone::AgentGone { agent, lost_nodes } => {
            tracing::info!("agent {agent} disconnected ({lost_nodes} nodes lost)")
        }
        Milestone::AgentTornDown {
            agent,
            seconds,
            kept: false,
        } => tracing::info!("agent {agent} tore its nodes down in {seconds:.3} s"),
        Milestone::AgentTornDown {
            agent,
            seconds,
            kept: true,
        } => tracing::info!("agent {agent} kept its nodes for the next run ({seconds:.3} s)"),
        Milestone::LinkDown { a, b } => tracing::debug!("link {a}-{b} down"),
        Milestone::RoutesApplied {
            version,
            nodes,
            elapsed,
        } if *nodes > 0 => tracing::info!(
            "routes v{version} in place at {nodes} node(s) in {:.1} ms",
            elapsed.as_secs_f64() * 1e3
        ),
        _ => {}
    }
}

/// Asks the coordinator's task and answers with what it says, as JSON (503 when it is gone).
async fn ask<T: serde::Serialize>(
    s: &AppState,
    input: impl FnOnce(oneshot::Sender<T>) -> Input,
) -> Response {
    let (reply, rx) = oneshot::channel();
    let _ = s.tx.send(input(reply));
    match rx.await {
        Ok(answer) => Json(answer).into_response(),
        Err(_) => axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// The same for a request that may be refused: 400 with the reason.
async fn ask_checked<T: serde::Serialize, E: std::fmt::Display>(
    s: &AppState,
    input: impl FnOnce(oneshot::Sender<Result<T, E>>) -> Input,
) -> Response {
    let (reply, rx) = oneshot::channel();
    let _ = s.tx.send(input(reply));
    match rx.await {
        Ok(Ok(answer)) => Json(answer).into_response(),
        Ok(Err(e)) => (axum::http::StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        Err(_) => axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

async fn api_status(State(s): State<AppState>) -> Response {
    ask(&s, Input::Status).await
}

async fn api_nodes(State(s): State<AppState>) -> Response {
    ask(&s, Input::Nodes).await
}

async fn api_links(State(s): State<AppState>) -> Response {
    ask(&s, Input::Links).await
}

async fn api_set_link(
    State(s): State<AppState>,
    axum::extract::Path((a, b)): axum::extract::Path<(u32, u32)>,
    Json(change): Json<proto::LinkChange>,
) -> Response {
    ask_checked(&s, |reply| Input::SetLink {
        a,
        b,
        change,
        reply,
    })
    .await
}

async fn api_flows(State(s): State<AppState>) -> Response {
    ask(&s, Input::Flows).await
}

/// `POST /api/flows`: a flow as `[[flows]]` writes it; answers its id.
async fn api_add_flow(
    State(s): State<AppState>,
    Json(entry): Json<experiment::flows::FlowEntry>,
) -> Response {
    use axum::http::StatusCode;
    let (src, dst, spec) = (entry.src_node_id, entry.dst_node_id, entry.flow_spec);
    let start = entry.start.map_or(Duration::ZERO, |s| s.duration());
    let (store, run) = match run_store(&s) {
        Ok(r) => r,
        Err(refused) => return refused.into_response(),
    };
    let (reply, rx) = oneshot::channel();
    let _ = s.tx.send(Input::CheckFlow {
        src,
        dst,
        spec: spec.clone(),
        reply,
    });
    match rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
    let id = match store.insert_flow(*run, src, dst, &spec, start).await {
        Ok(id) => id,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let (reply, rx) = oneshot::channel();
    let _ = s.tx.send(Input::AddFlow {
        id,
        src,
        dst,
        spec,
        start,
        reply: Some(reply),
    });
    match rx.await {
        Ok(Ok(())) => Json(serde_json::json!({ "id": id })).into_response(),
        Ok(Err(e)) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

async fn api_routes(State(s): State<AppState>) -> Response {
    ask(&s, Input::Routes).await
}

/// How long a route change may wait for its nodes' confirmations.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(30);

/// `POST /api/routes`: pins a route, records it in the store; answers once applied.
async fn api_set_route(State(s): State<AppState>, Json(req): Json<RouteRequest>) -> Response {
    use axum::http::StatusCode;
    let (reply, rx) = oneshot::channel();
    let _ = s.tx.send(Input::SetRoute {
        req: req.clone(),
        reply,
    });
    match tokio::time::timeout(ROUTE_TIMEOUT, rx).await {
        Ok(Ok(Ok(applied))) => {
            if let Some((store, run)) = &s.run
                && let Err(e) = store.record_route(*run, &req).await
            {
                tracing::warn!("route {}->{} not recorded: {e}", req.src, req.dst);
            }
            Json(applied).into_response()
        }
        Ok(Ok(Err(e))) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        Ok(Err(_)) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Err(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            "not every node confirmed the new routes within 30 s: see `nextmini status` for failed nodes",
        )
            .into_response(),
    }
}

async fn api_clear_routes(State(s): State<AppState>, Json(filter): Json<RouteFilter>) -> Response {
    use axum::http::StatusCode;
    let (reply, rx) = oneshot::channel();
    let _ = s.tx.send(Input::ClearRoutes { filter, reply });
    match tokio::time::timeout(ROUTE_TIMEOUT, rx).await {
        Ok(Ok(applied)) => {
            if let Some((store, run)) = &s.run
                && let Err(e) = store.clear_routes(*run, &filter).await
            {
                tracing::warn!("cleared routes not recorded: {e}");
            }
            Json(applied).into_response()
        }
        Ok(Err(_)) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Err(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            "not every node confirmed the new routes within 30 s",
        )
            .into_response(),
    }
}

async fn api_groups(State(s): State<AppState>) -> Response {
    ask(&s, Input::Groups).await
}

#[derive(serde::Deserialize)]
struct NewGroup {
    source: u32,
    #[serde(default)]
    address: Option<std::net::Ipv4Addr>,
    #[serde(default)]
    members: Vec<u32>,
}

/// `POST /api/groups`: creates a group.
async fn api_create_group(State(s): State<AppState>, Json(g): Json<NewGroup>) -> Response {
    let op = crate::coordinator::GroupOp::Create {
        source: g.source,
        address: g.address,
        members: g.members,
    };
    ask_checked(&s, |reply| Input::Group { op, reply }).await
}

#[derive(serde::Deserialize)]
struct GroupBody {
    #[serde(default)]
    nodes: Vec<u32>,
    #[serde(default)]
    trees: Option<Vec<topology::multicast::TreeSpec>>,
}

/// `POST /api/groups/{addr}/{join|leave|trees|delete}`.
async fn api_change_group(
    State(s): State<AppState>,
    axum::extract::Path((addr, op)): axum::extract::Path<(String, String)>,
    body: Option<Json<GroupBody>>,
) -> Response {
    use crate::coordinator::GroupOp;
    use axum::http::StatusCode;
    let Ok(group) = addr.parse::<std::net::Ipv4Addr>() else {
        return (
            StatusCode::BAD_REQUEST,
            format!("{addr} is not a group address (see `nextmini group list`)"),
        )
            .into_response();
    };
    let body = body.map(|Json(b)| b).unwrap_or(GroupBody {
        nodes: Vec::new(),
        trees: None,
    });
    let op = match op.as_str() {
        "join" => GroupOp::Join {
            group,
            nodes: body.nodes,
        },
        "leave" => GroupOp::Leave {
            group,
            nodes: body.nodes,
        },
        "trees" => GroupOp::Trees {
            group,
            trees: body.trees,
        },
        "delete" => GroupOp::Delete { group },
        other => {
            return (
                StatusCode::NOT_FOUND,
                format!("no group change `{other}`: join, leave, trees or delete"),
            )
                .into_response();
        }
    };
    ask_checked(&s, |reply| Input::Group { op, reply }).await
}

#[derive(serde::Deserialize)]
struct PathQuery {
    src: u32,
    dst: u32,
    flow: Option<u64>,
}

async fn api_route_path(
    State(s): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<PathQuery>,
) -> Response {
    ask_checked(&s, |reply| Input::RoutePath {
        src: q.src,
        dst: q.dst,
        flow: q.flow,
        reply,
    })
    .await
}

#[derive(serde::Deserialize)]
struct SamplesQuery {
    #[serde(default)]
    since_ns: i64,
    src: Option<u32>,
    dst: Option<u32>,
}

/// The run's store and id, or [`NoStore`] for a controller that has none.
fn run_store(s: &AppState) -> Result<(&Store, &i64), NoStore> {
    s.run
        .as_ref()
        .map(|(store, run)| (store, run))
        .ok_or(NoStore)
}

/// The answer of a controller without a store to what needs one.
struct NoStore;

impl IntoResponse for NoStore {
    fn into_response(self) -> Response {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "this controller has no store",
        )
            .into_response()
    }
}

/// `GET /api/metrics/links`: the run's link samples from the store (one link, both
/// directions, with `src` and `dst`).
async fn api_link_points(
    State(s): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<SamplesQuery>,
) -> Response {
    let (store, run) = match run_store(&s) {
        Ok(r) => r,
        Err(refused) => return refused.into_response(),
    };
    let link = q.src.zip(q.dst);
    match store.link_points(*run, link, q.since_ns).await {
        Ok(points) => Json(points).into_response(),
        Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `GET /api/metrics/flows/{id}`: a generated flow's samples on every link it crossed.
async fn api_flow_points(
    State(s): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<u64>,
    axum::extract::Query(q): axum::extract::Query<SamplesQuery>,
) -> Response {
    let (store, run) = match run_store(&s) {
        Ok(r) => r,
        Err(refused) => return refused.into_response(),
    };
    match store.flow_points(*run, id, q.since_ns).await {
        Ok(points) => Json(points).into_response(),
        Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// A program inside a node that reaches the main listener (it listens on 0.0.0.0, or on a
/// head's host) is answered as on its own listener: the status and nothing else.
async fn nodes_read_the_status_only(
    State(s): State<AppState>,
    axum::extract::ConnectInfo(crate::bounded::Peer(peer)): axum::extract::ConnectInfo<
        crate::bounded::Peer,
    >,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let status =
        request.method() == axum::http::Method::GET && request.uri().path() == "/api/status";
    if status || !s.node_nets.contains(peer.ip()) {
        return next.run(request).await;
    }
    (
        axum::http::StatusCode::NOT_FOUND,
        "programs in nodes may read /api/status and nothing else here",
    )
        .into_response()
}

/// Requests that change the run carry the token, when there is one.
async fn require_token(
    State(s): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(token) = &s.token else {
        return next.run(request).await;
    };
    // Changes, and agents (which speak for nodes), carry the token; reading is open.
    let path = request.uri().path();
    if request.method() != axum::http::Method::POST && path != proto::AGENT_PATH {
        return next.run(request).await;
    }
    if carries_token(request.headers(), token) {
        next.run(request).await
    } else {
        (
            axum::http::StatusCode::UNAUTHORIZED,
            "this experiment takes changes with its token: nextmini reads it from the run's state directory (run.json); the page asks for it",
        )
            .into_response()
    }
}

/// Whether a request carries `token` (`Authorization: Bearer <token>`).
pub fn carries_token(headers: &axum::http::HeaderMap, token: &str) -> bool {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| same_secret(given.as_bytes(), token.as_bytes()))
}

/// Compares a given token with the run's without stopping at the first difference, so the
/// time taken says nothing about how much of a guess was right.
fn same_secret(given: &[u8], token: &[u8]) -> bool {
    given.len() == token.len()
        && given
            .iter()
            .zip(token)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn api_link(
    State(s): State<AppState>,
    axum::extract::Path((a, b)): axum::extract::Path<(u32, u32)>,
) -> Response {
    ask_checked(&s, |reply| Input::Link { a, b, reply }).await
}

async fn api_node_routes(
    State(s): State<AppState>,
    axum::extract::Path(node): axum::extract::Path<u32>,
) -> Response {
    ask_checked(&s, |reply| Input::NodeRoutes { node, reply }).await
}

async fn api_topology(State(s): State<AppState>) -> Response {
    let mut body = serde_json::to_value(&*s.topology).unwrap_or_default();
    body["token_required"] = serde_json::Value::Bool(s.token.is_some());
    Json(body).into_response()
}

/// How often the page is sent the run's state.
const VIEW_EVERY: Duration = Duration::from_secs(1);

/// `GET /api/events`: a frame now and about every second, until the page goes or the run
/// ends.
async fn api_events(State(s): State<AppState>) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let stream = futures_util::stream::unfold((s, true), |(s, first)| async move {
        if !first {
            tokio::time::sleep(VIEW_EVERY).await;
        }
        let (reply, rx) = oneshot::channel();
        s.tx.send(Input::View(reply)).ok()?;
        let (status, nodes, links) = rx.await.ok()?;
        let frame = {
            let loads = s.loads.lock().expect("no panics hold it");
            crate::view::Frame::new(
                status.phase,
                nodes,
                links,
                &s.topology.edges,
                &loads,
                status.flows,
            )
        };
        let event = Event::default().json_data(&frame).ok()?;
        Some((Ok::<_, std::convert::Infallible>(event), (s, false)))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn page_index() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
        crate::view::INDEX_HTML,
    )
        .into_response()
}

async fn page_js() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/javascript; charset=utf-8",
        )],
        crate::view::APP_JS,
    )
        .into_response()
}

async fn page_css() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "text/css; charset=utf-8")],
        crate::view::STYLE_CSS,
    )
        .into_response()
}

/// `GET /metrics`: the Prometheus text exposition.
async fn prometheus_metrics(State(s): State<AppState>) -> Response {
    let (reply, rx) = oneshot::channel();
    let _ = s.tx.send(Input::Status(reply));
    match rx.await {
        Ok(status) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            s.prometheus.encode(&status),
        )
            .into_response(),
        Err(_) => axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// `POST /api/down[?keep=1]`.
async fn api_down(
    State(s): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> Response {
    let keep = q.get("keep").is_some_and(|v| v == "1" || v == "true");
    let _ = s.tx.send(Input::Down { keep });
    (axum::http::StatusCode::ACCEPTED, "tearing down\n").into_response()
}

fn small(ws: WebSocketUpgrade) -> WebSocketUpgrade {
    ws.read_buffer_size(WS_BUFFER)
        .write_buffer_size(0)
        .max_message_size(1 << 20)
}

async fn agent_ws(ws: WebSocketUpgrade, State(s): State<AppState>) -> Response {
    let id = s.next_agent.fetch_add(1, Ordering::Relaxed);
    small(ws).on_upgrade(move |socket| agent_session(socket, id, s.tx, s.node_nets))
}

/// Whether an agent's underlay route is one to treat as nodes: not the loopback, not
/// "this network", not wider than a /8 (an agent without a token can't make every peer a
/// node).
fn plausible_underlay((net, len): (std::net::Ipv4Addr, u8)) -> bool {
    (8..=32).contains(&len) && !net.is_loopback() && net.octets()[0] != 0
}

async fn agent_session(
    socket: WebSocket,
    id: AgentId,
    tx: mpsc::UnboundedSender<Input>,
    node_nets: crate::bounded::NodeNets,
) {
    let (mut sink, mut stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<ControllerToAgent>();
    let mut out_tx = Some(out_tx);
    loop {
        tokio::select! {
            incoming = stream.next() => {
                let Some(Ok(Message::Binary(bytes))) = incoming else {
                    if matches!(incoming, Some(Ok(_))) { continue; }
                    break;
                };
                match proto::decode::<AgentToController>(&bytes) {
                    Ok(msg) => {
                        if let AgentToController::Register { underlay_route: Some(route), .. } = &msg
                            && plausible_underlay(*route)
                        {
                            node_nets.add(route.0, route.1);
                        }
                        let _ = tx.send(Input::Agent { id, msg, tx: out_tx.take() });
                    }
                    Err(e) => {
                        tracing::warn!("agent {id}: {e}");
                        break;
                    }
                }
            }
            outgoing = out_rx.recv() => {
                let Some(mut msg) = outgoing else { break };
                // The agent carries its nodes' sessions: a burst (welcomes, routes, a
                // readiness broadcast to thousands of nodes) goes out in one flush.
                let mut reject = false;
                let mut failed = false;
                loop {
                    reject |= matches!(msg, ControllerToAgent::Rejected { .. });
                    let bytes = proto::encode(&msg).expect("control messages encode");
                    if sink.feed(Message::Binary(bytes.into())).await.is_err() {
                        failed = true;
                        break;
                    }
                    match out_rx.try_recv() {
                        Ok(next) => msg = next,
                        Err(_) => break,
                    }
                }
                if failed || sink.flush().await.is_err() || reject {
                    break;
                }
            }
        }
    }
    let _ = tx.send(Input::AgentGone(id));
}

/// Binds the controller's port, with an error that says what to do when it is taken.
/// Listens at an address this host does not have yet (a bridge's, added by the agent's
/// plumbing later): the kernel's free bind.
pub fn bind_before_address(addr: SocketAddr) -> Result<TcpListener, BindError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let err = |source| BindError { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    if addr.is_ipv4() {
        socket.set_freebind_v4(true).map_err(err)?;
    }
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(65535).map_err(err)?;
    TcpListener::from_std(socket.into()).map_err(err)
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(|source| BindError { addr, source })?;
    socket
        .set_reuseaddr(true)
        .map_err(|source| BindError { addr, source })?;
    socket
        .bind(addr)
        .map_err(|source| BindError { addr, source })?;
    // Thousands of nodes connect at once: a backlog of the kernel's maximum.
    socket
        .listen(65535)
        .map_err(|source| BindError { addr, source })
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}{}", if source.kind() == std::io::ErrorKind::AddrInUse { "; another program (or another nextmini run) uses this port: choose another with --port" } else { "" })]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}
