//! `nextmini up`: controller in this process, the host's nodes in an agent child process,
//! progress while it wires, a summary when the topology is ready.
//!
//! The agent is a separate process so that each holds its own end of the thousands of
//! control connections within one process's fd limit.

use std::io::{BufRead, BufReader, IsTerminal};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use controller::coordinator::{Coordinator, Milestone, Settings};
use controller::store::{RunFigures, RunStart, Store};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::RunFile;
use crate::host::{self, MemInfo};
use experiment::ExperimentFile;

pub const DEFAULT_STATE_DIR: &str = "/var/lib/nextmini";

#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    /// An experiment file, or the seeds' controller config.
    pub file: Option<PathBuf>,
    /// The same, the seeds' way.
    #[arg(long, conflicts_with = "file")]
    pub config_path: Option<PathBuf>,
    /// A preset instead of a file: ring,100  line,8  star,20  full_mesh,10  tree,3,2
    /// fat_tree,4  torus,2,10  random,100,4  n_nodes,1000.
    #[arg(long, conflicts_with_all = ["file", "config_path"])]
    pub topo: Option<String>,
    /// Number of nodes (sets a preset's n_nodes; must match presets sized otherwise).
    #[arg(long)]
    pub n_nodes: Option<u32>,
    /// Controller port.
    #[arg(long)]
    pub port: Option<u16>,
    /// Prefix of everything created on the host.
    #[arg(long)]
    pub prefix: Option<String>,
    /// First underlay subnet.
    #[arg(long)]
    pub base: Option<Ipv4Addr>,
    /// Keep node namespaces by fd only (faster at tens of thousands; `exec` needs mounts).
    #[arg(long)]
    pub no_mount: bool,
    /// Defaults for every link, short form: rate=10mbit,delay=5ms,jitter=1ms,loss=1%,queue=100
    /// (on top of the file's [links]).
    #[arg(long)]
    pub link: Option<String>,
    /// No TUN devices and no forwarding: nodes and links only (the connection-only baseline).
    #[arg(long)]
    pub no_dataplane: bool,
    /// Creator threads for plumbing.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Store URL: sqlite:///path or postgres://user:password@host:port/db (default: SQLite
    /// in the state directory).
    #[arg(long)]
    pub db: Option<String>,
    /// Where the store, the run file and logs live.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Tear down and exit as soon as the topology is ready.
    #[arg(long)]
    pub exit_when_ready: bool,
    /// Return once the topology is ready and leave it running until `nextmini down`.
    #[arg(long, conflicts_with = "exit_when_ready")]
    pub detach: bool,
    /// Write the summary as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Raise the host limits for this run, then exit.
    #[arg(long)]
    pub sysctl_only: bool,
    /// Fault injection: this node fails right after connecting (repeatable).
    #[arg(long = "fail-node")]
    pub fail_nodes: Vec<u32>,
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

/// Reads the experiment from the arguments.
fn experiment(args: &UpArgs) -> Result<experiment::Experiment> {
    let (mut file, path) = match (&args.file, &args.config_path, &args.topo) {
        (Some(p), _, _) | (_, Some(p), _) => (ExperimentFile::load(p)?, Some(p.as_path())),
        (_, _, Some(short)) => (ExperimentFile::from_topo(short)?, None),
        _ => bail!(
            "give an experiment file (`nextmini up ring.toml`) or a preset (`--topo ring,100`)"
        ),
    };
    for note in file.notes() {
        tracing::info!("{}: {} (accepted, no effect)", note.key, note.what);
    }
    if let Some(short) = &args.link {
        file.set_link_defaults(
            linkem::LinkChange::from_short(short).with_context(|| format!("--link {short}"))?,
        );
    }
    let mut exp = file.resolve_with_n_nodes(path, args.n_nodes)?;
    if args.no_dataplane {
        exp.dataplane = false;
    }
    Ok(exp)
}

pub fn run(args: UpArgs) -> Result<()> {
    host::require_root("nextmini up")?;
    let exp = experiment(&args)?;
    let n = exp.topology.n_nodes();
    if args.sysctl_only {
        hostnet::tuning::tune_host(
            &hostnet::tuning::Sysctl::default(),
            u64::from(n),
            exp.topology.n_links() as u64,
        )?;
        println!("host limits are set for {n} nodes");
        return Ok(());
    }
    // The agent holds a control socket per node, a TUN device per node with the dataplane,
    // and both ends of every TCP link. Say so now rather than fail node by node.
    let links = exp.topology.n_links() as u64;
    let per_node = if exp.dataplane { 2 } else { 1 };
    let tcp_fds = if exp.force_tcp { 2 * links } else { 0 };
    let need = 1024 + per_node * u64::from(n) + tcp_fds;
    if let Err(e) = hostnet::tuning::raise_nofile(need) {
        bail!(
            "{n} nodes need about {need} open files in the agent, more than this process may have ({e}): raise the hard limit (ulimit -Hn, as a user with CAP_SYS_RESOURCE){}",
            if exp.dataplane {
                ", or run without TUN devices (--no-dataplane)"
            } else {
                ""
            }
        );
    }
    if args.detach && std::env::var_os(DETACHED_ENV).is_none() {
        return detach(&args);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run_async(args, exp))
}

const DETACHED_ENV: &str = "NEXTMINI_DETACHED";
const READY_LINE: &str = "nextmini: ready";

/// Runs `up` again in the background and returns once it reports ready.
fn detach(args: &UpArgs) -> Result<()> {
    use std::os::unix::process::CommandExt;
    std::fs::create_dir_all(&args.state_dir)?;
    let log_path = args.state_dir.join("up.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args(std::env::args_os().skip(1))
        .env(DETACHED_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; the child leaves our session so that closing this
    // terminal does not stop the emulation.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting the background run")?;
    let out = child.stdout.take().expect("piped");
    for line in BufReader::new(out).lines() {
        let line = line?;
        if line == READY_LINE {
            println!(
                "running in the background (pid {}); stop it with `nextmini down`",
                child.id()
            );
            return Ok(());
        }
        println!("{line}");
    }
    let status = child.wait()?;
    let last = std::fs::read_to_string(&log_path)
        .ok()
        .and_then(|t| {
            t.lines()
                .rev()
                .find(|l| l.starts_with("error:"))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| format!("see {}", log_path.display()));
    bail!(
        "the background run stopped before it was ready ({status}): {}",
        last.trim_start_matches("error: ")
    )
}

struct Bars {
    multi: Option<MultiProgress>,
    namespaces: ProgressBar,
    connected: ProgressBar,
    ready: ProgressBar,
}

impl Bars {
    fn new(nodes: u64) -> Self {
        if !std::io::stderr().is_terminal() {
            return Bars {
                multi: None,
                namespaces: ProgressBar::hidden(),
                connected: ProgressBar::hidden(),
                ready: ProgressBar::hidden(),
            };
        }
        let multi = MultiProgress::new();
        let style = ProgressStyle::with_template("{msg:>11} [{bar:40}] {pos}/{len} {elapsed}")
            .expect("a valid template")
            .progress_chars("=> ");
        let bar = |what: &str| {
            let b = multi.add(ProgressBar::new(nodes));
            b.set_style(style.clone());
            b.set_message(what.to_owned());
            b
        };
        Bars {
            namespaces: bar("namespaces"),
            connected: bar("connected"),
            ready: bar("ready"),
            multi: Some(multi),
        }
    }

    fn clear(&self) {
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}

async fn run_async(args: UpArgs, exp: experiment::Experiment) -> Result<()> {
    let started = Instant::now();
    let n = exp.topology.n_nodes();
    let port = args.port.unwrap_or(exp.port);
    std::fs::create_dir_all(&args.state_dir).with_context(|| {
        format!(
            "cannot create the state directory {}",
            args.state_dir.display()
        )
    })?;
    if let Ok(existing) = RunFile::load(&args.state_dir)
        && Path::new(&format!("/proc/{}", existing.pid)).exists()
    {
        bail!(
            "an experiment is already running from {} (pid {}, prefix {}): stop it with `nextmini down`, or use another --state-dir",
            args.state_dir.display(),
            existing.pid,
            existing.prefix
        );
    }
    // The controller holds one end of every node's control connection.
    let fds = 1024 + u64::from(n);
    if let Err(e) = hostnet::tuning::raise_nofile(fds) {
        tracing::warn!("could not raise the open-file limit to {fds}: {e}");
    }
    let listener = controller::server::bind(SocketAddr::from(([0, 0, 0, 0], port))).await?;
    let port = listener.local_addr()?.port();

    let db_url = args
        .db
        .clone()
        .or(exp.db_url.clone())
        .unwrap_or_else(|| default_db_url(&args.state_dir));
    let Started {
        handle,
        store,
        run_id,
        writer,
        mut milestones,
    } = start_controller(&exp, listener, &db_url, false).await?;

    let prefix = args
        .prefix
        .clone()
        .or(exp.prefix.clone())
        .unwrap_or_else(|| host::DEFAULT_PREFIX.to_owned());
    let base = args
        .base
        .or(exp.underlay_base)
        .unwrap_or(hostnet::plan::DEFAULT_BASE);
    let no_mount = args.no_mount || exp.no_mount;
    // Check the layout here, so a bad prefix or base is reported before anything starts.
    hostnet::UnderlayPlan::new(hostnet::Prefix::new(&prefix)?, base, n, 0)?;

    let mem_before = MemInfo::read();
    let mut agent = tokio::process::Command::new(std::env::current_exe()?);
    agent
        .arg("agent")
        .arg("--controller")
        .arg(format!("127.0.0.1:{port}"))
        .args(["--n-nodes", &n.to_string()])
        .args(["--prefix", &prefix])
        .args(["--base", &base.to_string()])
        .args(["--threads", &args.threads.to_string()])
        .args(["--link-port", &exp.link_port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if no_mount {
        agent.arg("--no-mount");
    }
    for id in &args.fail_nodes {
        agent.args(["--fail-node", &id.to_string()]);
    }
    let mut agent = agent.spawn().context("starting the agent")?;
    let agent_pid = agent.id().unwrap_or(0);
    // The agent's log lines pass through; its last error line explains an early exit.
    let (agent_error_tx, mut agent_error) = tokio::sync::watch::channel(String::new());
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

    let bars = Bars::new(u64::from(n));
    let mut figures = RunFigures::default();
    let mut ctrl_c = std::pin::pin!(shutdown_signal());
    let wiring = loop {
        tokio::select! {
            m = milestones.recv() => {
                let Some(m) = m else { bail!("the controller stopped") };
                writer.record(&m);
                match &m {
                    Milestone::Plumbed { done } => bars.namespaces.set_position(u64::from(*done)),
                    Milestone::PlumbingDone { seconds, .. } => {
                        bars.namespaces.finish();
                        figures.plumb_seconds = Some(*seconds);
                    }
                    Milestone::NodeConnected { connected, .. } => bars.connected.set_position(u64::from(*connected)),
                    Milestone::NodeReady { ready, .. } => bars.ready.set_position(u64::from(*ready)),
                    Milestone::NodeFailed { .. } => figures.failed_nodes += 1,
                    Milestone::TopologyReady { wiring } => break *wiring,
                    _ => {}
                }
            }
            status = agent.wait() => {
                bars.clear();
                let reason = agent_error.borrow_and_update().clone();
                let _ = writer.close().await;
                let _ = store.finish_run(run_id, "failed", &figures).await;
                if reason.is_empty() {
                    bail!("the agent exited before the topology was ready ({})", status?);
                }
                bail!("{reason}");
            }
            _ = &mut ctrl_c => {
                bars.clear();
                eprintln!("interrupted: tearing down");
                handle.down();
                let _ = agent.wait().await;
                let _ = writer.close().await;
                let _ = store.finish_run(run_id, "interrupted", &figures).await;
                return Ok(());
            }
        }
    };
    bars.clear();
    let mem_after = MemInfo::read();
    // The agent's plumbing report travels on its own connection and may come after the last
    // node's; the summary needs it.
    while figures.plumb_seconds.is_none() {
        match milestones.recv().await {
            Some(Milestone::PlumbingDone { seconds, .. }) => figures.plumb_seconds = Some(seconds),
            Some(m) => writer.record(&m),
            None => break,
        }
    }
    let status = handle.status().await.context("the controller stopped")?;
    let mem_per_node = mem_before.available.saturating_sub(mem_after.available) / u64::from(n);
    let slab_per_node = mem_after.slab.saturating_sub(mem_before.slab) / u64::from(n);
    let agent_pss = pss_bytes(agent_pid);
    let controller_pss = pss_bytes(std::process::id());
    figures.wiring_seconds = Some(wiring.as_secs_f64());
    figures.mem_per_node_bytes = Some(mem_per_node);
    figures.failed_nodes = status.failed;
    let summary = Summary {
        name: exp.name.clone(),
        topology: exp.topology.label.clone(),
        nodes: n,
        links: exp.topology.n_links(),
        links_up: status.links_up,
        failed_nodes: status.failed,
        plumb_seconds: figures.plumb_seconds.unwrap_or(0.0),
        wiring_seconds: wiring.as_secs_f64(),
        total_seconds: started.elapsed().as_secs_f64(),
        mem_before_bytes: mem_before.available,
        mem_after_bytes: mem_after.available,
        mem_per_node_bytes: mem_per_node,
        slab_per_node_bytes: slab_per_node,
        total_per_node_bytes: slab_per_node + (agent_pss + controller_pss) / u64::from(n),
        agent_pss_bytes: agent_pss,
        controller_pss_bytes: controller_pss,
        store: store.url().to_owned(),
    };
    print!("{}", summary.table());
    println!(
        "{} links up, {} failed nodes; ready {:.2}s after start; store {}",
        summary.links_up, summary.failed_nodes, summary.total_seconds, summary.store
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    store.finish_run(run_id, "ready", &figures).await?;

    let run_file = RunFile {
        api: format!("http://127.0.0.1:{port}"),
        prefix: prefix.clone(),
        netns_dir: if no_mount {
            PathBuf::new()
        } else {
            PathBuf::from(hostnet::netns::DEFAULT_NETNS_DIR)
        },
        pid: std::process::id(),
        name: exp.name.clone(),
    };
    let run_path = RunFile::path(&args.state_dir);
    if !args.exit_when_ready {
        std::fs::write(&run_path, serde_json::to_string_pretty(&run_file)?)?;
        if std::env::var_os(DETACHED_ENV).is_some() {
            println!("{READY_LINE}");
            detach_stdout();
        } else {
            println!("running; Ctrl-C or `nextmini down` tears it down");
        }
        let mut waiting = handle.clone();
        tokio::select! {
            _ = &mut ctrl_c => eprintln!("tearing down"),
            _ = waiting.wait_down() => {}
            status = agent.wait() => {
                eprintln!("the agent exited ({}); tearing down", status?);
            }
        }
    }
    handle.down();
    let teardown = Instant::now();
    let agent_status = tokio::time::timeout(Duration::from_secs(300), agent.wait()).await;
    let _ = std::fs::remove_file(&run_path);
    let _ = writer.close().await;
    store.finish_run(run_id, "down", &figures).await?;
    store.close().await;
    match agent_status {
        Ok(Ok(s)) if s.success() => {
            tracing::info!("torn down in {:.3} s", teardown.elapsed().as_secs_f64());
            Ok(())
        }
        Ok(Ok(s)) => bail!(
            "the agent failed while tearing down ({s}); run `nextmini cleanup --prefix {prefix}`"
        ),
        _ => {
            bail!("the agent did not finish tearing down; run `nextmini cleanup --prefix {prefix}`")
        }
    }
}

/// The embedded store: SQLite in the state directory.
pub fn default_db_url(state_dir: &Path) -> String {
    format!("sqlite://{}", state_dir.join("nextmini.db").display())
}

/// A controller serving an experiment, with its store and the run recorded in it.
pub struct Started {
    pub handle: controller::server::ControllerHandle,
    pub store: Store,
    pub run_id: i64,
    pub writer: controller::store::StoreWriter,
    pub milestones: mpsc::UnboundedReceiver<Milestone>,
}

/// Opens the store, records the run and starts the controller on `listener`.
pub async fn start_controller(
    exp: &experiment::Experiment,
    listener: tokio::net::TcpListener,
    db_url: &str,
    multi_host: bool,
) -> Result<Started> {
    let port = listener.local_addr()?.port();
    let store = Store::open(db_url).await?;
    let run_id = store
        .begin_run(&RunStart {
            topology: exp.topology.label.clone(),
            nodes: exp.topology.n_nodes(),
            links: exp.topology.n_links(),
        })
        .await?;
    let writer = store.writer(run_id, exp.overlay_base);
    let coordinator = Coordinator::new(
        exp.topology.clone(),
        Settings {
            overlay_base: exp.overlay_base,
            overlay_prefix_len: exp.overlay_prefix_len,
            force_tcp: exp.force_tcp,
            node_port: port,
            multi_host,
            dataplane: exp.dataplane,
            mtu: exp.mtu,
            links: exp.links.clone(),
            metric: exp.metric,
            explicit_routes: exp.explicit_routes.clone(),
        },
    );
    let (milestones_tx, milestones) = mpsc::unbounded_channel();
    let handle = controller::server::spawn(listener, coordinator, milestones_tx);
    Ok(Started {
        handle,
        store,
        run_id,
        writer,
        milestones,
    })
}

/// After a detached run is ready, nobody reads its stdout any more.
fn detach_stdout() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
    }
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
