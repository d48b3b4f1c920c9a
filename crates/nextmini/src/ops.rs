//! The commands around a running experiment (`down`, `status`, `exec`) and the seeds'
//! two-terminal way (`controller`, `agent`).

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use controller::coordinator::Milestone;

use crate::config::RunFile;
use crate::host;
use crate::plumb::LayoutArgs;
use experiment::{DataplaneFile, ExperimentFile};

fn http(run: &RunFile, method: &str, path: &str) -> Result<String> {
    http_at(&run.api, method, path)
}

fn http_at(api: &str, method: &str, path: &str) -> Result<String> {
    let url = format!("{api}{path}");
    let response = match method {
        "POST" => ureq::post(&url).send_empty(),
        _ => ureq::get(&url).call(),
    };
    let mut response = response.with_context(|| {
        format!("the controller at {api} does not answer (is the experiment still running?)")
    })?;
    Ok(response.body_mut().read_to_string()?)
}

/// The controller to talk to: `--api` (any controller, e.g. a head's experiment at the port
/// `nextmini exp status` shows), else the run in the state directory.
fn controller_api(state_dir: &Path, api: &Option<String>) -> Result<String> {
    match api {
        Some(a) if a.starts_with("http://") => Ok(a.trim_end_matches('/').to_owned()),
        Some(a) => Ok(format!("http://{}", a.trim_end_matches('/'))),
        None => Ok(RunFile::load(state_dir)?.api),
    }
}

#[derive(Args, Debug)]
pub struct LinkSetArgs {
    /// The link, as two node ids: 1-2.
    pub link: String,
    /// Rate: 50mbit, 1gbit, 64kbit.
    #[arg(long)]
    pub rate: Option<linkem::Rate>,
    /// Remove the rate limit.
    #[arg(long, conflicts_with = "rate")]
    pub unshaped: bool,
    /// Propagation delay: 20ms, 250us.
    #[arg(long)]
    pub delay: Option<linkem::Span>,
    #[arg(long)]
    pub jitter: Option<linkem::Span>,
    /// Random loss: 1%, 0.5%.
    #[arg(long, conflicts_with = "gilbert_elliott")]
    pub loss: Option<linkem::Fraction>,
    /// Bursty loss: p,r,loss_good,loss_bad (good→bad and bad→good per packet, and the loss
    /// in each state), e.g. 0.01,0.1,0%,50%.
    #[arg(long = "gilbert-elliott", value_name = "P,R,GOOD,BAD")]
    pub gilbert_elliott: Option<linkem::GilbertElliott>,
    /// Queue limit in packets.
    #[arg(long, conflicts_with = "queue_bytes")]
    pub queue: Option<u32>,
    /// Queue limit in bytes.
    #[arg(long)]
    pub queue_bytes: Option<u32>,
    /// Queue discipline: droptail or red.
    #[arg(long, value_parser = ["droptail", "red"])]
    pub aqm: Option<String>,
    /// Take the link down (traffic is rerouted where another path exists).
    #[arg(long, conflicts_with = "up")]
    pub down: bool,
    #[arg(long)]
    pub up: bool,
    #[arg(long, default_value = crate::up::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// A controller's address instead of the run in --state-dir (host:port), e.g. a head's
    /// experiment at the port `nextmini exp status` shows.
    #[arg(long)]
    pub api: Option<String>,
}

impl LinkSetArgs {
    /// The change the flags ask for, checked.
    fn change(&self) -> Result<linkem::LinkChange> {
        let change = linkem::LinkChange {
            rate: self.rate,
            unshaped: self.unshaped,
            delay: self.delay,
            jitter: self.jitter,
            loss: self.loss,
            gilbert_elliott: self.gilbert_elliott,
            queue: self.queue,
            queue_bytes: self.queue_bytes,
            aqm: self.aqm.as_deref().map(|a| {
                if a == "red" {
                    linkem::Aqm::RED
                } else {
                    linkem::Aqm::DropTail
                }
            }),
            up: (self.down || self.up).then_some(self.up),
            reorder: None,
        };
        change.check()?;
        Ok(change)
    }
}

fn parse_link(link: &str) -> Result<(u32, u32)> {
    link.split_once('-')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .with_context(|| format!("{link:?} is not a link: write it as two node ids, e.g. 1-2"))
}

#[derive(Args, Debug)]
pub struct LinkShowArgs {
    /// Only these links: 1-2, or a node id for every link of that node.
    pub links: Vec<String>,
    #[arg(long, default_value = crate::up::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// A controller's address instead of the run in --state-dir (host:port).
    #[arg(long)]
    pub api: Option<String>,
}

/// Each direction of the running experiment's links: parameters and counters.
pub fn link_show(args: &LinkShowArgs) -> Result<()> {
    let mut wanted_links = Vec::new();
    let mut wanted_nodes = Vec::new();
    for l in &args.links {
        match l.parse::<u32>() {
            Ok(node) => wanted_nodes.push(node),
            Err(_) => {
                let (a, b) = parse_link(l)?;
                wanted_links.push((a.min(b), a.max(b)));
            }
        }
    }
    let api = controller_api(&args.state_dir, &args.api)?;
    let rows: Vec<controller::coordinator::LinkRow> =
        serde_json::from_str(&http_at(&api, "GET", "/api/links")?)?;
    println!(
        "| link | up | rate | delay | loss | sent | sent bytes | dropped (down/loss/queue/red) | queue |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut shown = 0;
    for r in rows {
        let selected = (wanted_links.is_empty() && wanted_nodes.is_empty())
            || wanted_links.contains(&(r.a, r.b))
            || wanted_nodes.contains(&r.a)
            || wanted_nodes.contains(&r.b);
        if !selected {
            continue;
        }
        for (from, to, d) in [(r.a, r.b, &r.a_to_b), (r.b, r.a, &r.b_to_a)] {
            let (p, c, queue) = (&d.params, &d.counters.counters, d.counters.queue_packets);
            println!(
                "| {from}→{to} | {} | {} | {} | {} | {} | {} | {}/{}/{}/{} | {} |",
                if r.up && p.up { "up" } else { "down" },
                p.rate
                    .map_or_else(|| "unshaped".to_owned(), |r| r.to_string()),
                p.delay,
                linkem::format_percent(p.loss.mean()),
                c.delivered_packets,
                c.delivered_bytes,
                c.dropped_down,
                c.dropped_loss,
                c.dropped_queue,
                c.dropped_red,
                queue,
            );
        }
        shown += 1;
    }
    if shown == 0 && !args.links.is_empty() {
        bail!("no such link in the experiment: {}", args.links.join(" "));
    }
    Ok(())
}

/// Changes a link of the running experiment, both directions, while traffic flows.
pub fn link_set(args: &LinkSetArgs) -> Result<()> {
    let (a, b) = parse_link(&args.link)?;
    let change = args.change()?;
    let api = controller_api(&args.state_dir, &args.api)?;
    let url = format!("{api}/api/links/{a}/{b}");
    let body = serde_json::to_string(&change)?;
    let response = ureq::post(&url)
        .header("content-type", "application/json")
        .config()
        .http_status_as_error(false)
        .build()
        .send(body.as_str())
        .with_context(|| format!("the controller at {api} does not answer"))?;
    let status = response.status();
    let mut response = response;
    let text = response.body_mut().read_to_string()?;
    if !status.is_success() {
        bail!("{}", text.trim());
    }
    let params: linkem::LinkParams = serde_json::from_str(&text)?;
    println!("link {a}-{b}: {}", params.describe());
    Ok(())
}

pub fn status(state_dir: &Path) -> Result<()> {
    let run = RunFile::load(state_dir)?;
    let body = http(&run, "GET", "/api/status")?;
    let s: serde_json::Value = serde_json::from_str(&body)?;
    let field = |k: &str| s.get(k).map(|v| v.to_string()).unwrap_or_default();
    println!(
        "experiment {} (prefix {}, pid {})",
        run.name, run.prefix, run.pid
    );
    println!(
        "| state | topology | nodes | connected | ready | failed | links | links up | wiring time |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let wiring = s
        .get("wiring_seconds")
        .and_then(serde_json::Value::as_f64)
        .map_or_else(|| "-".to_owned(), |w| format!("{w:.2}s"));
    println!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {wiring} |",
        s.get("phase").and_then(|v| v.as_str()).unwrap_or("?"),
        s.get("topology").and_then(|v| v.as_str()).unwrap_or("?"),
        field("nodes"),
        field("connected"),
        field("ready"),
        field("failed"),
        field("links"),
        field("links_up"),
    );
    Ok(())
}

pub fn down(state_dir: &Path) -> Result<()> {
    host::require_root("nextmini down")?;
    let run = RunFile::load(state_dir)?;
    // Watch the run's process before asking, so its exit can't be missed.
    let pidfd = pidfd_open(run.pid);
    http(&run, "POST", "/api/down")?;
    // No pidfd: the process is gone already.
    if let Some(fd) = pidfd {
        let mut fds = [nix::poll::PollFd::new(
            fd.as_fd_ref(),
            nix::poll::PollFlags::POLLIN,
        )];
        let timeout = nix::poll::PollTimeout::try_from(300_000i32).expect("fits");
        if nix::poll::poll(&mut fds, timeout)? == 0 {
            bail!("the experiment did not finish tearing down within 5 minutes");
        }
    }
    println!("experiment {} is down", run.name);
    Ok(())
}

struct PidFd(std::os::fd::OwnedFd);

impl PidFd {
    fn as_fd_ref(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.0)
    }
}

fn pidfd_open(pid: u32) -> Option<PidFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Some(PidFd(unsafe {
        <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32)
    }))
}

/// Runs a command inside a node's namespace; returns its exit code.
pub fn exec(state_dir: &Path, node_id: u32, command: &[String]) -> Result<i32> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    host::require_root("nextmini exec")?;
    let run = RunFile::load(state_dir)?;
    if run.netns_dir.as_os_str().is_empty() {
        bail!(
            "experiment {} keeps its namespaces without mounts (no_mount): exec needs them mounted",
            run.name
        );
    }
    let path = run.netns_dir.join(format!("{}{node_id}", run.prefix));
    let netns = std::fs::File::open(&path)
        .with_context(|| format!("node {node_id} is not part of experiment {}", run.name))?;
    let Some((program, rest)) = command.split_first() else {
        bail!("give a command: nextmini exec {node_id} -- ping 10.0.0.1");
    };
    let fd = netns.as_raw_fd();
    let mut cmd = std::process::Command::new(program);
    cmd.args(rest);
    // SAFETY: setns is async-signal-safe; the fd stays open in the parent until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

#[derive(Args, Debug)]
pub struct ControllerArgs {
    /// The controller config (experiment file, or the seeds' controller-config.toml).
    pub file: Option<PathBuf>,
    #[arg(long, conflicts_with = "file")]
    pub config_path: Option<PathBuf>,
    #[arg(long)]
    pub port: Option<u16>,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub listen: Ipv4Addr,
    /// Number of nodes (sets a preset's n_nodes, as the seeds' flag does).
    #[arg(long)]
    pub n_nodes: Option<u32>,
    /// Store URL (default: [db] of the config, else SQLite in the state directory).
    #[arg(long)]
    pub db: Option<String>,
    #[arg(long, default_value = crate::up::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

/// The controller alone, for agents started elsewhere (the seeds' first terminal).
pub fn controller(args: ControllerArgs) -> Result<()> {
    let path = args.file.or(args.config_path).context(
        "give the controller config: nextmini controller --config-path controller-config.toml",
    )?;
    let file = ExperimentFile::load(&path)?;
    for note in file.notes() {
        tracing::info!("{}: {} (accepted, no effect)", note.key, note.what);
    }
    let exp = file.resolve_with_n_nodes(Some(&path), args.n_nodes)?;
    let port = args.port.unwrap_or(exp.port);
    tokio::runtime::Runtime::new()?.block_on(async move {
        let listener = controller::server::bind(SocketAddr::from((args.listen, port))).await?;
        std::fs::create_dir_all(&args.state_dir).with_context(|| {
            format!(
                "cannot create the state directory {}",
                args.state_dir.display()
            )
        })?;
        let url = args
            .db
            .clone()
            .or(exp.db_url.clone())
            .unwrap_or_else(|| crate::up::default_db_url(&args.state_dir));
        let crate::up::Started {
            mut handle,
            store,
            run_id: run,
            writer,
            mut milestones,
        } = crate::up::start_controller(&exp, listener, &url, true).await?;
        eprintln!(
            "controller for {} ({} nodes) listening on {}:{port}",
            exp.topology.label,
            exp.topology.n_nodes(),
            args.listen
        );
        let recorder = tokio::spawn(async move {
            let mut figures = controller::store::RunFigures::default();
            while let Some(m) = milestones.recv().await {
                writer.record(&m);
                match m {
                    Milestone::PlumbingDone { seconds, .. } => {
                        figures.plumb_seconds = Some(seconds)
                    }
                    Milestone::TopologyReady { wiring } => {
                        figures.wiring_seconds = Some(wiring.as_secs_f64());
                        let _ = store.finish_run(run, "ready", &figures).await;
                    }
                    _ => {}
                }
            }
            let _ = writer.close().await;
        });
        tokio::select! {
            _ = crate::up::shutdown_signal() => handle.down(),
            _ = handle.wait_down() => {}
        }
        recorder.abort();
        // Give agents a moment to hear the shutdown before the sockets close.
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(())
    })
}

#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// The controller (host:port or ws://host:port).
    #[arg(long)]
    pub controller: Option<String>,
    /// The seeds' dataplane config (n_nodes, node_id_offset, bridge_ip, controller_addr).
    #[arg(long)]
    pub config_path: Option<PathBuf>,
    #[arg(long, conflicts_with = "nodes")]
    pub n_nodes: Option<u32>,
    #[arg(long, conflicts_with = "nodes")]
    pub node_id_offset: Option<u32>,
    /// Host mode: register this host with a head (`nextmini serve`) and run whatever the head
    /// places here, instead of one experiment's share.
    #[arg(long, conflicts_with_all = ["controller", "n_nodes", "nodes", "config_path"])]
    pub head: Option<String>,
    /// This host's node ids when they are not one block, e.g. 1-4,9 (as `nextmini schedule`
    /// prints them).
    #[arg(long)]
    pub nodes: Option<String>,
    /// Port where nodes accept TCP links [default: 8080].
    #[arg(long)]
    pub link_port: Option<u16>,
    /// This host's name, as the controller lists it.
    #[arg(long)]
    pub host: Option<String>,
    /// Fault injection: this node fails right after connecting (repeatable).
    #[arg(long = "fail-node")]
    pub fail_nodes: Vec<u32>,
    /// The other hosts of the experiment (addresses, comma-separated): this host's bridges are
    /// joined to theirs by VXLAN tunnels, so nodes on different hosts share one underlay.
    #[arg(long, value_delimiter = ',')]
    pub peers: Vec<Ipv4Addr>,
    /// This host's address towards the peers [default: the address the controller is
    /// reached from].
    #[arg(long)]
    pub local: Option<Ipv4Addr>,
    /// The experiment's VXLAN network identifier (each shard adds its number); experiments
    /// sharing hosts need different ones.
    #[arg(long, default_value_t = 4242)]
    pub vni: u32,
    #[command(flatten)]
    pub layout: AgentLayout,
}

/// Layout flags of the agent; the same as `plumb`'s, without the node count.
#[derive(Args, Debug, Clone)]
pub struct AgentLayout {
    #[arg(long, default_value = host::DEFAULT_PREFIX)]
    pub prefix: String,
    #[arg(long)]
    pub base: Option<Ipv4Addr>,
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    #[arg(long)]
    pub no_mount: bool,
    #[arg(long)]
    pub ipv6: bool,
}

/// The source address this host uses to reach `to` (the kernel's route choice; no packet is
/// sent).
fn local_address_towards(to: SocketAddr) -> Result<Ipv4Addr> {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0")?;
    probe
        .connect(to)
        .with_context(|| format!("no route to the controller at {to}: give --local"))?;
    match probe.local_addr()?.ip() {
        std::net::IpAddr::V4(a) if !a.is_loopback() => Ok(a),
        other => bail!(
            "this host reaches the controller from {other}, which its peers can't use: give --local"
        ),
    }
}

pub fn agent(args: AgentArgs) -> Result<()> {
    host::require_root("nextmini agent")?;
    if let Some(head) = &args.head {
        let head: SocketAddr = head
            .trim_start_matches("http://")
            .parse()
            .with_context(|| format!("--head {head} is not host:port"))?;
        let cfg = agent::host::HostConfig {
            head,
            name: args.host.clone().unwrap_or_else(|| {
                nix::unistd::gethostname()
                    .map(|h| h.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| "localhost".to_owned())
            }),
            link_port: args.link_port.unwrap_or(experiment::DEFAULT_LINK_PORT),
            threads: args.layout.threads,
            netns_dir: PathBuf::from(hostnet::netns::DEFAULT_NETNS_DIR),
        };
        return tokio::runtime::Runtime::new()?
            .block_on(agent::host::serve(cfg, crate::up::shutdown_signal()))
            .map_err(Into::into);
    }
    let file = match &args.config_path {
        Some(p) => DataplaneFile::load(p)?,
        None => DataplaneFile::default(),
    };
    for note in file.notes() {
        tracing::info!("{}: {} (accepted, no effect)", note.key, note.what);
    }
    let ids = match args.nodes.as_deref() {
        Some(list) => {
            Some(topology::ids::parse_ids(list).map_err(|e| anyhow::anyhow!("--nodes: {e}"))?)
        }
        // The seeds' single-node mode: this agent hosts node `node_id`.
        None if args.n_nodes.is_none() => file.single_node()?.map(|id| vec![id]),
        None => None,
    };
    let n = match &ids {
        Some(ids) => ids.len() as u32,
        None => args.n_nodes.or(file.n_nodes).context(
            "how many nodes? give --n-nodes N (or n_nodes in --config-path), or --nodes 1-4,9",
        )?,
    };
    let offset = args.node_id_offset.or(file.node_id_offset).unwrap_or(0);
    let controller: SocketAddr = match &args.controller {
        Some(c) => c
            .trim_start_matches("ws://")
            .trim_end_matches('/')
            .parse()
            .with_context(|| format!("--controller {c} is not host:port"))?,
        None => file
            .controller()?
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], experiment::DEFAULT_PORT))),
    };
    let layout = LayoutArgs {
        prefix: args.layout.prefix.clone(),
        base: args
            .layout
            .base
            .or(file.underlay_base())
            .unwrap_or(hostnet::plan::DEFAULT_BASE),
        node_id_offset: offset,
        threads: args.layout.threads,
        no_mount: args.layout.no_mount,
        netns_dir: PathBuf::from(hostnet::netns::DEFAULT_NETNS_DIR),
        ipv6: args.layout.ipv6,
    };
    let mut spec = match &ids {
        Some(ids) => layout.spec_for_ids(ids)?,
        None => layout.spec(n)?,
    };
    if !args.peers.is_empty() {
        let local = match args.local {
            Some(l) => l,
            None => local_address_towards(controller)?,
        };
        if args.peers.contains(&local) {
            bail!("--peers lists this host's own address {local}: give the other hosts only");
        }
        spec.tunnel = Some(hostnet::TunnelSpec {
            vni: args.vni,
            local,
            peers: args.peers.clone(),
            port: 4789,
        });
    }
    let host_name = args.host.clone().unwrap_or_else(|| {
        nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "localhost".to_owned())
    });
    let cfg = agent::AgentConfig {
        controller,
        host: host_name,
        spec,
        link_port: args
            .link_port
            .or(file.link_port()?)
            .unwrap_or(experiment::DEFAULT_LINK_PORT),
        fail_nodes: args.fail_nodes.clone(),
        tun_devices: file.local_interface(),
    };
    let report =
        tokio::runtime::Runtime::new()?.block_on(agent::run(cfg, crate::up::shutdown_signal()))?;
    tracing::info!(
        "agent done: {} nodes ({} failed), plumbed in {:.3} s, torn down in {:.3} s",
        report.nodes,
        report.failed_nodes,
        report.plumb_seconds,
        report.teardown_seconds
    );
    Ok(())
}
