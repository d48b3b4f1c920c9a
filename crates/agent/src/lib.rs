//! The host agent: registers with the controller, plumbs this host's nodes, runs every node as
//! a task on one tokio runtime, and tears everything down when told to, when the controller
//! goes away, or on a signal.
//!
//! One process for all of a host's nodes is the main lever for speed and memory: a node costs
//! a task, its TUN device and its links, not a process with its own runtime; its control
//! session travels inside the agent's (see [`line`]).

mod flows;
pub mod host;
mod line;
pub mod lossless;
mod node;
pub mod options;
mod relay;
pub mod session;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hostnet::tuning::{Sysctl, tune_host};
use hostnet::{Fabric, FabricSpec};
use proto::{AgentToController, ControllerToAgent};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

pub use node::NodeError;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The controller, as reached from this host's namespace.
    pub controller: SocketAddr,
    pub host: String,
    pub spec: FabricSpec,
    /// Where nodes accept TCP links, on their underlay address.
    pub link_port: u16,
    /// Fault injection: these nodes fail right after their welcome.
    pub fail_nodes: Vec<u32>,
    /// Nodes get TUN devices when the controller asks for a dataplane (the seeds'
    /// `enable_local_interface`); false keeps them without.
    pub tun_devices: bool,
    /// The run's token, when its controller asks agents for one (`NEXTMINI_TOKEN`).
    pub token: Option<String>,
    /// Take over the nodes a previous run of this layout kept (`down --keep`) instead of
    /// plumbing new ones.
    pub adopt: bool,
    /// The controller is reached over TLS, trusting this (`https://` controllers).
    pub tls: Option<tls::Trust>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "cannot reach the controller at {addr}: {message}; start it first (`nextmini controller`) or check --controller"
    )]
    Controller { addr: SocketAddr, message: String },
    #[error("the controller refused this agent: {0}")]
    Rejected(String),
    #[error("the controller closed the session before accepting the agent")]
    Closed,
    #[error(transparent)]
    Plumbing(#[from] hostnet::CreateError),
    #[error("{0}: run `nextmini cleanup --prefix {1}` and start again")]
    Adopt(hostnet::AdoptError, String),
    #[error(transparent)]
    Claim(#[from] hostnet::claim::ClaimError),
    #[error(transparent)]
    Addresses(#[from] hostnet::addresses::AddressError),
    #[error(transparent)]
    Tuning(#[from] hostnet::tuning::TuningError),
    #[error("agent: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot relay node sessions to the controller from {addr}: {source}")]
    Relay {
        addr: std::net::SocketAddrV4,
        source: std::io::Error,
    },
}

/// How the agent's run ended.
#[derive(Debug, Clone)]
pub struct AgentReport {
    pub nodes: u32,
    pub failed_nodes: u32,
    pub plumb_seconds: f64,
    pub teardown_seconds: f64,
}

async fn send(
    ws: &mut futures_util::stream::SplitSink<line::Ws, Message>,
    m: &AgentToController,
) -> bool {
    let bytes = proto::encode(m).expect("control messages encode");
    ws.send(Message::Binary(bytes.into())).await.is_ok()
}

/// Runs the agent until the controller says shut down, the controller goes away, or
/// `shutdown` resolves (a signal). Everything the agent created is removed before it returns.
pub async fn run(
    cfg: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<AgentReport, AgentError> {
    let plan = cfg.spec.plan.clone();
    let n = plan.n_nodes();
    // Before anything else: this run's prefix is ours while the agent lives: no other run plumbs over it, and
    // `cleanup` leaves it alone.
    let claim = hostnet::claim::PrefixClaim::take(plan.prefix())?;
    // Kept nodes hold this run's addresses already; nodes without an underlay take none.
    if !cfg.adopt && cfg.spec.underlay {
        hostnet::addresses::check_free(&plan)?;
    }
    let controller_err = |message: String| AgentError::Controller {
        addr: cfg.controller,
        message,
    };
    let stream = tokio::net::TcpStream::connect(cfg.controller)
        .await
        .map_err(|e| controller_err(e.to_string()))?;
    let ws = line::open_session(
        cfg.controller,
        proto::AGENT_PATH,
        stream,
        cfg.tls.as_ref(),
        cfg.token.as_deref(),
    )
    .await
    .map_err(|e| match e {
        line::OpenError::NoToken => controller_err(
            "it asks agents for the run's token: set NEXTMINI_TOKEN to the token in the run's run.json".into(),
        ),
        line::OpenError::Other(e) => controller_err(e),
    })?;
    let (mut sink, mut incoming) = ws.split();
    let register = AgentToController::Register {
        version: proto::VERSION,
        host: cfg.host.clone(),
        n_nodes: n,
        node_id_offset: plan.node_id_offset(),
        node_ids: if plan.is_block() {
            Vec::new()
        } else {
            plan.node_ids()
        },
        cpus: std::thread::available_parallelism().map_or(1, |c| c.get() as u32),
        mem_bytes: hostnet::procfs::mem_available(),
        underlay_route: cfg.spec.underlay.then(|| plan.underlay_route()),
    };
    if !send(&mut sink, &register).await {
        return Err(AgentError::Closed);
    }
    let (node_port, network) = loop {
        match incoming.next().await {
            Some(Ok(Message::Binary(b))) => match proto::decode::<ControllerToAgent>(&b) {
                Ok(ControllerToAgent::Accepted {
                    node_port,
                    tcp_links,
                    link_transport,
                    quic_congestion,
                    mut link_transports,
                }) => {
                    if link_transports.is_empty() && tcp_links {
                        link_transports.push(link_transport);
                    }
                    let network = dataplane::transport::NetworkLinks {
                        port: cfg.link_port,
                        transports: link_transports,
                        quic_congestion,
                    };
                    break (
                        node_port,
                        (!network.transports.is_empty()).then_some(network),
                    );
                }
                Ok(ControllerToAgent::Rejected { reason }) => {
                    return Err(AgentError::Rejected(reason));
                }
                Ok(ControllerToAgent::Shutdown | ControllerToAgent::Park) => {
                    return Err(AgentError::Closed);
                }
                Ok(ControllerToAgent::ToNode { .. }) => continue,
                Err(e) => return Err(controller_err(e.to_string())),
            },
            Some(Ok(_)) => continue,
            _ => return Err(AgentError::Closed),
        }
    };
    let (line, mut from_controller, writer) = line::Line::start(sink, incoming);
    // Some link goes over the network, so nodes take links on their underlay address.
    let tcp_links = network.is_some();
    if tcp_links && !cfg.spec.underlay {
        let reason =
            "links over the network travel on the underlay, and these nodes have none (--no-underlay)"
                .to_owned();
        line.send(AgentToController::Failed {
            reason: reason.clone(),
        });
        drop(line);
        let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
        return Err(AgentError::Rejected(reason));
    }
    // Programs in nodes ask their gateway for the controller's status; if the controller is
    // not listening there, relay for it.
    let mut _relays = Vec::new();
    for b in plan.bridges().filter(|_| cfg.spec.underlay) {
        match relay::start(b.addr, node_port, cfg.controller, cfg.tls.clone()) {
            Ok(Some(task)) => _relays.push(dataplane::AbortOnDrop(task.abort_handle())),
            Ok(None) => {}
            Err(e) => {
                return Err(AgentError::Relay {
                    addr: std::net::SocketAddrV4::new(b.addr, node_port),
                    source: e,
                });
            }
        }
    }

    // Plumbing, on blocking threads; progress flows back as messages. With mounts, each node
    // starts as soon as it exists (its bridge is already up), so wiring overlaps plumbing.
    let fds_per_link = if tcp_links { 2 } else { 0 };
    tune_host(
        &Sysctl::default(),
        u64::from(n),
        u64::from(n) * fds_per_link,
    )?;
    let (progress_tx, mut progress) = mpsc::unbounded_channel::<(u32, Option<hostnet::NodePlan>)>();
    let step = (n / 100).max(1);
    let mut spec = cfg.spec.clone();
    let mounted = spec.netns_dir.clone();
    // Mounted namespaces are reached through their mounts: one fd per node saved, which is what
    // lets tens of thousands of nodes and their TUN devices fit one process's fd limit.
    spec.keep_fds = mounted.is_none();
    spec.early_bridges = mounted.is_some();
    let factory = dataplane::sockets::SocketFactory::start()?;
    let shared = Arc::new(node::Shared {
        transports: dataplane::transport::Transports::new(factory.clone(), network)?,
        factory,
        line: line.clone(),
        keep_tuns: Default::default(),
        pacer: dataplane::pacer::Pacer::start()?,
    });
    let mut tasks = JoinSet::new();
    let start_node = |tasks: &mut JoinSet<_>, plan: &hostnet::NodePlan, netns| {
        let ctx = node::NodeCtx {
            node_id: plan.node_id,
            underlay_addr: plan.addr,
            netns,
            link_port: tcp_links.then_some(cfg.link_port),
            fail: cfg.fail_nodes.contains(&plan.node_id),
            tun_device: cfg.tun_devices,
        };
        let shared = shared.clone();
        tasks.spawn(async move {
            let id = ctx.node_id;
            (id, node::run_node(ctx, shared).await)
        });
    };
    // With links over TCP, a node starts once it exists *and* its bridge port forwards: a SYN
    // sent before the kernel has enabled the port is lost and costs a one-second retransmit.
    // Otherwise nothing of a node crosses the underlay and it starts as soon as it exists.
    let (port_tx, mut ports_up) = mpsc::unbounded_channel::<u32>();
    let overlap = mounted.is_some();
    let mut waiting = Waiting {
        for_ports: overlap && tcp_links && !cfg.adopt,
        ..Waiting::default()
    };
    if waiting.for_ports {
        let mut monitor = hostnet::monitor::LinkMonitor::open()?;
        let prefix = plan.prefix().clone();
        let mut seen = std::collections::HashSet::new();
        std::thread::Builder::new()
            .name("nm-ports".into())
            .spawn(move || {
                let _ = monitor.watch(|name, up| {
                    if up
                        && let Some(hostnet::plan::Owned::Veth(id)) = prefix.classify(name)
                        && seen.insert(id)
                        && port_tx.send(id).is_err()
                    {
                        return false;
                    }
                    (seen.len() as u32) < n
                });
            })?;
    }
    let before = hostnet::procfs::mem_available();
    let started = Instant::now();
    // A signal during plumbing can't stop the creating threads midway: plumbing finishes, then
    // everything is torn down (before, SIGINT or SIGTERM here killed the agent and left
    // namespaces behind).
    tokio::pin!(shutdown);
    let mut interrupted = false;
    let adopt = cfg.adopt;
    let mut plumbing = tokio::task::spawn_blocking(move || {
        if adopt {
            let prefix = spec.plan.prefix().to_string();
            return Fabric::adopt(&spec).map_err(|e| AgentError::Adopt(e, prefix));
        }
        Fabric::create(&spec, &|done, plan| {
            let report = done % step == 0 || done == spec.plan.n_nodes();
            if overlap || report {
                let _ = progress_tx.send((done, overlap.then(|| plan.clone())));
            }
        })
        .map_err(AgentError::from)
    });
    let fabric = loop {
        tokio::select! {
            Some((done, plan)) = progress.recv() => {
                if let (Some(plan), Some(dir)) = (plan, &mounted)
                    && let Some(plan) = waiting.plumbed(plan)
                {
                    let handle = hostnet::netns::NsHandle::Path(dir.join(&plan.netns_name));
                    start_node(&mut tasks, &plan, handle);
                }
                if done % step == 0 || done == n {
                    line.send(AgentToController::Plumbed { done });
                }
            }
            Some(id) = ports_up.recv() => {
                if let (Some(plan), Some(dir)) = (waiting.port_up(id), &mounted) {
                    let handle = hostnet::netns::NsHandle::Path(dir.join(&plan.netns_name));
                    start_node(&mut tasks, &plan, handle);
                }
            }
            () = &mut shutdown, if !interrupted => {
                tracing::info!("signal received while plumbing: tearing down once it is done");
                interrupted = true;
            }
            result = &mut plumbing => {
                match result.expect("plumbing thread panicked") {
                    Ok(f) => break f,
                    Err(e) => {
                        // Stop the nodes started so far; the fabric removed what it made.
                        tasks.abort_all();
                        line.send(AgentToController::Failed { reason: e.to_string() });
                        drop(line);
                        let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
                        return Err(e);
                    }
                }
            }
        }
    };
    // Nodes whose progress message was still queued when plumbing returned.
    while let Ok((_, plan)) = progress.try_recv() {
        if let (Some(plan), Some(dir)) = (plan, &mounted)
            && let Some(plan) = waiting.plumbed(plan)
        {
            let handle = hostnet::netns::NsHandle::Path(dir.join(&plan.netns_name));
            start_node(&mut tasks, &plan, handle);
        }
    }
    let plumb_seconds = started.elapsed().as_secs_f64();
    line.send(AgentToController::Plumbed { done: n });
    line.send(AgentToController::PlumbingDone {
        seconds: plumb_seconds,
        mem_available_before: before,
        mem_available_after: hostnet::procfs::mem_available(),
    });
    if (mounted.is_none() || adopt) && !interrupted {
        for node in fabric.nodes() {
            start_node(&mut tasks, &node.plan, node.netns.handle());
        }
    }

    let mut failed = 0;
    let mut park = false;
    if !interrupted {
        loop {
            tokio::select! {
                _ = &mut shutdown => {
                    tracing::info!("signal received: tearing down");
                    break;
                }
                msg = from_controller.recv() => match msg {
                    Some(ControllerToAgent::Shutdown) => {
                        tracing::info!("the controller asked for teardown");
                        break;
                    }
                    Some(ControllerToAgent::Park) => {
                        tracing::info!("the controller asked to keep the nodes for the next run");
                        park = true;
                        break;
                    }
                    Some(_) => {}
                    None => {
                        tracing::warn!("the controller went away: tearing down");
                        break;
                    }
                },
                Some(id) = ports_up.recv(), if !waiting.is_empty() => {
                    if let (Some(plan), Some(dir)) = (waiting.port_up(id), &mounted) {
                        let handle = hostnet::netns::NsHandle::Path(dir.join(&plan.netns_name));
                        start_node(&mut tasks, &plan, handle);
                    }
                }
                Some(done) = tasks.join_next() => {
                    if let Ok((node, Err(e))) = done {
                        failed += 1;
                        tracing::warn!("{e}");
                        line.send(AgentToController::NodeFailed { node, reason: e.to_string() });
                    }
                }
            }
        }
    }

    line.tearing_down();
    let (teardown_seconds, kept) = if park {
        // The nodes stop; their TUN devices are made persistent as they close, so nothing is
        // unregistered, and everything stays mounted for the next run to take over.
        let started = Instant::now();
        shared
            .keep_tuns
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        drop(shared);
        let (seconds, kept) = match fabric.keep() {
            // What is kept is for the next run to claim.
            Ok(()) => (started.elapsed().as_secs_f64(), true),
            Err(fabric) => {
                tracing::warn!(
                    "these nodes can't be kept (unmounted namespaces or tunnels): tearing down"
                );
                (teardown(*fabric).await?, false)
            }
        };
        drop(claim);
        line.send(AgentToController::TornDown { seconds, kept });
        (seconds, kept)
    } else {
        // Out of view first: the veths go in one batch, the namespaces' mounts and the bridges
        // after them. The nodes' TUN devices live on in the unnamed namespaces until their
        // descriptors close, which is slow (see `dataplane`'s `Tun`) and needn't hold anyone
        // up: they close after the controller heard, many at once on the blocking pool (the
        // runtime waits for those closes before the process exits).
        let seconds = teardown(fabric).await?;
        // Nothing of the prefix is in view: another run may take it at once.
        drop(claim);
        line.send(AgentToController::TornDown {
            seconds,
            kept: false,
        });
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        drop(shared);
        (seconds, false)
    };
    if kept {
        tracing::info!("{n} nodes kept for the next run of this layout");
    }
    // The writer sends what is queued and closes the session once the last sender is gone.
    drop(line);
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
    Ok(AgentReport {
        nodes: n,
        failed_nodes: failed,
        plumb_seconds,
        teardown_seconds,
    })
}

/// Removes the fabric on a blocking thread; its seconds.
async fn teardown(fabric: Fabric) -> Result<f64, AgentError> {
    let stats = tokio::task::spawn_blocking(move || fabric.teardown())
        .await
        .expect("teardown thread panicked")
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(stats.total.as_secs_f64())
}

/// Nodes plumbed but whose port is not up yet, and ports up whose node is not plumbed yet.
#[derive(Default)]
struct Waiting {
    /// Whether a node waits for its port at all.
    for_ports: bool,
    plumbed: std::collections::HashMap<u32, hostnet::NodePlan>,
    up: std::collections::HashSet<u32>,
}

impl Waiting {
    /// A node exists; returns it if it may start (its port is up, or it needn't wait).
    fn plumbed(&mut self, plan: hostnet::NodePlan) -> Option<hostnet::NodePlan> {
        if !self.for_ports || self.up.remove(&plan.node_id) {
            Some(plan)
        } else {
            self.plumbed.insert(plan.node_id, plan);
            None
        }
    }

    /// A node's port is up; returns the node if it exists already.
    fn port_up(&mut self, id: u32) -> Option<hostnet::NodePlan> {
        match self.plumbed.remove(&id) {
            Some(plan) => Some(plan),
            None => {
                self.up.insert(id);
                None
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.plumbed.is_empty()
    }
}
