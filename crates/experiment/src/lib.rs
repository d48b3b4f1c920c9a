//! The experiment file, which is also the seeds' controller config (`controller-config.toml`),
//! and the seeds' dataplane config (`config.toml`): read, checked and resolved once into the
//! types the rest of nextmini runs on. Pure: the only I/O is reading the files named.
//!
//! - [`ExperimentFile`] is the file as written; [`ExperimentFile::resolve`] turns it into an
//!   [`Experiment`] (topology built, link parameters per direction in a [`LinkPlan`], routes
//!   and placement checked against the topology).
//! - [`DataplaneFile`] is the seeds' dataplane config, read by `nextmini agent`.
//! - [`seeds::SEED_KEYS`] lists every key of the seeds' two files and what nextmini does with
//!   it: acted on, mapped to its own setting, accepted because it cannot change what an
//!   experiment means, or refused with the reason. Nothing is warned about and ignored.
//!
//! Errors name the file, and the line and column where the text says where (unknown keys, bad
//! values), or the table (`[[link]] #2`) where the problem is with what the values mean.

mod dataplane_file;
mod file;
pub mod flows;
pub mod groups;
mod links;
pub mod seeds;
pub mod workload;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

pub use dataplane_file::DataplaneFile;
pub use file::{
    DbTable, ExperimentFile, LinkOverride, NodesTable, PlacementEntry, PortValue, RouteEntry,
    RouteShape, RoutingTable,
};
pub use flows::PlannedFlow;
pub use linkem::{LinkChange, LinkParams};
pub use links::{LinkPlan, UNSHAPED_WEIGHT};
use topology::Topology;
use topology::routing::{ExplicitRoute, Metric};

/// The controller's port when the file does not say (the seeds' default).
pub const DEFAULT_PORT: u16 = 3000;
/// Where nodes accept TCP links when the file does not say (the seeds' `private_network_port`).
pub const DEFAULT_LINK_PORT: u16 = 8080;

/// A problem with an experiment file or a seeds' config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The text itself: a syntax error, an unknown key, a bad value.
    #[error("{file}:{line}:{column}: {message}")]
    At {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// What the values mean: a link that does not exist, a refused seeds' key.
    #[error("{file}: {message}")]
    Meaning { file: String, message: String },
}

impl ConfigError {
    fn meaning(file: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Meaning {
            file: file.to_owned(),
            message: message.into(),
        }
    }
}

/// Turns a TOML error into `file:line:col: [table] message`, one line.
fn toml_error(file: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let message = e.message().replace('\n', " ");
    match e.span() {
        Some(span) => at(file, text, pinpoint(text, span.start, &message), message),
        None => ConfigError::meaning(file, message),
    }
}

/// Where an error really is. Values of a table read as a whole (`[[link]]`) are reported at
/// the table's header; when the message quotes the bad value, it is found in that table.
fn pinpoint(text: &str, offset: usize, message: &str) -> usize {
    let line_start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    if !text[line_start..].trim_start().starts_with('[') {
        return offset;
    }
    let Some(quoted) = message.split('"').nth(1).filter(|q| !q.is_empty()) else {
        return offset;
    };
    let needle = format!("\"{quoted}\"");
    // The table runs to the next header.
    let body_start = text[offset..]
        .find('\n')
        .map_or(text.len(), |i| offset + i + 1);
    let body_end = text[body_start..]
        .match_indices('\n')
        .map(|(i, _)| body_start + i + 1)
        .find(|&i| text[i..].trim_start().starts_with('['))
        .unwrap_or(text.len());
    text[body_start..body_end]
        .find(&needle)
        .map_or(offset, |i| body_start + i)
}

/// An error at byte `offset` of `text`, with the table it is in (the last header at or above
/// it) and the key it belongs to.
fn at(file: &str, text: &str, offset: usize, message: String) -> ConfigError {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = offset - line_start + 1;
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let table = text[..line_end]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|h| h.split('#').next().unwrap_or(h).trim());
    // The key whose value this is: `key = value` on the error's line, before the error.
    let key = text[line_start..offset]
        .rsplit_once('=')
        .map(|(k, _)| k.rsplit(['{', ',']).next().unwrap_or(k).trim())
        .filter(|k| !k.is_empty() && !k.starts_with('[') && !message.contains(&format!("`{k}`")));
    let mut prefix = String::new();
    if let Some(t) = table.filter(|t| !message.contains(t)) {
        prefix.push_str(t);
        prefix.push(' ');
    }
    if let Some(k) = key {
        prefix.push_str(k);
        prefix.push_str(": ");
    }
    ConfigError::At {
        file: file.to_owned(),
        line,
        column,
        message: format!("{prefix}{message}"),
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

/// An experiment, resolved from a file and flags: what `up`, a controller and a head run.
#[derive(Debug, Clone)]
pub struct Experiment {
    pub name: String,
    pub topology: Topology,
    pub port: u16,
    pub overlay_base: Ipv4Addr,
    pub overlay_prefix_len: u8,
    /// Carry every link over the network, even between nodes of one host (`protocol`).
    pub force_network: bool,
    /// What carries links over the network: TCP, or UDP (`protocol = "udp"`).
    pub network_transport: proto::Transport,
    /// The congestion controller of QUIC links (`quic_congestion_control`).
    pub quic_congestion: proto::QuicCongestion,
    /// Links carried by a protocol of their own (`[[link]] protocol`), by their ends (lower
    /// id first), ascending.
    pub link_protocols: Vec<LinkProtocol>,
    /// How lossless flows are cut and protected (`[lossless_runtime_config]`).
    pub lossless: proto::LosslessConfig,
    pub db_url: Option<String>,
    pub prefix: Option<String>,
    pub underlay_base: Option<Ipv4Addr>,
    pub no_mount: bool,
    pub link_port: u16,
    /// Nodes get TUN devices and forward packets.
    pub dataplane: bool,
    pub mtu: u16,
    pub links: LinkPlan,
    pub metric: Metric,
    pub explicit_routes: Vec<ExplicitRoute>,
    /// Each node's demands and constraints for placement over hosts (`[[placement]]`).
    pub placement: Vec<scheduler::NodeReq>,
    /// Flows to start once the topology is ready (`[[flows]]`, `[[workload]]`), by start.
    pub flows: Vec<flows::PlannedFlow>,
    /// Where nodes take generated flows.
    pub flow_port: u16,
    /// How often nodes report their counters (`metrics_collection_interval`).
    pub metrics_interval: std::time::Duration,
    /// Nodes in max mode (`[[nodes]] operating_mode = "max"`, `--max-nodes`), ascending:
    /// the links between two of them on one host are veth pairs the kernel forwards over.
    pub max_nodes: Vec<u32>,
    /// Where multicast groups take their addresses (`multicast_pool_base`, `_mask`).
    pub multicast_pool: proto::MulticastPool,
    /// Multicast groups made once the topology is ready (`[[groups]]`).
    pub groups: Vec<groups::PlannedGroup>,
}

/// A link (its ends, lower id first) and what carries it.
pub type LinkProtocol = ((u32, u32), proto::Transport);

impl Experiment {
    /// Puts `ids` in max mode, after checking that the topology has them, that the nodes
    /// have a dataplane, and that every link between two of them asks only what the kernel
    /// can do (a rate, a burst, a queue).
    pub fn with_max_nodes(mut self, mut ids: Vec<u32>) -> Result<Experiment, String> {
        ids.sort_unstable();
        ids.dedup();
        let n = self.topology.n_nodes();
        if let Some(bad) = ids.iter().find(|&&id| id == 0 || id > n) {
            return Err(format!(
                "max mode for node {bad}: {} has nodes 1 to {n}",
                self.topology.label
            ));
        }
        if !ids.is_empty() && !self.dataplane {
            return Err(
                "max mode needs the dataplane: remove dataplane = false (or --no-dataplane)".into(),
            );
        }
        let max = |id: u32| ids.binary_search(&id).is_ok();
        if let Some(((a, b), _)) = self
            .link_protocols
            .iter()
            .find(|((a, b), _)| max(*a) && max(*b))
        {
            return Err(format!(
                "the link {a}-{b} joins two max-mode nodes, which the kernel carries: it takes no protocol"
            ));
        }
        for &(a, b) in self.topology.edges() {
            if !(max(a) && max(b)) {
                continue;
            }
            for (from, to) in [(a, b), (b, a)] {
                if let Some(what) = self.links.params(from, to).beyond_the_kernel() {
                    return Err(format!(
                        "the link {from}->{to} joins two max-mode nodes, which the kernel carries with a rate, a burst and a queue only, but it has {what}: drop that from the link or make node {a} or {b} normal"
                    ));
                }
            }
        }
        // A max-mode node with a max-mode neighbour may forward in its kernel, which goes by
        // destination only.
        let in_kernel = |n: u32| {
            max(n)
                && self
                    .topology
                    .edges()
                    .iter()
                    .any(|&(a, b)| (a == n && max(b)) || (b == n && max(a)))
        };
        for r in &self.explicit_routes {
            if let Some(&(a, _)) = r.edges.iter().find(|&&(a, _)| in_kernel(a)) {
                return Err(format!(
                    "[[routes]] from {} to {} leaves node {a}, which is in max mode: its kernel forwards by destination only and can't follow a pinned route; route around it or make it normal",
                    r.src, r.dst
                ));
            }
        }
        self.max_nodes = ids;
        Ok(self)
    }
}

/// The prefix length of a contiguous mask.
/// The multicast pool from the seeds' keys (an address as text or as four numbers): inside
/// 224.0.0.0/4, aligned, and clear of 224.0.0.0/24, where IGMP and routing protocols live.
fn multicast_pool(
    base: Option<&toml::Value>,
    mask: Option<&toml::Value>,
) -> Result<proto::MulticastPool, String> {
    let addr = |key: &str, v: &toml::Value| -> Result<Ipv4Addr, String> {
        let bad = || format!("{key} = {v}: give an IPv4 address such as \"239.255.0.0\"");
        match v {
            toml::Value::String(s) => s.parse().map_err(|_| bad()),
            toml::Value::Array(a) if a.len() == 4 => {
                let mut o = [0u8; 4];
                for (x, v) in o.iter_mut().zip(a) {
                    *x = v
                        .as_integer()
                        .and_then(|i| u8::try_from(i).ok())
                        .ok_or_else(bad)?;
                }
                Ok(Ipv4Addr::from(o))
            }
            _ => Err(bad()),
        }
    };
    let default = proto::DEFAULT_MULTICAST_POOL;
    let base = base
        .map(|v| addr("multicast_pool_base", v))
        .transpose()?
        .unwrap_or(default.base);
    let len = match mask {
        Some(v) => {
            let m = addr("multicast_pool_mask", v)?;
            prefix_len(m)
                .ok_or_else(|| format!("multicast_pool_mask {m} is not a contiguous mask"))?
        }
        None => default.len,
    };
    let pool = proto::MulticastPool { base, len };
    if !base.is_multicast() || len < 4 {
        return Err(format!(
            "the multicast pool {pool} is not inside 224.0.0.0/4: use e.g. multicast_pool_base = \"239.255.0.0\""
        ));
    }
    if u32::from(base) & !pool.mask() != 0 {
        return Err(format!(
            "multicast_pool_base {base} has bits set beyond its mask /{len}: use {}",
            Ipv4Addr::from(u32::from(base) & pool.mask())
        ));
    }
    if pool.contains(Ipv4Addr::new(224, 0, 0, 0)) || len > 30 {
        return Err(format!(
            "the multicast pool {pool} holds 224.0.0.0/24 (link-local: IGMP) or has no room for groups: use e.g. 239.255.0.0/16"
        ));
    }
    Ok(pool)
}

fn prefix_len(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let len = bits.leading_ones();
    (bits.checked_shl(len).unwrap_or(0) == 0).then_some(len as u8)
}

#[cfg(test)]
mod tests;
