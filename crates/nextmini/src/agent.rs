//! The seeds' two terminals: `nextmini controller` (the controller alone, for agents started
//! separately) and `nextmini agent` (this host's share of nodes, for a controller or a head).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use controller::run::DEFAULT_STATE_DIR;
use experiment::{DataplaneFile, ExperimentFile};

use crate::host;
use crate::plumb::LayoutArgs;

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
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

/// The controller alone, for agents started elsewhere (the seeds' first terminal).
pub fn controller(args: ControllerArgs) -> Result<()> {
    let path = args.file.or(args.config_path).context(
        "give the controller config: nextmini controller --config-path controller-config.toml",
    )?;
    let file = ExperimentFile::load(&path)?;
    host::log_notes(&file.notes());
    let exp = file.resolve_with_n_nodes(Some(&path), args.n_nodes)?;
    let port = args.port.unwrap_or(exp.port);
    std::fs::create_dir_all(&args.state_dir).with_context(|| {
        format!(
            "cannot create the state directory {}",
            args.state_dir.display()
        )
    })?;
    let db_url = args
        .db
        .clone()
        .or(exp.db_url.clone())
        .unwrap_or_else(|| controller::run::default_db_url(&args.state_dir));
    tokio::runtime::Runtime::new()?.block_on(async move {
        let listener = controller::server::bind(SocketAddr::from((args.listen, port))).await?;
        eprintln!(
            "controller for {} ({} nodes) listening on {}:{port}",
            exp.topology.label,
            exp.topology.n_nodes(),
            args.listen
        );
        controller::run::serve(&exp, listener, &db_url, host::shutdown_signal()).await?;
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

impl AgentArgs {
    /// The seeds' dataplane invocation: `nextmini --config-path config.toml --n-nodes N`.
    pub fn seeds(config_path: PathBuf, n_nodes: Option<u32>) -> AgentArgs {
        AgentArgs {
            controller: None,
            config_path: Some(config_path),
            n_nodes,
            node_id_offset: None,
            nodes: None,
            head: None,
            link_port: None,
            host: None,
            fail_nodes: Vec::new(),
            peers: Vec::new(),
            local: None,
            vni: 4242,
            layout: AgentLayout {
                prefix: host::DEFAULT_PREFIX.to_owned(),
                base: None,
                threads: 1,
                no_mount: false,
                ipv6: false,
            },
        }
    }
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
            name: args.host.clone().unwrap_or_else(host::hostname),
            link_port: args.link_port.unwrap_or(experiment::DEFAULT_LINK_PORT),
            threads: args.layout.threads,
            netns_dir: PathBuf::from(hostnet::netns::DEFAULT_NETNS_DIR),
        };
        return tokio::runtime::Runtime::new()?
            .block_on(agent::host::serve(cfg, crate::host::shutdown_signal()))
            .map_err(Into::into);
    }
    let file = match &args.config_path {
        Some(p) => DataplaneFile::load(p)?,
        None => DataplaneFile::default(),
    };
    host::log_notes(&file.notes());
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
    let host_name = args.host.clone().unwrap_or_else(host::hostname);
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
    let report = tokio::runtime::Runtime::new()?
        .block_on(agent::run(cfg, crate::host::shutdown_signal()))?;
    tracing::info!(
        "agent done: {} nodes ({} failed), plumbed in {:.3} s, torn down in {:.3} s",
        report.nodes,
        report.failed_nodes,
        report.plumb_seconds,
        report.teardown_seconds
    );
    Ok(())
}
