//! The experiment file as written, and how it resolves into an [`Experiment`].

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::Path;

use linkem::LinkChange;
use serde::Deserialize;
use toml::Spanned;
use topology::routing::{ExplicitRoute, Metric};
use topology::{Topology, TopologySpec};

use crate::seeds::{self, Note};
use crate::{
    ConfigError, DEFAULT_LINK_PORT, DEFAULT_PORT, Experiment, LinkPlan, at, prefix_len, read,
    toml_error,
};

/// An experiment file, or the seeds' controller config: the union of both.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentFile {
    /// Where the file came from, for messages (a path, or `--topo ring,100`).
    #[serde(skip)]
    pub source: String,
    /// A name for the run (the summary and the store show it).
    pub name: Option<String>,
    pub topology: Option<TopologySpec>,
    /// Controller port (the seeds' `port`).
    pub port: Option<u16>,
    /// Overlay (TUN) network: node n gets `base_addr + n`.
    pub base_addr: Option<Ipv4Addr>,
    pub net_mask: Option<Ipv4Addr>,
    /// `"tcp"` carries every link over TCP; without it, links between nodes of one host are
    /// in-process channels.
    pub protocol: Option<Spanned<String>>,
    pub db: Option<DbTable>,
    pub node_settings: Option<NodesTable>,
    /// Defaults for every link, both directions.
    pub links: Option<LinkChange>,
    /// Per-link overrides.
    #[serde(rename = "link")]
    pub link_overrides: Option<Vec<LinkOverride>>,
    pub routing: Option<RoutingTable>,
    pub routes: Option<Vec<RouteEntry>>,
    pub placement: Option<Vec<PlacementEntry>>,
    // The seeds' keys with no setting of nextmini's own, kept with their place in the file so
    // that a refusal can name its line: `seeds::SEED_KEYS` says what happens to each.
    pub max_server_port: Option<Spanned<toml::Value>>,
    pub user_space_base_addr: Option<Spanned<toml::Value>>,
    pub external_base_addr: Option<Spanned<toml::Value>>,
    pub multicast_pool_base: Option<Spanned<toml::Value>>,
    pub multicast_pool_mask: Option<Spanned<toml::Value>>,
    pub flow_transport: Option<Spanned<String>>,
    /// `"fifo"` or `"wrr"`: how every link direction picks its next packet.
    pub scheduler_type: Option<Spanned<String>>,
    /// The seeds' token buckets per link direction.
    pub link_rates: Option<Vec<LinkRateEntry>>,
    pub flows: Option<Spanned<toml::Value>>,
    pub nodes: Option<Spanned<Vec<SeedsNode>>>,
}

/// `[[link_rates]]` of the seeds' controller config: the rate and token bucket of the
/// direction `src_node_id` → `dst_node_id`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkRateEntry {
    pub src_node_id: u32,
    pub dst_node_id: u32,
    /// Bytes per second (the seeds' unit), or a rate as tc writes it (`"8mbit"`).
    pub rate: BytesPerSecond,
    /// The token bucket's depth in bytes.
    pub bucket_size: Option<u32>,
}

/// A rate written as a number of bytes per second (the seeds' way) or with units.
#[derive(Debug, Clone, Copy)]
pub struct BytesPerSecond(pub linkem::Rate);

impl<'de> Deserialize<'de> for BytesPerSecond {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Number(u64),
            Text(String),
        }
        let rate = match Repr::deserialize(d)? {
            Repr::Number(n) => n
                .checked_mul(8)
                .and_then(linkem::Rate::from_bps)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!("rate = {n}: give a rate above 0 bytes/s"))
                })?,
            Repr::Text(t) => t.parse().map_err(serde::de::Error::custom)?,
        };
        Ok(BytesPerSecond(rate))
    }
}

/// `[[nodes]]` of the seeds' controller config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedsNode {
    pub node_id: u32,
    pub operating_mode: Option<String>,
}

/// The `[db]` table of the seeds' controller config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbTable {
    pub user: Option<String>,
    pub password: Option<String>,
    pub host: Option<String>,
    pub database: Option<String>,
    pub port: Option<PortValue>,
    /// Or a whole URL: `sqlite:///path` or `postgres://…`.
    pub url: Option<String>,
}

/// The seeds write ports as strings (`port = "5432"`); a number works too.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PortValue {
    Number(u16),
    Text(String),
}

impl PortValue {
    pub fn port(&self, key: &str) -> Result<u16, String> {
        match self {
            PortValue::Number(n) => Ok(*n),
            PortValue::Text(t) => t
                .parse()
                .map_err(|_| format!("{key} = {t:?} is not a port number")),
        }
    }
}

impl DbTable {
    /// The store's URL.
    pub fn url(&self) -> Result<String, String> {
        if let Some(url) = &self.url {
            return Ok(url.clone());
        }
        let port = match &self.port {
            Some(p) => p.port("[db] port")?,
            None => 5432,
        };
        let user = self.user.as_deref().unwrap_or("postgres");
        let auth = match &self.password {
            Some(p) => format!("{user}:{p}"),
            None => user.to_owned(),
        };
        Ok(format!(
            "postgres://{auth}@{}:{port}/{}",
            self.host.as_deref().unwrap_or("127.0.0.1"),
            self.database.as_deref().unwrap_or("nextmini")
        ))
    }
}

/// `[routing]`: how routes are computed. The seeds' `protocol = "shortest_path"` is the only
/// protocol; `metric` chooses what is shortest.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingTable {
    pub protocol: Option<String>,
    /// `"hops"` (default) or `"delay"` (the links' configured one-way delays).
    pub metric: Option<String>,
}

/// `[[routes]]`: `route = [1, 2, 3]` (a path) or `route = [[1, 2], [2, 4], [1, 3], [3, 4]]`
/// (the edges of a DAG from one source to one sink), as in the seeds' system.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteEntry {
    pub route: RouteShape,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RouteShape {
    Path(Vec<u32>),
    Dag(Vec<[u32; 2]>),
}

/// `[[placement]]`: where nodes may go when an experiment spreads over hosts (minimega's
/// schedule, coschedule and colocate). `nodes = "5-8"` or `node = 5`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementEntry {
    pub node: Option<u32>,
    pub nodes: Option<String>,
    /// On this host.
    pub schedule: Option<String>,
    /// With at most this many other nodes on its host (0: alone).
    pub coschedule: Option<u32>,
    /// Wherever this node goes.
    pub colocate: Option<u32>,
    /// CPU share of each node (1.0 is a core) [default 0.01].
    pub cpu: Option<f64>,
    /// Memory estimate of each node in MiB [default 0.5].
    pub mem_mib: Option<f64>,
}

/// `[[link]]`: parameters for the link between two nodes, both directions, or one direction
/// with `from`/`to` instead of `between`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkOverride {
    pub between: Option<[u32; 2]>,
    pub from: Option<u32>,
    pub to: Option<u32>,
    #[serde(flatten)]
    pub change: LinkChange,
}

/// `[node_settings]`: how nodes are made on a host.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodesTable {
    /// Prefix of everything the run creates on the host.
    pub prefix: Option<String>,
    /// First underlay subnet (a /22 boundary).
    pub underlay_base: Option<Ipv4Addr>,
    /// Keep namespaces by fd only (no /run/netns mount).
    pub no_mount: Option<bool>,
    /// Port where nodes accept TCP links.
    pub link_port: Option<u16>,
    /// Give every node a TUN device and forward packets (default true).
    pub dataplane: Option<bool>,
    /// MTU of the nodes' TUN devices (default 1500).
    pub mtu: Option<u16>,
}

impl ExperimentFile {
    /// Parses an experiment file's text; `file` names it in errors. The seeds' keys are
    /// checked here: a refused one is an error at its line.
    pub fn parse(file: &str, text: &str) -> Result<Self, ConfigError> {
        let mut f: ExperimentFile = toml::from_str(text).map_err(|e| toml_error(file, text, &e))?;
        f.source = file.to_owned();
        if let Err((offset, message)) = seeds::check_controller(&f) {
            return Err(at(file, text, offset, message));
        }
        Ok(f)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&path.display().to_string(), &read(path)?)
    }

    /// An experiment of a preset given on the command line (`--topo ring,100`).
    pub fn from_topo(short: &str) -> Result<Self, ConfigError> {
        let source = format!("--topo {short}");
        let spec = TopologySpec::from_short(short)
            .map_err(|e| ConfigError::meaning(&source, e.to_string()))?;
        Ok(ExperimentFile {
            source,
            topology: Some(spec),
            ..Default::default()
        })
    }

    /// What the file's seeds' keys mean for nextmini, for the log (accepted keys and why).
    pub fn notes(&self) -> Vec<Note> {
        seeds::controller_notes(self)
    }

    /// Adds `--link` on top of the file's `[links]`.
    pub fn set_link_defaults(&mut self, change: LinkChange) {
        self.links = Some(match self.links.take() {
            Some(base) => base.then(change),
            None => change,
        });
    }

    fn metric(&self) -> Result<Metric, String> {
        let routing = self.routing.clone().unwrap_or_default();
        if let Some(p) = routing.protocol.as_deref()
            && p != "shortest_path"
        {
            return Err(format!(
                "[routing] protocol = {p:?}: the only protocol is \"shortest_path\""
            ));
        }
        Ok(match routing.metric.as_deref() {
            None | Some("hops") => Metric::Hops,
            Some("delay") => Metric::Delay,
            Some(m) => {
                return Err(format!(
                    "[routing] metric = {m:?}: use \"hops\" or \"delay\""
                ));
            }
        })
    }

    /// `[[routes]]`, each checked: a path or a DAG with one source and one sink, over links
    /// of the topology.
    fn explicit_routes(&self, topology: &Topology) -> Result<Vec<ExplicitRoute>, String> {
        let links: HashSet<(u32, u32)> = topology.edges().iter().copied().collect();
        let mut routes = Vec::new();
        for (i, entry) in self.routes.iter().flatten().enumerate() {
            let route = match &entry.route {
                RouteShape::Path(nodes) => ExplicitRoute::path(nodes),
                RouteShape::Dag(edges) => {
                    ExplicitRoute::dag(edges.iter().map(|e| (e[0], e[1])).collect())
                }
            }
            .map_err(|e| format!("[[routes]] #{}: {e}", i + 1))?;
            if let Some((a, b)) = route
                .edges
                .iter()
                .find(|&&(a, b)| !links.contains(&(a.min(b), a.max(b))))
            {
                return Err(format!(
                    "[[routes]] #{}: {a}-{b} is not a link of {}: routes follow the topology's links",
                    i + 1,
                    topology.label
                ));
            }
            routes.push(route);
        }
        Ok(routes)
    }

    /// Each node's demands and constraints for the scheduler, from `[[placement]]`.
    fn placement(&self, topology: &Topology) -> Result<Vec<scheduler::NodeReq>, String> {
        let mut degree = vec![0u32; topology.n_nodes() as usize];
        for &(a, b) in topology.edges() {
            degree[a as usize - 1] += 1;
            degree[b as usize - 1] += 1;
        }
        let mut nodes: Vec<scheduler::NodeReq> = (1..=topology.n_nodes())
            .map(|id| scheduler::NodeReq::new(id, degree[id as usize - 1]))
            .collect();
        for (i, p) in self.placement.iter().flatten().enumerate() {
            let at = |e: String| format!("[[placement]] #{}: {e}", i + 1);
            let ids = match (&p.node, &p.nodes) {
                (Some(n), None) => vec![*n],
                (None, Some(list)) => topology::ids::parse_ids(list).map_err(at)?,
                _ => return Err(at("give `node = N` or `nodes = \"1-4\"`".into())),
            };
            if p.schedule.is_some() && p.colocate.is_some() {
                return Err(at("schedule and colocate can't both be set (colocated nodes go where their node goes)".into()));
            }
            for id in ids {
                let Some(n) = nodes.get_mut((id as usize).wrapping_sub(1)) else {
                    return Err(at(format!("node {id} is not in {}", topology.label)));
                };
                if let Some(h) = &p.schedule {
                    n.schedule = Some(h.clone());
                }
                if let Some(c) = p.coschedule {
                    n.coschedule = Some(c);
                }
                if let Some(c) = p.colocate {
                    if c == 0 || c > topology.n_nodes() {
                        return Err(at(format!(
                            "colocate = {c} is not a node of {}",
                            topology.label
                        )));
                    }
                    n.colocate = Some(c);
                }
                if let Some(c) = p.cpu {
                    n.cpu = c;
                }
                if let Some(m) = p.mem_mib {
                    n.mem_mib = m;
                }
            }
        }
        Ok(nodes)
    }

    /// The link plan: `[links]` defaults, then each `[[link]]` on top.
    fn link_plan(&self, topology: &Topology) -> Result<LinkPlan, String> {
        let mut plan = LinkPlan::unshaped();
        if self
            .scheduler_type
            .as_ref()
            .is_some_and(|s| s.get_ref() == "wrr")
        {
            plan.default.scheduler = linkem::Scheduler::Wrr;
        }
        if let Some(c) = &self.links {
            plan.default = c.apply(plan.default);
        }
        // An imported map: each link's delay is its length at 2×10⁸ m/s (light in fibre),
        // unless [links] sets a delay for all.
        let delay_set = self.links.as_ref().is_some_and(|c| c.delay.is_some());
        if !delay_set {
            for &(a, b) in topology.edges() {
                if let Some(km) = topology.length_km(a, b) {
                    let nanos = (km * 1_000.0 / 2e8 * 1e9).round() as u64;
                    let delay = linkem::Span::new(std::time::Duration::from_nanos(nanos))
                        .ok_or_else(|| {
                            format!("link {a}-{b} is {km} km long: more than an hour of delay")
                        })?;
                    let change = LinkChange {
                        delay: Some(delay),
                        ..Default::default()
                    };
                    plan.change(a, b, &change);
                    plan.change(b, a, &change);
                }
            }
        }
        for (i, o) in self.link_overrides.iter().flatten().enumerate() {
            let table = format!("[[link]] #{}", i + 1);
            let directions = match (o.between, o.from, o.to) {
                (Some([a, b]), None, None) => vec![(a, b), (b, a)],
                (None, Some(a), Some(b)) => vec![(a, b)],
                _ => {
                    return Err(format!(
                        "{table}: give `between = [a, b]`, or `from` and `to`"
                    ));
                }
            };
            for (a, b) in directions {
                if !topology.has_edge(a, b) {
                    return Err(format!(
                        "{table}: there is no link between nodes {a} and {b} in {}",
                        topology.label
                    ));
                }
                plan.change(a, b, &o.change);
            }
        }
        for (i, r) in self.link_rates.iter().flatten().enumerate() {
            let (a, b) = (r.src_node_id, r.dst_node_id);
            if !topology.has_edge(a, b) {
                return Err(format!(
                    "[[link_rates]] #{}: there is no link between nodes {a} and {b} in {}",
                    i + 1,
                    topology.label
                ));
            }
            let change = LinkChange {
                rate: Some(r.rate.0),
                burst: r.bucket_size,
                ..Default::default()
            };
            plan.change(a, b, &change);
        }
        Ok(plan)
    }

    /// Resolves with the seeds' `--n-nodes`: it sizes presets that have a node count, and
    /// must match the others.
    pub fn resolve_with_n_nodes(
        mut self,
        path: Option<&Path>,
        n: Option<u32>,
    ) -> Result<Experiment, ConfigError> {
        if let (Some(n), Some(spec)) = (n, self.topology.as_mut()) {
            set_n_nodes(spec, n);
        }
        let exp = self.resolve(path)?;
        if let Some(n) = n
            && exp.topology.n_nodes() != n
        {
            return Err(ConfigError::meaning(
                &self.source,
                format!(
                    "--n-nodes {n} does not match the topology: {} has {} nodes",
                    exp.topology.label,
                    exp.topology.n_nodes()
                ),
            ));
        }
        Ok(exp)
    }

    /// Resolves the file (at `path`, for relative topology files).
    pub fn resolve(&self, path: Option<&Path>) -> Result<Experiment, ConfigError> {
        let meaning = |m: String| ConfigError::meaning(&self.source, m);
        let spec = self.topology.clone().ok_or_else(|| {
            meaning("the file has no [topology] table: add one, e.g. `type = \"ring\"` and `ring_config = { n_nodes = 100 }`".into())
        })?;
        let file_text = match (&spec.kind, &spec.file) {
            (Some(kind), Some(file)) if kind == "file" => {
                let full = match path.and_then(Path::parent) {
                    Some(dir) if file.is_relative() => dir.join(file),
                    _ => file.clone(),
                };
                Some(read(&full)?)
            }
            _ => None,
        };
        let topology = spec
            .build(file_text.as_deref())
            .map_err(|e| meaning(format!("[topology]: {e}")))?;
        // Any other protocol was refused when the file was read.
        let force_tcp = self.protocol.is_some();
        let nodes = self.node_settings.clone().unwrap_or_default();
        let links = self.link_plan(&topology).map_err(meaning)?;
        let metric = self.metric().map_err(meaning)?;
        let explicit_routes = self.explicit_routes(&topology).map_err(meaning)?;
        let placement = self.placement(&topology).map_err(meaning)?;
        let mtu = match nodes.mtu {
            Some(m) if !(576..=9000).contains(&m) => {
                return Err(meaning(format!(
                    "[node_settings] mtu = {m}: use 576 to 9000"
                )));
            }
            m => m.unwrap_or(1500),
        };
        let mask = self.net_mask.unwrap_or(Ipv4Addr::new(255, 255, 0, 0));
        let overlay_prefix_len = prefix_len(mask)
            .ok_or_else(|| meaning(format!("net_mask {mask} is not a contiguous mask")))?;
        Ok(Experiment {
            links,
            metric,
            explicit_routes,
            placement,
            dataplane: nodes.dataplane.unwrap_or(true),
            mtu,
            name: self.name.clone().unwrap_or_else(|| topology.label.clone()),
            topology,
            port: self.port.unwrap_or(DEFAULT_PORT),
            overlay_base: self.base_addr.unwrap_or(Ipv4Addr::new(10, 0, 0, 0)),
            overlay_prefix_len,
            force_tcp,
            db_url: self
                .db
                .as_ref()
                .map(DbTable::url)
                .transpose()
                .map_err(meaning)?,
            prefix: nodes.prefix,
            underlay_base: nodes.underlay_base,
            no_mount: nodes.no_mount.unwrap_or(false),
            link_port: nodes.link_port.unwrap_or(DEFAULT_LINK_PORT),
        })
    }
}

/// `--n-nodes` sets the size of presets that have one, as the seeds' flag does.
pub fn set_n_nodes(spec: &mut TopologySpec, n: u32) {
    for c in [
        &mut spec.ring_config,
        &mut spec.line_config,
        &mut spec.star_config,
        &mut spec.full_mesh_config,
    ]
    .into_iter()
    .flatten()
    {
        c.n_nodes = n;
    }
    if let Some(r) = spec.random_config.as_mut() {
        r.n_nodes = n;
    }
    if spec.kind.is_none() || spec.n_nodes.is_some() {
        spec.n_nodes = Some(n);
    }
}
