//! A whole experiment on this host (`nextmini up`): the controller in this process, the host's
//! nodes in an agent process, the run recorded in the store, a summary when the topology is
//! ready, and teardown.
//!
//! The agent is a separate process so that each holds its own end of the thousands of control
//! connections within one process's fd limit.
//!
//! Calling order: [`LocalRun::start`], then [`LocalRun::wait_ready`] (progress arrives as
//! [`Progress`]), then [`LocalRun::hold`] to keep it running, and [`LocalRun::teardown`]; an
//! interruption before ready tears down inside `wait_ready`.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, watch};

use hostnet::procfs::MemInfo;

use crate::coordinator::Milestone;
use crate::run::{RunFile, Started};
use crate::server::ControllerHandle;
use crate::store::{RunFigures, RunState, Store, StoreWriter};

/// The prefix of everything a run creates on the host when none is given.
pub const DEFAULT_PREFIX: &str = "nm";

/// How to run an experiment on this host.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub port: Option<u16>,
    pub prefix: Option<String>,
    pub base: Option<Ipv4Addr>,
    pub no_mount: bool,
    /// Nodes without an underlay (`up --no-underlay`).
    pub no_underlay: bool,
    /// Creator threads for plumbing.
    pub threads: usize,
    /// Store URL (default: the experiment's `[db]`, else SQLite in the state directory).
    pub db: Option<String>,
    pub state_dir: PathBuf,
    /// Fault injection: these nodes fail right after connecting.
    pub fail_nodes: Vec<u32>,
    /// The `nextmini` binary, run as `nextmini agent …` for the nodes.
    pub agent_program: PathBuf,
    /// Changes through the API (and the page) need a token, kept in the run file.
    pub token: bool,
    /// Where the API, the page and the agent's session listen (default: loopback only). Any
    /// other address makes a token required, as with `token`.
    pub listen: Option<std::net::IpAddr>,
}

/// Why a run could not start, or ended badly.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error(
        "links over the network (protocol = \"tcp\" or \"udp\") travel on the underlay: drop --no-underlay, or the file's protocol"
    )]
    TcpWithoutUnderlay,
    #[error("cannot create the state directory {}: {source}", dir.display())]
    StateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "an experiment is already running from {} (pid {pid}, prefix {prefix}): stop it with `nextmini down`, or use another --state-dir",
        dir.display()
    )]
    AlreadyRunning {
        dir: PathBuf,
        pid: u32,
        prefix: String,
    },
    #[error(transparent)]
    Bind(#[from] crate::server::BindError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Prefix(#[from] hostnet::plan::PlanError),
    #[error(transparent)]
    Kept(#[from] crate::run::KeptNodesError),
    #[error("cannot start the agent ({program}): {source}", program = program.display())]
    Agent {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The agent's own last error line, or how it exited.
    #[error("{0}")]
    AgentFailed(String),
    #[error("the controller stopped")]
    ControllerStopped,
    #[error(
        "underlay {first}..{last} overlaps the overlay ({overlay} onwards, the nodes' own addresses): choose another --base"
    )]
    OverlayOverlap {
        first: Ipv4Addr,
        last: Ipv4Addr,
        overlay: Ipv4Addr,
    },
    #[error("--fail-node {id}: the topology has nodes 1..={n}")]
    FailNode { id: u32, n: u32 },
    #[error(
        "all {0} nodes failed, so the topology can never be ready: see the agent's log above (RUST_LOG=info) for why"
    )]
    AllFailed(u32),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the agent {0}; run `nextmini cleanup --prefix {1}`")]
    Teardown(String, String),
}

/// Progress while wiring, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Plumbed(u32),
    PlumbingDone,
    Connected(u32),
    Ready(u32),
}

/// How wiring ended.
#[derive(Debug)]
pub enum Wired {
    Ready(Box<Summary>),
    /// Interrupted before it was ready; torn down.
    Interrupted,
}

/// The summary, as printed and as `--json` writes it.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub name: String,
    pub topology: String,
    pub nodes: u32,
    pub links: usize,
    pub links_up: u32,
    pub failed_nodes: u32,
    pub plumb_seconds: f64,
    pub wiring_seconds: f64,
    pub total_seconds: f64,
    pub mem_before_bytes: u64,
    pub mem_after_bytes: u64,
    pub mem_per_node_bytes: u64,
    /// Kernel objects (slab) per node: steadier than MemAvailable, which also moves with page
    /// cache and memory the kernel is still freeing from an earlier run.
    pub slab_per_node_bytes: u64,
    /// Kernel slab plus both processes' PSS, per node.
    pub total_per_node_bytes: u64,
    pub agent_pss_bytes: u64,
    pub controller_pss_bytes: u64,
    pub store: String,
}

fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
}

impl Summary {
    /// The seeds' wiring table, with nextmini's memory columns.
    pub fn table(&self) -> String {
        let per_node_kib = self.mem_per_node_bytes as f64 / 1024.0;
        format!(
            "| Topology | Nodes | Links | Plumbing | Wiring Time | Memory Before | Memory After | Per Node | Slab + PSS per node | Agent PSS | Controller PSS |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n\
             | {} | {} | {} | {:.2}s | {:.2}s | {} | {} | {:.0} KiB | {:.0} KiB | {:.1} MiB | {:.1} MiB |\n",
            self.topology,
            self.nodes,
            self.links,
            self.plumb_seconds,
            self.wiring_seconds,
            gib(self.mem_before_bytes),
            gib(self.mem_after_bytes),
            per_node_kib,
            self.total_per_node_bytes as f64 / 1024.0,
            self.agent_pss_bytes as f64 / (1u64 << 20) as f64,
            self.controller_pss_bytes as f64 / (1u64 << 20) as f64,
        )
    }
}

/// Proportional set size of a process, from `/proc/<pid>/smaps_rollup`.
pub fn pss_bytes(pid: u32) -> u64 {
    hostnet::procfs::kib_field(format!("/proc/{pid}/smaps_rollup"), "Pss")
}

/// A running experiment on this host.
pub struct LocalRun {
    exp: experiment::Experiment,
    opts: LocalOptions,
    started_at: Instant,
    port: u16,
    prefix: String,
    /// The underlay's first subnet.
    base: std::net::Ipv4Addr,
    token: Option<String>,
    no_mount: bool,
    handle: ControllerHandle,
    store: Store,
    run_id: i64,
    /// Taken when the run's rows are all written.
    writer: Option<StoreWriter>,
    milestones: mpsc::UnboundedReceiver<Milestone>,
    agent: AgentProcess,
    agent_pid: u32,
    agent_error: watch::Receiver<String>,
    mem_before: MemInfo,
    figures: RunFigures,
    /// Flows not finished or failed yet (from the flows' milestones).
    unfinished_flows: std::collections::HashSet<u64>,
    /// Whether any flow was seen: `until flows done` waits for one.
    any_flow: bool,
    /// The state directory, held while the run lives.
    _state_claim: hostnet::claim::Claim,
    /// This run's layout: recorded if the run ends keeping its nodes.
    layout: crate::run::KeptNodes,
}

/// How long [`LocalRun::hold`] keeps the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Until `nextmini down`, the stop future or the agent's end.
    UntilDown,
    /// Also ends once every flow has finished or failed.
    UntilFlowsDone,
}

impl LocalRun {
    /// Starts the controller and the agent. Errors before anything was created.
    pub async fn start(
        exp: experiment::Experiment,
        opts: LocalOptions,
    ) -> Result<LocalRun, UpError> {
        let started_at = Instant::now();
        let n = exp.topology.n_nodes();
        let dir = &opts.state_dir;
        std::fs::create_dir_all(dir).map_err(|source| UpError::StateDir {
            dir: dir.clone(),
            source,
        })?;
        // The state directory is this run's while it lives (a lock the kernel drops with the
        // process, so a killed run's directory is free again and a reused pid means nothing).
        let state_claim = match hostnet::claim::Claim::take(&RunFile::lock_path(dir)) {
            Ok(Ok(claim)) => claim,
            Ok(Err(pid)) => {
                return Err(UpError::AlreadyRunning {
                    dir: dir.clone(),
                    pid,
                    prefix: RunFile::load(dir).map_or_else(|_| "?".into(), |r| r.prefix),
                });
            }
            Err(source) => {
                return Err(UpError::StateDir {
                    dir: dir.clone(),
                    source,
                });
            }
        };
        // A run file left by a killed run is stale.
        let _ = std::fs::remove_file(RunFile::path(dir));
        if let Some(&id) = opts.fail_nodes.iter().find(|&&id| id == 0 || id > n) {
            return Err(UpError::FailNode { id, n });
        }
        let port = opts.port.unwrap_or(exp.port);
        let listen = opts
            .listen
            .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
        let listener = crate::server::bind(SocketAddr::new(listen, port)).await?;
        let port = listener.local_addr()?.port();
        let db_url = opts
            .db
            .clone()
            .or(exp.db_url.clone())
            .unwrap_or_else(|| crate::run::default_db_url(dir));
        let prefix = opts
            .prefix
            .clone()
            .or(exp.prefix.clone())
            .unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
        let base = opts
            .base
            .or(exp.underlay_base)
            .unwrap_or(hostnet::plan::DEFAULT_BASE);
        let no_mount = opts.no_mount || exp.no_mount;
        let underlay = !opts.no_underlay;
        if !underlay && exp.force_network {
            return Err(UpError::TcpWithoutUnderlay);
        }
        // Reachable from elsewhere, it takes changes and agents only with the token.
        let token = (opts.token || !listen.is_loopback())
            .then(crate::run::new_token)
            .transpose()?;
        // Check the layout here, so a bad prefix or base is reported before anything starts.
        let plan = hostnet::UnderlayPlan::new(hostnet::Prefix::new(&prefix)?, base, n, 0)?;
        // Nodes would take overlay addresses as their underlay ones: routing inside a node
        // could not tell them apart.
        let (first, last) = plan.range();
        let overlay_first = u32::from(exp.overlay_base);
        let overlay_last = overlay_first.saturating_add(n + 1);
        if u32::from(first) <= overlay_last && overlay_first <= u32::from(last) {
            return Err(UpError::OverlayOverlap {
                first,
                last,
                overlay: exp.overlay_base,
            });
        }
        // This run's layout, as `down --keep` records it. Nodes the previous run here kept
        // are taken over when their layout is this one, removed first otherwise.
        let layout = crate::run::KeptNodes {
            prefix: prefix.clone(),
            underlay_base: base,
            underlay,
            nodes: n,
            netns_dir: std::path::PathBuf::from(hostnet::netns::DEFAULT_NETNS_DIR),
        };
        let adopt = match crate::run::KeptNodes::load(dir) {
            Some(kept) if !kept.present() => {
                crate::run::KeptNodes::forget(dir);
                false
            }
            Some(kept) if kept == layout && !no_mount => {
                // On stdout: `up --detach` passes it on.
                println!("taking over the {n} nodes the previous run here kept");
                crate::run::KeptNodes::forget(dir);
                true
            }
            Some(kept) => {
                println!(
                    "removing the {} nodes of prefix {} the previous run here kept (this run's layout differs)",
                    kept.nodes, kept.prefix
                );
                kept.remove(dir)?;
                false
            }
            None => false,
        };
        // Programs in nodes reach the controller at their bridge's address (which the agent
        // adds later), where it answers the status only. Listening on every address covers the bridges
        // too: there, changes and agents need the token.
        let mut node_listeners = Vec::new();
        for bridge in plan
            .bridges()
            .filter(|_| underlay && !listen.is_unspecified())
        {
            let addr = SocketAddr::from((bridge.addr, port));
            node_listeners.push(crate::server::bind_before_address(addr)?);
        }
        let Started {
            handle,
            store,
            run_id,
            writer,
            milestones,
        } = crate::run::start(
            &exp,
            listener,
            &db_url,
            false,
            crate::run::Access {
                token: token.clone(),
                node_listeners,
                tls: None,
            },
        )
        .await?;

        let mem_before = MemInfo::read();
        let mut agent = tokio::process::Command::new(&opts.agent_program);
        agent
            .arg("agent")
            .arg("--controller")
            .arg(format!("127.0.0.1:{port}"))
            .args(["--n-nodes", &n.to_string()])
            .args(["--prefix", &prefix])
            .args(["--base", &base.to_string()])
            .args(["--threads", &opts.threads.to_string()])
            .args(["--link-port", &exp.link_port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(token) = &token {
            agent.env("NEXTMINI_TOKEN", token);
        }
        if no_mount {
            agent.arg("--no-mount");
        }
        if adopt {
            agent.arg("--adopt");
        }
        if !underlay {
            agent.arg("--no-underlay");
        }
        for id in &opts.fail_nodes {
            agent.args(["--fail-node", &id.to_string()]);
        }
        let mut agent = agent.spawn().map_err(|source| UpError::Agent {
            program: opts.agent_program.clone(),
            source,
        })?;
        let agent_pid = agent.id().unwrap_or(0);
        // The agent's log lines pass through; its last error line explains an early exit.
        let (agent_error_tx, agent_error) = watch::channel(String::new());
        let agent_stderr = agent.stderr.take().expect("piped");
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(agent_stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(e) = line.strip_prefix("error: ") {
                    let _ = agent_error_tx.send(e.to_owned());
                } else {
                    eprintln!("{line}");
                }
            }
        });
        Ok(LocalRun {
            exp,
            opts,
            started_at,
            port,
            prefix,
            base,
            token,
            no_mount,
            handle,
            store,
            run_id,
            writer: Some(writer),
            milestones,
            agent: AgentProcess(Some(agent)),
            agent_pid,
            agent_error,
            mem_before,
            figures: RunFigures::default(),
            unfinished_flows: Default::default(),
            any_flow: false,
            _state_claim: state_claim,
            layout,
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn name(&self) -> String {
        self.exp.name.clone()
    }

    /// Whether changes and agents must carry the run's token.
    pub fn token_required(&self) -> bool {
        self.token.is_some()
    }

    /// The controller's API address.
    pub fn api(&self) -> String {
        let host = match self.opts.listen {
            Some(ip) if !ip.is_unspecified() => ip,
            _ => std::net::IpAddr::from([127, 0, 0, 1]),
        };
        format!("http://{}", SocketAddr::new(host, self.port))
    }

    /// Waits until the topology is ready (or `interrupt` resolves: then it tears down).
    pub async fn wait_ready(
        &mut self,
        mut progress: impl FnMut(Progress),
        interrupt: impl Future<Output = ()>,
    ) -> Result<Wired, UpError> {
        let n = self.exp.topology.n_nodes();
        let mut interrupt = std::pin::pin!(interrupt);
        let wiring = loop {
            tokio::select! {
                m = self.milestones.recv() => {
                    let Some(m) = m else { return Err(UpError::ControllerStopped) };
                    self.record(&m);
                    match &m {
                        Milestone::Plumbed { done } => progress(Progress::Plumbed(*done)),
                        Milestone::PlumbingDone { seconds, .. } => {
                            progress(Progress::PlumbingDone);
                            self.figures.plumb_seconds = Some(*seconds);
                        }
                        Milestone::NodeConnected { connected, .. } => progress(Progress::Connected(*connected)),
                        Milestone::NodeReady { ready, .. } => progress(Progress::Ready(*ready)),
                        Milestone::NodeFailed { .. } => {
                            self.figures.failed_nodes += 1;
                            // Nothing left that could become ready.
                            if self.figures.failed_nodes >= n {
                                self.handle.down();
                                let _ = self.agent.wait().await;
                                self.finish(RunState::Failed).await;
                                return Err(UpError::AllFailed(n));
                            }
                        }
                        Milestone::TopologyReady { wiring } => break *wiring,
                        _ => {}
                    }
                }
                status = self.agent.wait() => {
                    let reason = self.agent_error.borrow_and_update().clone();
                    self.finish(RunState::Failed).await;
                    return Err(UpError::AgentFailed(if reason.is_empty() {
                        format!("the agent exited before the topology was ready ({})", status?)
                    } else {
                        reason
                    }));
                }
                () = &mut interrupt => {
                    self.handle.down();
                    let _ = self.agent.wait().await;
                    self.finish(RunState::Interrupted).await;
                    return Ok(Wired::Interrupted);
                }
            }
        };
        let mem_after = MemInfo::read();
        // The agent's plumbing report travels on its own connection and may come after the
        // last node's; the summary needs it.
        while self.figures.plumb_seconds.is_none() {
            match self.milestones.recv().await {
                Some(Milestone::PlumbingDone { seconds, .. }) => {
                    self.figures.plumb_seconds = Some(seconds)
                }
                Some(m) => self.record(&m),
                None => break,
            }
        }
        let status = self
            .handle
            .status()
            .await
            .ok_or(UpError::ControllerStopped)?;
        let before = self.mem_before;
        let mem_per_node = before.available.saturating_sub(mem_after.available) / u64::from(n);
        let slab_per_node = mem_after.slab.saturating_sub(before.slab) / u64::from(n);
        let agent_pss = pss_bytes(self.agent_pid);
        let controller_pss = pss_bytes(std::process::id());
        self.figures.wiring_seconds = Some(wiring.as_secs_f64());
        self.figures.mem_per_node_bytes = Some(mem_per_node);
        self.figures.failed_nodes = status.failed;
        self.store
            .finish_run(self.run_id, RunState::Ready, &self.figures)
            .await?;
        Ok(Wired::Ready(Box::new(Summary {
            name: self.exp.name.clone(),
            topology: self.exp.topology.label.clone(),
            nodes: n,
            links: self.exp.topology.n_links(),
            links_up: status.links_up,
            failed_nodes: status.failed,
            plumb_seconds: self.figures.plumb_seconds.unwrap_or(0.0),
            wiring_seconds: wiring.as_secs_f64(),
            total_seconds: self.started_at.elapsed().as_secs_f64(),
            mem_before_bytes: before.available,
            mem_after_bytes: mem_after.available,
            mem_per_node_bytes: mem_per_node,
            slab_per_node_bytes: slab_per_node,
            total_per_node_bytes: slab_per_node + (agent_pss + controller_pss) / u64::from(n),
            agent_pss_bytes: agent_pss,
            controller_pss_bytes: controller_pss,
            store: self.store.url().to_owned(),
        })))
    }

    /// Writes the run file, through which `down`, `status`, `exec` and the rest find the run
    /// (before `up --detach` says it is ready, so that they find it at once).
    pub fn write_run_file(&self) -> Result<(), UpError> {
        let run_file = RunFile {
            api: self.api(),
            prefix: self.prefix.clone(),
            netns_dir: if self.no_mount {
                PathBuf::new()
            } else {
                PathBuf::from(hostnet::netns::DEFAULT_NETNS_DIR)
            },
            pid: std::process::id(),
            name: self.exp.name.clone(),
            // Without an underlay, programs in the nodes have no way to the controller.
            underlay_base: (!self.opts.no_underlay).then_some(self.base),
            overlay_base: Some(self.exp.overlay_base),
            token: self.token.clone(),
        };
        run_file.save(&self.opts.state_dir)?;
        Ok(())
    }

    /// Keeps the run until `stop`, `nextmini down`, or the agent's end (with its run file,
    /// written again: the same content, replaced whole).
    pub async fn hold(
        &mut self,
        stop: impl Future<Output = ()>,
        hold: Hold,
    ) -> Result<(), UpError> {
        self.write_run_file()?;
        let mut waiting = self.handle.clone();
        let mut stop = std::pin::pin!(stop);
        // Once every flow is done, the nodes' next reports still carry their last bytes.
        let mut last_reports: Option<tokio::time::Instant> = None;
        loop {
            if hold == Hold::UntilFlowsDone
                && last_reports.is_none()
                && self.any_flow
                && self.unfinished_flows.is_empty()
            {
                eprintln!("every flow has finished; tearing down after the last reports");
                last_reports = Some(
                    tokio::time::Instant::now()
                        + self.exp.metrics_interval
                        + Duration::from_millis(200),
                );
            }
            let until_reported = async {
                match last_reports {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = until_reported => break,
                m = self.milestones.recv() => match m {
                    Some(m) => self.record(&m),
                    None => break,
                },
                () = &mut stop => {
                    eprintln!("tearing down");
                    break;
                }
                () = waiting.wait_down() => break,
                status = self.agent.wait() => {
                    eprintln!("the agent exited ({}); tearing down", status?);
                    break;
                }
            }
        }
        Ok(())
    }

    /// Every flow and what is known of it.
    pub async fn flows(&self) -> Vec<crate::flows::FlowRow> {
        self.handle.flows().await.unwrap_or_default()
    }

    /// Tears the run down and waits for the agent to remove everything from view.
    pub async fn teardown(mut self) -> Result<(), UpError> {
        self.handle.down();
        let teardown = Instant::now();
        let agent = &mut self.agent;
        let milestones = &mut self.milestones;
        // Whether the agent kept its nodes, once it says it has removed them from view.
        let out_of_view = async move {
            loop {
                if let Milestone::AgentTornDown { kept, .. } = milestones.recv().await? {
                    return Some(kept);
                }
            }
        };
        let end = tokio::time::timeout(Duration::from_secs(300), async {
            tokio::select! {
                status = agent.wait() => AgentEnd::Exited(status),
                Some(kept) = out_of_view => AgentEnd::OutOfView { kept },
            }
        })
        .await;
        if let Ok(AgentEnd::OutOfView { kept }) = end {
            // Nothing of the run is in view any more. The agent goes on closing its nodes'
            // TUN devices (the kernel unregisters each one, some milliseconds apiece); nobody
            // needs to wait for that, so it is let go rather than killed (a kill would leave
            // the same closing to its exit, on one thread).
            self.agent.let_go();
            if kept && let Err(e) = self.layout.save(&self.opts.state_dir) {
                tracing::warn!("could not record the kept nodes: {e}");
            }
        }
        let _ = std::fs::remove_file(RunFile::path(&self.opts.state_dir));
        let prefix = self.prefix.clone();
        self.finish(RunState::Down).await;
        self.store.clone().close().await;
        match end {
            Ok(AgentEnd::Exited(Ok(s))) if !s.success() => Err(UpError::Teardown(
                format!("failed while tearing down ({s})"),
                prefix,
            )),
            Ok(AgentEnd::OutOfView { .. } | AgentEnd::Exited(Ok(_))) => {
                tracing::info!("torn down in {:.3} s", teardown.elapsed().as_secs_f64());
                Ok(())
            }
            _ => Err(UpError::Teardown(
                "did not finish tearing down".into(),
                prefix,
            )),
        }
    }

    fn record(&mut self, m: &Milestone) {
        if let Milestone::Flow(f) = m {
            use crate::flows::FlowState;
            self.any_flow = true;
            if matches!(f.state, FlowState::Finished | FlowState::Failed) {
                self.unfinished_flows.remove(&f.id);
            } else {
                self.unfinished_flows.insert(f.id);
            }
        }
        if let Some(w) = &self.writer {
            w.record(m);
        }
    }

    /// Writes what is queued and the run's final state.
    async fn finish(&mut self, state: RunState) {
        if let Some(w) = self.writer.take() {
            let _ = w.close().await;
        }
        let _ = self
            .store
            .finish_run(self.run_id, state, &self.figures)
            .await;
    }
}

/// How the agent's part of a teardown ended.
enum AgentEnd {
    /// The process ended (before saying it had removed everything from view).
    Exited(std::io::Result<std::process::ExitStatus>),
    /// It said nothing of the run is in view any more (and whether it kept the nodes).
    OutOfView { kept: bool },
}

/// The agent's process: killed if `up` ends before it (its child is made `kill_on_drop`),
/// unless let go once it has removed everything from view.
struct AgentProcess(Option<tokio::process::Child>);

impl AgentProcess {
    async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match &mut self.0 {
            Some(child) => child.wait().await,
            None => std::future::pending().await,
        }
    }

    /// Leaves the process running after `up` ends (it finishes on its own).
    fn let_go(&mut self) {
        if let Some(child) = self.0.take() {
            // Dropping the handle would kill it.
            std::mem::forget(child);
        }
    }
}
