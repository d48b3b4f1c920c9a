//! The seeds' two terminals: `nextmini controller` (the controller alone, for agents started
//! separately) and `nextmini agent` (this host's share of nodes, for a controller or a head).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use controller::run::DEFAULT_STATE_DIR;
use experiment::{DataplaneFile, ExperimentFile};

use crate::host;

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
    /// Agents and changes must carry a token, made at each start and written to
    /// `<state-dir>/controller.token` (readable by its owner only): agents and commands with
    /// --api take it from NEXTMINI_TOKEN (an agent on this host with the default state
    /// directory reads the file itself). The default; the flag is kept for old scripts.
    #[arg(long, conflicts_with = "no_token")]
    pub token: bool,
    /// No token: whoever reaches the port (other than the nodes) can change or stop the
    /// experiment, as with the seeds' controller.
    #[arg(long)]
    pub no_token: bool,
    /// TLS for agents and clients: a certificate made once in `<state-dir>/tls/` (this host's
    /// addresses and name); they trust it with NEXTMINI_CA=<state-dir>/tls/cert.pem and reach
    /// the controller as https://HOST:PORT.
    #[arg(long)]
    pub tls: bool,
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
    let token = if !args.no_token {
        let path = args.state_dir.join("controller.token");
        let token = host::write_token(&path)?;
        eprintln!(
            "agents and changes need the token in {} (NEXTMINI_TOKEN)",
            path.display()
        );
        Some(token)
    } else {
        if !args.listen.is_loopback() {
            tracing::warn!(
                "listening on {} without a token: whoever reaches port {port} can change or stop the experiment",
                args.listen
            );
        }
        None
    };
    let tls = host::tls_identity(args.tls, &args.state_dir, "agents and clients", port)?;
    tokio::runtime::Runtime::new()?.block_on(async move {
        let listener = controller::server::bind(SocketAddr::from((args.listen, port))).await?;
        eprintln!(
            "controller for {} ({} nodes) listening on {}:{port}",
            exp.topology.label,
            exp.topology.n_nodes(),
            args.listen
        );
        let access = controller::run::Access {
            token,
            node_listeners: Vec::new(),
            tls: tls.as_ref().map(tls::Identity::acceptor),
        };
        controller::run::serve(&exp, listener, &db_url, access, host::shutdown_signal()).await?;
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
    pub nodes: Option<crate::host::NodeIds>,
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
    /// Take over the nodes a previous run of this layout kept (`nextmini down --keep`)
    /// instead of plumbing new ones.
    #[arg(long, conflicts_with = "head")]
    pub adopt: bool,
    /// Nodes without an underlay (no veth, bridge or underlay address): for one host with
    /// links in process.
    #[arg(long, conflicts_with_all = ["head", "peers"])]
    pub no_underlay: bool,
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
            adopt: false,
            no_underlay: false,
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

pub fn agent(args: AgentArgs) -> Result<()> {
    host::require_root("nextmini agent")?;
    let name = args.host.clone().unwrap_or_else(host::hostname);
    if let Some(given) = &args.head {
        // `https://HEAD:PORT`: the head is reached over TLS (`nextmini serve --tls`), trusting
        // the certificate NEXTMINI_CA names.
        let over_tls = given.starts_with("https://");
        let head: SocketAddr = given
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .parse()
            .with_context(|| format!("--head {given} is not host:port"))?;
        let tls = if over_tls {
            Some(tls::Trust::required(&format!("the head at {head}"))?)
        } else {
            None
        };
        let cfg = agent::host::HostConfig {
            head,
            name,
            link_port: args.link_port.unwrap_or(experiment::DEFAULT_LINK_PORT),
            threads: args.layout.threads,
            netns_dir: PathBuf::from(hostnet::netns::DEFAULT_NETNS_DIR),
            token: head::client::head_token(),
            tls,
        };
        return tokio::runtime::Runtime::new()?
            .block_on(agent::host::serve(cfg, host::shutdown_signal()))
            .map_err(Into::into);
    }
    let file = match &args.config_path {
        Some(p) => DataplaneFile::load(p)?,
        None => DataplaneFile::default(),
    };
    host::log_notes(&file.notes());
    let cfg = agent::options::AgentOptions {
        controller: args.controller,
        n_nodes: args.n_nodes,
        node_id_offset: args.node_id_offset,
        nodes: args.nodes.map(|n| n.ids),
        link_port: args.link_port,
        host: name,
        fail_nodes: args.fail_nodes,
        peers: args.peers,
        local: args.local,
        vni: args.vni,
        prefix: args.layout.prefix,
        base: args.layout.base,
        threads: args.layout.threads,
        no_mount: args.layout.no_mount,
        ipv6: args.layout.ipv6,
        no_underlay: args.no_underlay,
        netns_dir: PathBuf::from(hostnet::netns::DEFAULT_NETNS_DIR),
    }
    .resolve(&file)?;
    // The controller's token: from NEXTMINI_TOKEN, else the file a controller on this host
    // with the default state directory wrote (the seeds' two terminals).
    let token = controller::client::token_from_env_or_file(
        &Path::new(DEFAULT_STATE_DIR).join("controller.token"),
    );
    let cfg = agent::AgentConfig {
        adopt: args.adopt,
        token,
        ..cfg
    };
    let report =
        tokio::runtime::Runtime::new()?.block_on(agent::run(cfg, host::shutdown_signal()))?;
    tracing::info!(
        "agent done: {} nodes ({} failed), plumbed in {:.3} s, torn down in {:.3} s",
        report.nodes,
        report.failed_nodes,
        report.plumb_seconds,
        report.teardown_seconds
    );
    Ok(())
}
