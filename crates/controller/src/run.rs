//! Starting a controller for an experiment: the store opened and the run recorded in it, the
//! coordinator made from the experiment, the server listening; and the run file through which
//! `down`, `status` and `exec` find a running experiment.

use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use crate::coordinator::{Coordinator, Milestone, Settings};
use crate::server::ControllerHandle;
use crate::store::{RunStart, Store, StoreError, StoreWriter};

/// The state directory when none is given: the store and the run file live here.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/nextmini";

/// The embedded store: SQLite in the state directory.
pub fn default_db_url(state_dir: &Path) -> String {
    format!("sqlite://{}", state_dir.join("nextmini.db").display())
}

impl Settings {
    /// The coordinator's settings for an experiment whose nodes reach it on `node_port`;
    /// `multi_host` when agents on several hosts may register (links between them are TCP).
    pub fn for_experiment(exp: &experiment::Experiment, node_port: u16, multi_host: bool) -> Self {
        Settings {
            overlay_base: exp.overlay_base,
            overlay_prefix_len: exp.overlay_prefix_len,
            force_network: exp.force_network,
            network_transport: exp.network_transport,
            quic_congestion: exp.quic_congestion,
            link_protocols: exp.link_protocols.iter().copied().collect(),
            lossless: exp.lossless,
            node_port,
            multi_host,
            dataplane: exp.dataplane,
            mtu: exp.mtu,
            links: exp.links.clone(),
            metric: exp.metric,
            explicit_routes: exp.explicit_routes.clone(),
            flow_port: exp.flow_port,
            metrics_interval_ms: exp.metrics_interval.as_millis().min(u128::from(u32::MAX)) as u32,
            max_nodes: exp.max_nodes.clone(),
            multicast_pool: exp.multicast_pool,
        }
    }
}

/// A controller serving an experiment, with its store and the run recorded in it.
pub struct Started {
    pub handle: ControllerHandle,
    pub store: Store,
    pub run_id: i64,
    pub writer: StoreWriter,
    pub milestones: mpsc::UnboundedReceiver<Milestone>,
}

/// Who may do what: the run's token, and where nodes (and only nodes) reach the controller.
#[derive(Default)]
pub struct Access {
    pub token: Option<String>,
    pub node_listeners: Vec<tokio::net::TcpListener>,
    /// TLS on the main listener, for agents and clients on other hosts.
    pub tls: Option<tls::TlsAcceptor>,
}

/// Opens the store, records the run and starts the controller on `listener`.
pub async fn start(
    exp: &experiment::Experiment,
    listener: tokio::net::TcpListener,
    db_url: &str,
    multi_host: bool,
    access: Access,
) -> Result<Started, StoreError> {
    let port = listener.local_addr().map_err(StoreError::Io)?.port();
    let store = Store::open(db_url).await?;
    let run_id = store
        .begin_run(&RunStart {
            topology: exp.topology.label.clone(),
            nodes: exp.topology.n_nodes(),
            links: exp.topology.n_links(),
        })
        .await?;
    let writer = store.writer(run_id, exp.overlay_base);
    // Routes for thousands of nodes take seconds to compute: the coordinator takes agents
    // and nodes meanwhile, and declares nothing ready before it has them.
    let settings = Settings::for_experiment(exp, port, multi_host);
    let router = {
        let (topology, settings) = (exp.topology.clone(), settings.clone());
        tokio::task::spawn_blocking(move || Coordinator::build_router(&topology, &settings))
    };
    let mut coordinator = Coordinator::without_routes(exp.topology.clone(), settings);
    coordinator.plan_groups(exp.groups.clone());
    // The experiment's flows get their rows (and so their ids) before anything runs; they
    // wait in the coordinator until the topology is ready.
    if !exp.flows.is_empty() {
        let rows: Vec<_> = exp
            .flows
            .iter()
            .map(|f| (f.src, f.dst, f.spec.clone(), f.start))
            .collect();
        let ids = store.insert_flows(run_id, &rows).await?;
        let now = std::time::Instant::now();
        for (id, f) in ids.into_iter().zip(&exp.flows) {
            if let Err(e) =
                coordinator.handle_add_flow(now, id, f.src, f.dst, f.spec.clone(), f.start)
            {
                tracing::warn!("flow {id} of the experiment refused: {e}");
            }
        }
    }
    let (milestones_tx, milestones) = mpsc::unbounded_channel();
    let handle = crate::server::spawn(
        listener,
        coordinator,
        milestones_tx,
        crate::server::ServeOptions {
            run: Some((store.clone(), run_id)),
            token: access.token,
            node_listeners: access.node_listeners,
            tls: access.tls,
        },
    );
    {
        let handle = handle.clone();
        tokio::spawn(async move {
            if let Ok(Some(router)) = router.await {
                handle.install_router(router);
            }
        });
    }
    if store.is_postgres() {
        crate::store::listen::spawn(store.clone(), run_id, handle.clone()).await?;
    }
    Ok(Started {
        handle,
        store,
        run_id,
        writer,
        milestones,
    })
}

/// The run's state file: where `down`, `status` and `exec` find the running experiment.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunFile {
    /// The controller's API (`http://127.0.0.1:PORT`).
    pub api: String,
    pub prefix: String,
    /// Where node namespaces are mounted (empty: not mounted).
    pub netns_dir: PathBuf,
    pub pid: u32,
    pub name: String,
    /// The underlay's first subnet: a node's gateway (where it reaches the controller) is
    /// found from it.
    #[serde(default)]
    pub underlay_base: Option<std::net::Ipv4Addr>,
    /// The overlay: node n is `overlay_base + n`.
    #[serde(default)]
    pub overlay_base: Option<std::net::Ipv4Addr>,
    /// What changes through the API must carry (`up --token`); the file is readable by its
    /// owner only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// A fresh random token: 128 bits from the kernel, in hex.
pub fn new_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl RunFile {
    /// What a program in node `node_id` needs to find the run: its id, the overlay, and the
    /// controller's API at the node's gateway (`nextmini exec` sets these in the environment).
    pub fn node_env(&self, node_id: u32) -> Vec<(&'static str, String)> {
        let mut env = vec![("NEXTMINI_NODE_ID", node_id.to_string())];
        if let Some(base) = self.overlay_base {
            env.push(("NEXTMINI_OVERLAY_BASE", base.to_string()));
        }
        let port = self.api.rsplit(':').next().unwrap_or_default();
        if let (Some(base), Ok(prefix)) = (self.underlay_base, hostnet::Prefix::new(&self.prefix))
            && node_id > 0
            && let Ok(plan) = hostnet::UnderlayPlan::new(prefix, base, node_id, 0)
        {
            let gateway = plan.node(node_id - 1).gateway;
            env.push(("NEXTMINI_API", format!("http://{gateway}:{port}")));
        }
        env
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunFileError {
    #[error(
        "no running experiment ({} not found): start one with `nextmini up <file>`",
        path.display()
    )]
    Missing { path: PathBuf },
    #[error("{} is damaged ({message}): remove it if no experiment runs", path.display())]
    Damaged { path: PathBuf, message: String },
    #[error(
        "the experiment in {} is gone (its process {pid} was killed or crashed): `nextmini down --state-dir {}` clears it and says what it left",
        dir.display(), dir.display()
    )]
    Gone {
        dir: PathBuf,
        pid: u32,
        prefix: String,
    },
}

impl RunFile {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("run.json")
    }

    /// Held (locked) by the run's process while it lives.
    pub fn lock_path(state_dir: &Path) -> PathBuf {
        state_dir.join("run.lock")
    }

    /// Whether the run's process still holds its state directory (false after a crash or a
    /// kill, whatever became of its pid).
    pub fn is_alive(state_dir: &Path) -> bool {
        matches!(
            hostnet::claim::Claim::holder(&Self::lock_path(state_dir)),
            Ok(Some(_))
        )
    }

    /// The running experiment's file; [`RunFileError::Gone`] when its process is not alive.
    pub fn load(state_dir: &Path) -> Result<Self, RunFileError> {
        let run = Self::load_any(state_dir)?;
        if !Self::is_alive(state_dir) {
            return Err(RunFileError::Gone {
                dir: state_dir.to_owned(),
                pid: run.pid,
                prefix: run.prefix,
            });
        }
        Ok(run)
    }

    /// The file as it is, whether its run lives or not.
    pub fn load_any(state_dir: &Path) -> Result<Self, RunFileError> {
        let path = Self::path(state_dir);
        let text = std::fs::read_to_string(&path)
            .map_err(|_| RunFileError::Missing { path: path.clone() })?;
        serde_json::from_str(&text).map_err(|e| RunFileError::Damaged {
            path,
            message: e.to_string(),
        })
    }

    pub fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = Self::path(state_dir);
        // Written aside and renamed: a reader sees the whole file or none. Owner only: it may
        // hold the run's token.
        let aside = path.with_extension("json.new");
        let _ = std::fs::remove_file(&aside);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&aside)?;
        file.write_all(
            serde_json::to_string_pretty(self)
                .map_err(std::io::Error::other)?
                .as_bytes(),
        )?;
        std::fs::rename(&aside, &path)
    }

    /// A client of the run's controller, with its token.
    pub fn client(&self) -> crate::client::ControllerClient {
        crate::client::ControllerClient::new(&self.api).with_token(self.token.clone())
    }
}

/// Serves an experiment for agents started elsewhere (`nextmini controller`, the seeds' first
/// terminal) until `shutdown` resolves or a teardown is asked for, recording the run.
pub async fn serve(
    exp: &experiment::Experiment,
    listener: tokio::net::TcpListener,
    db_url: &str,
    access: Access,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StoreError> {
    use crate::store::{RunFigures, RunState};
    let Started {
        mut handle,
        store,
        run_id,
        writer,
        mut milestones,
    } = start(exp, listener, db_url, true, access).await?;
    let recorder = tokio::spawn(async move {
        let mut figures = RunFigures::default();
        while let Some(m) = milestones.recv().await {
            writer.record(&m);
            match m {
                Milestone::PlumbingDone { seconds, .. } => figures.plumb_seconds = Some(seconds),
                Milestone::TopologyReady { wiring } => {
                    figures.wiring_seconds = Some(wiring.as_secs_f64());
                    let _ = store.finish_run(run_id, RunState::Ready, &figures).await;
                }
                _ => {}
            }
        }
        let _ = writer.close().await;
    });
    tokio::select! {
        () = shutdown => handle.down(),
        () = handle.wait_down() => {}
    }
    recorder.abort();
    // Give agents a moment to hear the shutdown before the sockets close.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    Ok(())
}

/// Nodes a run left in place for the next run of its layout (`down --keep`): in its state
/// directory as `kept.json`. The next `up` there with the same prefix, base and node count
/// takes them over; another layout removes them first; `cleanup --prefix` removes them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeptNodes {
    pub prefix: String,
    pub underlay_base: std::net::Ipv4Addr,
    /// Whether the nodes have an underlay (not `up --no-underlay`).
    #[serde(default = "yes")]
    pub underlay: bool,
    pub nodes: u32,
    /// Where the namespaces are mounted.
    pub netns_dir: PathBuf,
}

impl KeptNodes {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("kept.json")
    }

    /// What `state_dir` records as kept, if anything (an unreadable record counts as none).
    pub fn load(state_dir: &Path) -> Option<KeptNodes> {
        let text = std::fs::read_to_string(Self::path(state_dir)).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).expect("serializes");
        std::fs::write(Self::path(state_dir), text + "\n")
    }

    pub fn forget(state_dir: &Path) {
        let _ = std::fs::remove_file(Self::path(state_dir));
    }

    /// Removes the kept nodes from this host, and the record of them.
    pub fn remove(&self, state_dir: &Path) -> Result<(), KeptNodesError> {
        let prefix = hostnet::Prefix::new(&self.prefix)?;
        hostnet::cleanup::sweep(&prefix, &self.netns_dir)?;
        Self::forget(state_dir);
        Ok(())
    }

    /// Whether the nodes are still there: the first and the last node's namespace mounted.
    pub fn present(&self) -> bool {
        let Ok(prefix) = hostnet::Prefix::new(&self.prefix) else {
            return false;
        };
        let Ok(plan) = hostnet::UnderlayPlan::new(prefix, self.underlay_base, self.nodes, 0) else {
            return false;
        };
        [0, self.nodes.saturating_sub(1)]
            .iter()
            .all(|&i| self.netns_dir.join(plan.node(i).netns_name).exists())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeptNodesError {
    #[error(transparent)]
    Prefix(#[from] hostnet::plan::PlanError),
    #[error("removing the kept nodes: {0}")]
    Io(#[from] std::io::Error),
}

fn yes() -> bool {
    true
}
