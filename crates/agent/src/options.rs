//! An agent's configuration from its flags and the seeds' dataplane config: which nodes, where
//! the controller is, how they are laid out, and the tunnels to other hosts.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use experiment::DataplaneFile;
use hostnet::{FabricSpec, Prefix, TunnelSpec, UnderlayPlan};

use crate::AgentConfig;

/// What the command line says; unset fields come from the dataplane file, then defaults.
#[derive(Debug, Clone, Default)]
pub struct AgentOptions {
    /// The controller (host:port or ws://host:port).
    pub controller: Option<String>,
    pub n_nodes: Option<u32>,
    pub node_id_offset: Option<u32>,
    /// Exactly these node ids (a scheduler's share).
    pub nodes: Option<Vec<u32>>,
    pub link_port: Option<u16>,
    /// This host's name, as the controller lists it.
    pub host: String,
    pub fail_nodes: Vec<u32>,
    /// The other hosts of the experiment: joined by VXLAN.
    pub peers: Vec<Ipv4Addr>,
    /// This host's address towards the peers (default: the one the controller is reached
    /// from).
    pub local: Option<Ipv4Addr>,
    pub vni: u32,
    pub prefix: String,
    pub base: Option<Ipv4Addr>,
    pub threads: usize,
    pub no_mount: bool,
    pub ipv6: bool,
    /// Nodes without an underlay.
    pub no_underlay: bool,
    pub netns_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error("how many nodes? give --n-nodes N (or n_nodes in --config-path), or --nodes 1-4,9")]
    NoNodes,
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("--controller {0} is not host:port")]
    Controller(String),
    #[error("no route to the controller at {0}: give --local")]
    NoRoute(SocketAddr),
    #[error("this host reaches the controller from {0}, which its peers can't use: give --local")]
    Unusable(std::net::IpAddr),
    #[error("--peers lists this host's own address {0}: give the other hosts only")]
    PeerIsSelf(Ipv4Addr),
    #[error(transparent)]
    Config(#[from] experiment::ConfigError),
    #[error(transparent)]
    Plan(#[from] hostnet::plan::PlanError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The source address this host uses to reach `to` (the kernel's route choice; no packet is
/// sent).
fn local_address_towards(to: SocketAddr) -> Result<Ipv4Addr, OptionsError> {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0")?;
    probe.connect(to).map_err(|_| OptionsError::NoRoute(to))?;
    match probe.local_addr()?.ip() {
        std::net::IpAddr::V4(a) if !a.is_loopback() => Ok(a),
        other => Err(OptionsError::Unusable(other)),
    }
}

impl AgentOptions {
    /// The agent's configuration: flags first, then the seeds' dataplane file.
    pub fn resolve(self, file: &DataplaneFile) -> Result<AgentConfig, OptionsError> {
        let ids = match self.nodes.clone() {
            Some(ids) => Some(ids),
            // The seeds' single-node mode: this agent hosts node `node_id`.
            None if self.n_nodes.is_none() => file.single_node()?.map(|id| vec![id]),
            None => None,
        };
        // `https://` or `wss://`: over TLS, trusting the certificate NEXTMINI_CA names.
        let over_tls = self
            .controller
            .as_deref()
            .is_some_and(|c| c.starts_with("https://") || c.starts_with("wss://"));
        let controller: SocketAddr = match &self.controller {
            Some(c) => c
                .trim_start_matches("ws://")
                .trim_start_matches("wss://")
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .trim_end_matches('/')
                .parse()
                .map_err(|_| OptionsError::Controller(c.clone()))?,
            None => file
                .controller()?
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], experiment::DEFAULT_PORT))),
        };
        let prefix = Prefix::new(&self.prefix)?;
        let base = self
            .base
            .or(file.underlay_base())
            .unwrap_or(hostnet::plan::DEFAULT_BASE);
        let plan = match &ids {
            Some(ids) => UnderlayPlan::with_ids(prefix, base, ids)?,
            None => {
                let n = self.n_nodes.or(file.n_nodes).ok_or(OptionsError::NoNodes)?;
                let offset = self.node_id_offset.or(file.node_id_offset).unwrap_or(0);
                UnderlayPlan::new(prefix, base, n, offset)?
            }
        };
        let mut spec = FabricSpec::new(plan);
        spec.netns_dir = (!self.no_mount).then(|| self.netns_dir.clone());
        spec.threads = self.threads;
        spec.ipv6 = self.ipv6;
        spec.underlay = !self.no_underlay;
        if !self.peers.is_empty() {
            let local = match self.local {
                Some(l) => l,
                None => local_address_towards(controller)?,
            };
            if self.peers.contains(&local) {
                return Err(OptionsError::PeerIsSelf(local));
            }
            spec.tunnel = Some(TunnelSpec {
                vni: self.vni,
                local,
                peers: self.peers.clone(),
                port: 4789,
            });
        }
        Ok(AgentConfig {
            controller,
            host: self.host,
            spec,
            link_port: self
                .link_port
                .or(file.link_port()?)
                .unwrap_or(experiment::DEFAULT_LINK_PORT),
            fail_nodes: self.fail_nodes,
            tun_devices: file.local_interface(),
            // From the environment rather than a flag, so it does not show in `ps`.
            token: std::env::var("NEXTMINI_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
            adopt: false,
            tls: if over_tls {
                Some(tls::Trust::required(&format!(
                    "the controller at {controller}"
                ))?)
            } else {
                None
            },
        })
    }
}
