//! `nextmini up`: an experiment on this host ([`controller::local::LocalRun`]), with progress
//! bars while it wires and the summary when it is ready; `--detach` leaves it running in the
//! background.

use std::io::{BufRead, BufReader, IsTerminal};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use clap::Args;
use controller::local::{Hold, LocalOptions, LocalRun, Progress, Wired};
use controller::run::DEFAULT_STATE_DIR;
use experiment::ExperimentFile;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::host::{self, shutdown_signal};

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
    /// Nodes without an underlay (no veth, bridge or underlay address): lighter and faster to
    /// create, for one host with links in process. Programs in the nodes can't reach the
    /// controller, and links over TCP are refused.
    #[arg(long)]
    pub no_underlay: bool,
    /// Defaults for every link, short form: rate=10mbit,delay=5ms,jitter=1ms,loss=1%,queue=100
    /// (on top of the file's [links]).
    #[arg(long)]
    pub link: Option<linkem::LinkChange>,
    /// No TUN devices and no forwarding: nodes and links only (the connection-only baseline).
    #[arg(long)]
    pub no_dataplane: bool,
    /// Nodes in max mode (`1-4,9`; with the file's `[[nodes]] operating_mode = "max"`):
    /// links between two of them on this host are veth pairs the kernel forwards over,
    /// with a rate and a queue only.
    #[arg(long, value_name = "IDS")]
    pub max_nodes: Option<crate::host::NodeIds>,
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
    /// Tear down once every flow ([[flows]], [[workload]], `flow add`) has finished or
    /// failed, and print their completion times.
    #[arg(long, conflicts_with_all = ["exit_when_ready", "detach"])]
    pub until_flows_done: bool,
    /// Write the summary as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Raise the host limits for this run, then exit.
    #[arg(long)]
    pub sysctl_only: bool,
    /// Fault injection: this node fails right after connecting (repeatable).
    #[arg(long = "fail-node")]
    pub fail_nodes: Vec<u32>,
    /// Changes through the API and the live view need a token (kept in the state directory's
    /// run.json, which only its owner can read; nextmini's commands send it).
    #[arg(long)]
    pub token: bool,
    /// Where the API and the live view listen (default 127.0.0.1: this host only; nodes
    /// reach the controller at their bridges' addresses, where it takes node sessions and
    /// nothing else). Another address (0.0.0.0 for all) makes the run need its token.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::IpAddr>,
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
    host::log_notes(&file.notes());
    if let Some(change) = args.link {
        file.set_link_defaults(change);
    }
    // `--topo ring,10` names its size; a different --n-nodes beside it is a slip (presets
    // that --n-nodes can't resize are refused by the resolution below, with their size).
    let named = match (&args.topo, args.n_nodes) {
        (Some(_), Some(_)) => Some(file.resolve(path)?.topology.n_nodes()),
        _ => None,
    };
    let mut exp = file.resolve_with_n_nodes(path, args.n_nodes)?;
    if let (Some(short), Some(n), Some(named)) = (&args.topo, args.n_nodes, named)
        && named != n
    {
        bail!("--topo {short} has {named} nodes but --n-nodes says {n}: give one of them");
    }
    if args.no_dataplane {
        exp.dataplane = false;
    }
    let mut max_nodes = exp.max_nodes.clone();
    max_nodes.extend(args.max_nodes.iter().flat_map(|m| m.ids.iter()));
    // Checked again: the flags may have changed the links or the dataplane.
    let exp = exp
        .with_max_nodes(max_nodes)
        .map_err(|e| anyhow::anyhow!(e))?;
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
    // The agent holds a TUN device per node with the dataplane (its nodes' control sessions
    // share its one connection) and both ends of every TCP link. Say so now rather than fail
    // node by node.
    let links = exp.topology.n_links() as u64;
    // Unmounted namespaces are held open by the agent: one descriptor each.
    let per_node = u64::from(exp.dataplane) + u64::from(args.no_mount);
    // Links over the network: both ends of every TCP link, or a UDP socket per node.
    let link_fds = match (exp.force_network, exp.network_transport) {
        (false, _) => 0,
        (true, proto::Transport::Udp) => u64::from(n),
        (true, _) => 2 * links,
    };
    let need = 1024 + per_node * u64::from(n) + link_fds;
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

async fn run_async(args: UpArgs, exp: experiment::Experiment) -> Result<()> {
    let n = exp.topology.n_nodes();
    let opts = LocalOptions {
        port: args.port,
        prefix: args.prefix.clone(),
        base: args.base,
        no_mount: args.no_mount,
        no_underlay: args.no_underlay,
        threads: args.threads,
        db: args.db.clone(),
        state_dir: args.state_dir.clone(),
        fail_nodes: args.fail_nodes.clone(),
        agent_program: std::env::current_exe()?,
        token: args.token,
        listen: args.listen,
    };
    let mut run = LocalRun::start(exp, opts).await?;
    let bars = Bars::new(u64::from(n));
    let mut ctrl_c = std::pin::pin!(shutdown_signal());
    let wired = run
        .wait_ready(|p| bars.show(p), async {
            (&mut ctrl_c).await;
            eprintln!("interrupted: tearing down");
        })
        .await;
    bars.clear();
    let summary = match wired? {
        Wired::Ready(summary) => summary,
        Wired::Interrupted => {
            crate::running::check_nothing_left(&run.name(), run.prefix())?;
            bail!("interrupted before the topology was ready; everything it created was removed");
        }
    };
    print!("{}", summary.table());
    println!(
        "{} links up, {} failed nodes; ready {:.2}s after start; store {}",
        summary.links_up, summary.failed_nodes, summary.total_seconds, summary.store
    );
    if !args.exit_when_ready {
        println!(
            "live view: {}/{}",
            run.api(),
            if run.token_required() {
                " (changes need the token in run.json)"
            } else {
                " (read-only; --token to change things from the page)"
            }
        );
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !args.exit_when_ready {
        run.write_run_file()?;
        if std::env::var_os(DETACHED_ENV).is_some() {
            println!("{READY_LINE}");
            detach_stdout();
        } else {
            println!("running; Ctrl-C or `nextmini down` tears it down");
        }
        let hold = if args.until_flows_done {
            Hold::UntilFlowsDone
        } else {
            Hold::UntilDown
        };
        run.hold(ctrl_c, hold).await?;
        let flows = run.flows().await;
        if !flows.is_empty() {
            print!("{}", controller::render::flows(&flows));
            println!("{}", controller::render::flow_summary(&flows));
        }
    }
    run.teardown().await?;
    if !args.exit_when_ready {
        println!(
            "results are kept in {}: `nextmini metrics{}` reads them",
            summary.store,
            if args.db.is_some() {
                " --db <url>".to_owned()
            } else {
                format!(" --state-dir {}", args.state_dir.display())
            }
        );
    }
    Ok(())
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

/// After a detached run is ready, nobody reads its stdout any more.
fn detach_stdout() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
    }
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

    fn show(&self, p: Progress) {
        match p {
            Progress::Plumbed(n) => self.namespaces.set_position(u64::from(n)),
            Progress::PlumbingDone => self.namespaces.finish(),
            Progress::Connected(n) => self.connected.set_position(u64::from(n)),
            Progress::Ready(n) => self.ready.set_position(u64::from(n)),
        }
    }

    fn clear(&self) {
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}
