//! Configuration files: nextmini's experiment file, which is also the seeds' controller config
//! (`controller-config.toml`), and the seeds' dataplane config (`config.toml`).
//!
//! Unknown keys and bad values are errors that name the file, line and key. Keys of the seeds'
//! files that nextmini does not implement yet are accepted, so those files run unchanged, and
//! each is named in a warning.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use topology::{Topology, TopologySpec};

/// Turns a TOML error into `file:line:col: message`, one line.
fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> anyhow::Error {
    let message = e.message().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            anyhow::anyhow!("{}:{line}:{col}: {message}", path.display())
        }
        None => anyhow::anyhow!("{}: {message}", path.display()),
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
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

/// The seeds write the port as a string (`port = "5432"`); a number works too.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PortValue {
    Number(u16),
    Text(String),
}

impl DbTable {
    pub fn url(&self) -> Result<String> {
        if let Some(url) = &self.url {
            return Ok(url.clone());
        }
        let port = match &self.port {
            Some(PortValue::Number(n)) => *n,
            Some(PortValue::Text(t)) => t
                .parse()
                .with_context(|| format!("[db] port = {t:?} is not a port number"))?,
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

/// Link protocol of the seeds' config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Tcp,
    Udp,
    Quic,
}

/// Link parameters as written: `rate = "100mbit"`, `delay = "5ms"`, `jitter = "1ms"`,
/// `loss = "0.5%"`, `queue = 100` (packets), `up = false`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkTable {
    pub rate: Option<String>,
    pub delay: Option<String>,
    pub jitter: Option<String>,
    pub loss: Option<String>,
    /// Bursty loss: `{ p = 0.01, r = 0.1, loss_good = "0%", loss_bad = "50%" }`.
    pub gilbert_elliott: Option<GilbertElliottTable>,
    pub queue: Option<u32>,
    /// Queue limit in bytes instead of packets.
    pub queue_bytes: Option<u32>,
    /// `"droptail"` (default) or `"red"`.
    pub aqm: Option<String>,
    pub up: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GilbertElliottTable {
    /// Good → bad transition probability per packet.
    pub p: f64,
    /// Bad → good transition probability per packet.
    pub r: f64,
    #[serde(default)]
    pub loss_good: Option<String>,
    pub loss_bad: String,
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
    pub params: LinkTable,
}

impl LinkTable {
    /// The command line's short form: `rate=10mbit,delay=5ms,loss=1%,queue=100,jitter=1ms`.
    pub fn from_short(s: &str) -> Result<Self> {
        let mut t = LinkTable::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').with_context(|| {
                format!("--link {s}: `{part}` is not key=value (e.g. delay=5ms)")
            })?;
            let value = value.to_owned();
            match key {
                "rate" => t.rate = Some(value),
                "delay" => t.delay = Some(value),
                "jitter" => t.jitter = Some(value),
                "loss" => t.loss = Some(value),
                "queue" => {
                    t.queue =
                        Some(value.parse().with_context(|| {
                            format!("--link queue={value}: a number of packets")
                        })?)
                }
                other => {
                    bail!("--link: unknown key `{other}`: use rate, delay, jitter, loss or queue")
                }
            }
        }
        Ok(t)
    }

    /// These settings, with `other`'s where it has them.
    pub fn overridden_by(self, other: LinkTable) -> LinkTable {
        LinkTable {
            rate: other.rate.or(self.rate),
            delay: other.delay.or(self.delay),
            jitter: other.jitter.or(self.jitter),
            loss: other.loss.or(self.loss),
            gilbert_elliott: other.gilbert_elliott.or(self.gilbert_elliott),
            queue: other.queue.or(self.queue),
            queue_bytes: other.queue_bytes.or(self.queue_bytes),
            aqm: other.aqm.or(self.aqm),
            up: other.up.or(self.up),
        }
    }

    /// Applies these settings on top of `base`; errors name the table and key.
    pub fn apply(&self, base: proto::LinkSpec, table: &str) -> Result<proto::LinkSpec> {
        let mut spec = base;
        let named = |key: &str, e: linkem::UnitError| anyhow::anyhow!("{table} {key}: {e}");
        if let Some(r) = &self.rate {
            spec.rate_bps = Some(linkem::parse_rate(r).map_err(|e| named("rate", e))?);
        }
        if let Some(d) = &self.delay {
            spec.delay_ns = linkem::parse_duration(d)
                .map_err(|e| named("delay", e))?
                .as_nanos() as u64;
        }
        if let Some(j) = &self.jitter {
            spec.jitter_ns = linkem::parse_duration(j)
                .map_err(|e| named("jitter", e))?
                .as_nanos() as u64;
        }
        if let Some(l) = &self.loss {
            spec.loss = linkem::parse_percent(l).map_err(|e| named("loss", e))?;
        }
        if let Some(q) = self.queue {
            if q == 0 {
                bail!("{table} queue: must be at least 1 packet");
            }
            spec.queue_packets = q;
        }
        if let Some(b) = self.queue_bytes {
            if b < 1500 {
                bail!("{table} queue_bytes: must hold at least one 1,500-byte packet");
            }
            spec.queue_bytes = b;
        }
        match self.aqm.as_deref() {
            None => {}
            Some("droptail") => spec.red = false,
            Some("red") => spec.red = true,
            Some(other) => bail!("{table} aqm: {other:?} is not \"droptail\" or \"red\""),
        }
        if let Some(ge) = &self.gilbert_elliott {
            let prob = |key: &str, v: f64| -> Result<f64> {
                if (0.0..=1.0).contains(&v) {
                    Ok(v)
                } else {
                    bail!("{table} gilbert_elliott.{key}: {v} is not a probability within 0..1")
                }
            };
            spec.gilbert_elliott = Some(proto::GilbertElliott {
                p: prob("p", ge.p)?,
                r: prob("r", ge.r)?,
                loss_good: match &ge.loss_good {
                    Some(l) => linkem::parse_percent(l)
                        .map_err(|e| named("gilbert_elliott.loss_good", e))?,
                    None => 0.0,
                },
                loss_bad: linkem::parse_percent(&ge.loss_bad)
                    .map_err(|e| named("gilbert_elliott.loss_bad", e))?,
            });
        }
        if let Some(up) = self.up {
            spec.up = up;
        }
        Ok(spec)
    }
}

/// Node-side settings of an experiment file.
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

/// An experiment file, or the seeds' controller config: the union of both.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentFile {
    /// A name for the run (the summary and the store show it).
    pub name: Option<String>,
    pub topology: Option<TopologySpec>,
    /// Controller port (the seeds' `port`).
    pub port: Option<u16>,
    /// Overlay (TUN) network: node n gets `base_addr + n`.
    pub base_addr: Option<Ipv4Addr>,
    pub net_mask: Option<Ipv4Addr>,
    /// `tcp` carries every link over TCP; without it, links between nodes of one host are
    /// in-process channels.
    pub protocol: Option<Protocol>,
    pub db: Option<DbTable>,
    #[serde(rename = "node_settings")]
    pub nodes_table: Option<NodesTable>,
    /// Defaults for every link, both directions.
    pub links: Option<LinkTable>,
    /// Per-link overrides.
    #[serde(rename = "link")]
    pub link_overrides: Option<Vec<LinkOverride>>,
    pub routing: Option<RoutingTable>,
    pub routes: Option<Vec<RouteEntry>>,
    pub placement: Option<Vec<PlacementEntry>>,
    // The seeds' keys that nextmini accepts and does not implement yet.
    pub max_server_port: Option<toml::Value>,
    pub user_space_base_addr: Option<toml::Value>,
    pub external_base_addr: Option<toml::Value>,
    pub multicast_pool_base: Option<toml::Value>,
    pub multicast_pool_mask: Option<toml::Value>,
    pub flow_transport: Option<toml::Value>,
    pub scheduler_type: Option<toml::Value>,
    pub link_rates: Option<toml::Value>,
    pub flows: Option<toml::Value>,
    pub nodes: Option<toml::Value>,
}

/// What `up` needs, resolved from a file and flags.
#[derive(Debug, Clone)]
pub struct Experiment {
    pub name: String,
    pub topology: Topology,
    pub port: u16,
    pub overlay_base: Ipv4Addr,
    pub overlay_prefix_len: u8,
    pub force_tcp: bool,
    pub db_url: Option<String>,
    pub prefix: Option<String>,
    pub underlay_base: Option<Ipv4Addr>,
    pub no_mount: bool,
    pub link_port: u16,
    pub dataplane: bool,
    pub mtu: u16,
    pub links: controller::coordinator::LinkPlan,
    pub metric: topology::routing::Metric,
    pub explicit_routes: Vec<topology::routing::ExplicitRoute>,
}

pub const DEFAULT_PORT: u16 = 3000;
pub const DEFAULT_LINK_PORT: u16 = 8080;

fn prefix_len(mask: Ipv4Addr) -> Result<u8> {
    let bits = u32::from(mask);
    let len = bits.leading_ones();
    if bits.checked_shl(len).unwrap_or(0) != 0 {
        bail!("net_mask {mask} is not a contiguous mask");
    }
    Ok(len as u8)
}

impl ExperimentFile {
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| toml_error(path, text, &e))
    }

    pub fn load(path: &Path) -> Result<Self> {
        Self::parse(path, &read(path)?)
    }

    /// Keys that are accepted for compatibility but do nothing yet.
    pub fn ignored_keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut note = |set: bool, key: &'static str| {
            if set {
                keys.push(key);
            }
        };
        note(self.max_server_port.is_some(), "max_server_port");
        note(self.user_space_base_addr.is_some(), "user_space_base_addr");
        note(self.external_base_addr.is_some(), "external_base_addr");
        note(self.multicast_pool_base.is_some(), "multicast_pool_base");
        note(self.multicast_pool_mask.is_some(), "multicast_pool_mask");
        note(self.flow_transport.is_some(), "flow_transport");
        note(self.scheduler_type.is_some(), "scheduler_type");
        note(self.link_rates.is_some(), "[[link_rates]]");
        note(self.flows.is_some(), "[[flows]]");
        note(self.nodes.is_some(), "[[nodes]]");
        keys
    }

    fn metric(&self) -> Result<topology::routing::Metric> {
        use topology::routing::Metric;
        let routing = self.routing.clone().unwrap_or_default();
        if let Some(p) = routing.protocol.as_deref()
            && p != "shortest_path"
        {
            bail!("[routing] protocol = {p:?}: the only protocol is \"shortest_path\"");
        }
        Ok(match routing.metric.as_deref() {
            None | Some("hops") => Metric::Hops,
            Some("delay") => Metric::Delay,
            Some(m) => bail!("[routing] metric = {m:?}: use \"hops\" or \"delay\""),
        })
    }

    /// `[[routes]]`, each checked: a path or a DAG with one source and one sink, over links
    /// of the topology.
    fn explicit_routes(
        &self,
        topology: &Topology,
    ) -> Result<Vec<topology::routing::ExplicitRoute>> {
        use topology::routing::ExplicitRoute;
        let links: std::collections::HashSet<(u32, u32)> =
            topology.edges().iter().copied().collect();
        let mut routes = Vec::new();
        for (i, entry) in self.routes.iter().flatten().enumerate() {
            let route = match &entry.route {
                RouteShape::Path(nodes) => ExplicitRoute::path(nodes),
                RouteShape::Dag(edges) => {
                    ExplicitRoute::dag(edges.iter().map(|e| (e[0], e[1])).collect())
                }
            }
            .map_err(|e| anyhow::anyhow!("[[routes]] #{}: {e}", i + 1))?;
            if let Some((a, b)) = route
                .edges
                .iter()
                .find(|&&(a, b)| !links.contains(&(a.min(b), a.max(b))))
            {
                bail!(
                    "[[routes]] #{}: {a}-{b} is not a link of {}: routes follow the topology's links",
                    i + 1,
                    topology.label
                );
            }
            routes.push(route);
        }
        Ok(routes)
    }

    /// Each node's demands and constraints for the scheduler, from `[[placement]]`.
    pub fn placement(&self, topology: &Topology) -> Result<Vec<scheduler::NodeReq>> {
        let mut degree = vec![0u32; topology.n_nodes() as usize];
        for &(a, b) in topology.edges() {
            degree[a as usize - 1] += 1;
            degree[b as usize - 1] += 1;
        }
        let mut nodes: Vec<scheduler::NodeReq> = (1..=topology.n_nodes())
            .map(|id| scheduler::NodeReq::new(id, degree[id as usize - 1]))
            .collect();
        for (i, p) in self.placement.iter().flatten().enumerate() {
            let at = |e: String| anyhow::anyhow!("[[placement]] #{}: {e}", i + 1);
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
    pub fn link_plan(&self, topology: &Topology) -> Result<controller::coordinator::LinkPlan> {
        let mut plan = controller::coordinator::LinkPlan::unshaped();
        if let Some(t) = &self.links {
            plan.default = t.apply(plan.default, "[links]")?;
        }
        // An imported map: each link's delay is its length at 2×10⁸ m/s (light in fibre),
        // unless [links] sets a delay for all.
        let delay_set = self.links.as_ref().is_some_and(|t| t.delay.is_some());
        if !delay_set {
            for &(a, b) in topology.edges() {
                if let Some(km) = topology.length_km(a, b) {
                    let delay_ns = (km * 1_000.0 / 2e8 * 1e9).round() as u64;
                    for (from, to) in [(a, b), (b, a)] {
                        let mut spec = plan.spec(from, to);
                        spec.delay_ns = delay_ns;
                        plan.overrides.insert((from, to), spec);
                    }
                }
            }
        }
        for (i, o) in self.link_overrides.iter().flatten().enumerate() {
            let table = format!("[[link]] #{}", i + 1);
            let directions = match (o.between, o.from, o.to) {
                (Some([a, b]), None, None) => vec![(a, b), (b, a)],
                (None, Some(a), Some(b)) => vec![(a, b)],
                _ => bail!("{table}: give `between = [a, b]`, or `from` and `to`"),
            };
            for (a, b) in directions {
                if !topology.has_edge(a, b) {
                    bail!(
                        "{table}: there is no link between nodes {a} and {b} in {}",
                        topology.label
                    );
                }
                let base = plan.spec(a, b);
                plan.overrides.insert((a, b), o.params.apply(base, &table)?);
            }
        }
        Ok(plan)
    }

    /// Resolves with the seeds' `--n-nodes`: it sizes presets that have a node count, and
    /// must match the others.
    pub fn resolve_with_n_nodes(
        mut self,
        path: Option<&Path>,
        n: Option<u32>,
    ) -> Result<Experiment> {
        if let (Some(n), Some(spec)) = (n, self.topology.as_mut()) {
            set_n_nodes(spec, n);
        }
        let exp = self.resolve(path)?;
        if let Some(n) = n
            && exp.topology.n_nodes() != n
        {
            bail!(
                "--n-nodes {n} does not match the topology: {} has {} nodes",
                exp.topology.label,
                exp.topology.n_nodes()
            );
        }
        Ok(exp)
    }

    /// Resolves the file (at `path`, for relative topology files).
    pub fn resolve(&self, path: Option<&Path>) -> Result<Experiment> {
        let spec = self
            .topology
            .clone()
            .context("the file has no [topology] table: add one, e.g. `type = \"ring\"` and `ring_config = { n_nodes = 100 }`")?;
        let where_ = path.map_or_else(|| "[topology]".to_owned(), |p| p.display().to_string());
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
            .with_context(|| format!("{where_}: [topology]"))?;
        if let Some(Protocol::Udp | Protocol::Quic) = self.protocol {
            bail!(
                "protocol = {:?} is not supported yet: use \"tcp\", or leave it out for in-process links between nodes of one host",
                self.protocol.expect("matched")
            );
        }
        let nodes = self.nodes_table.clone().unwrap_or_default();
        let links = self.link_plan(&topology)?;
        let metric = self.metric()?;
        let explicit_routes = self.explicit_routes(&topology)?;
        Ok(Experiment {
            links,
            metric,
            explicit_routes,
            dataplane: nodes.dataplane.unwrap_or(true),
            mtu: match nodes.mtu {
                Some(m) if !(576..=9000).contains(&m) => {
                    bail!("[node_settings] mtu = {m}: use 576 to 9000")
                }
                m => m.unwrap_or(1500),
            },
            name: self.name.clone().unwrap_or_else(|| topology.label.clone()),
            topology,
            port: self.port.unwrap_or(DEFAULT_PORT),
            overlay_base: self.base_addr.unwrap_or(Ipv4Addr::new(10, 0, 0, 0)),
            overlay_prefix_len: prefix_len(self.net_mask.unwrap_or(Ipv4Addr::new(255, 255, 0, 0)))?,
            force_tcp: self.protocol == Some(Protocol::Tcp),
            db_url: self.db.as_ref().map(DbTable::url).transpose()?,
            prefix: nodes.prefix,
            underlay_base: nodes.underlay_base,
            no_mount: nodes.no_mount.unwrap_or(false),
            link_port: nodes.link_port.unwrap_or(DEFAULT_LINK_PORT),
        })
    }
}

/// `--n-nodes` sets the size of presets that have one, as the seeds' flag does.
pub fn set_n_nodes(spec: &mut topology::TopologySpec, n: u32) {
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

/// The seeds' dataplane config (`examples/namespace/config.toml`): the keys nextmini uses, and
/// every other key of that file accepted so it runs unchanged.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // most keys are only accepted, so that the seeds' files parse
pub struct DataplaneFile {
    pub controller_addr: Option<String>,
    pub n_nodes: Option<u32>,
    pub node_id_offset: Option<u32>,
    pub bridge_ip: Option<Ipv4Addr>,
    pub private_network_port: Option<PortValue>,
    pub node_id: Option<u32>,
    pub auto_add_nat: Option<bool>,
    // Accepted, not used by nextmini.
    pub controller_connect_timeout_ms: Option<toml::Value>,
    pub private_network_name: Option<toml::Value>,
    pub private_network_interface: Option<toml::Value>,
    pub private_network_addr: Option<toml::Value>,
    pub public_network_interface: Option<toml::Value>,
    pub public_network_addr: Option<toml::Value>,
    pub public_network_port: Option<toml::Value>,
    pub tun_interface_name: Option<toml::Value>,
    pub mtu: Option<toml::Value>,
    pub enable_local_interface: Option<toml::Value>,
    pub num_tun_queues: Option<toml::Value>,
    pub num_packet_processors: Option<toml::Value>,
    pub channel_capacity: Option<toml::Value>,
    pub queue_capacity: Option<toml::Value>,
    pub channel_backpressure: Option<toml::Value>,
    pub feature: Option<toml::Value>,
    pub protocol: Option<toml::Value>,
    pub quic_congestion_control: Option<toml::Value>,
    pub scheduler_type: Option<toml::Value>,
    pub scheduler_drop_strategy: Option<toml::Value>,
    pub enforce_tcp_order: Option<toml::Value>,
    pub delay_tolerance: Option<toml::Value>,
    pub backlog_tolerance: Option<toml::Value>,
    pub user_space_client_port: Option<toml::Value>,
    pub user_space_server_port: Option<toml::Value>,
    pub metrics_collection_interval: Option<toml::Value>,
    pub restart_on_disconnect: Option<toml::Value>,
    pub auto_enable_ip_forward: Option<toml::Value>,
    pub auto_add_forward_rules: Option<toml::Value>,
    pub bridge_name: Option<toml::Value>,
    pub subnet: Option<toml::Value>,
    pub interval_between_spawn: Option<toml::Value>,
    pub carrier_max_wait_ms: Option<toml::Value>,
    pub carrier_poll_interval_ms: Option<toml::Value>,
    pub child_start_delay_ms: Option<toml::Value>,
    pub handshake_timeout_ms: Option<toml::Value>,
    pub lossless_runtime_config: Option<toml::Value>,
}

impl DataplaneFile {
    pub fn load(path: &Path) -> Result<Self> {
        let text = read(path)?;
        let file: DataplaneFile = toml::from_str(&text).map_err(|e| toml_error(path, &text, &e))?;
        if file.auto_add_nat == Some(true) {
            bail!(
                "{}: auto_add_nat = true: nextmini never adds NAT (emulated traffic stays on this machine); remove the key",
                path.display()
            );
        }
        Ok(file)
    }

    /// The underlay base for a bridge address: the /22 that holds it.
    pub fn underlay_base(&self) -> Option<Ipv4Addr> {
        self.bridge_ip
            .map(|ip| Ipv4Addr::from(u32::from(ip) & !0x3ff))
    }

    /// Where nodes accept TCP links (`private_network_port`).
    pub fn link_port(&self) -> Result<Option<u16>> {
        match &self.private_network_port {
            None => Ok(None),
            Some(PortValue::Number(n)) => Ok(Some(*n)),
            Some(PortValue::Text(t)) => t
                .parse()
                .map(Some)
                .with_context(|| format!("private_network_port = {t:?} is not a port")),
        }
    }

    /// The controller's port from `controller_addr` (`ws://host:port`, `host:port`).
    pub fn controller(&self) -> Result<Option<std::net::SocketAddr>> {
        let Some(addr) = &self.controller_addr else {
            return Ok(None);
        };
        let bare = addr
            .trim_start_matches("ws://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        bare.parse()
            .map(Some)
            .with_context(|| format!("controller_addr = {addr:?} is not host:port"))
    }
}

/// The run's state file, so `down`, `status` and `exec` find the running controller.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct RunFile {
    pub api: String,
    pub prefix: String,
    pub netns_dir: PathBuf,
    pub pid: u32,
    pub name: String,
}

impl RunFile {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("run.json")
    }

    pub fn load(state_dir: &Path) -> Result<Self> {
        let path = Self::path(state_dir);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no running experiment ({} not found): start one with `nextmini up <file>`",
                path.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ExperimentFile> {
        ExperimentFile::parse(Path::new("exp.toml"), text)
    }

    #[test]
    fn the_seeds_controller_config_parses_and_resolves() {
        let text = r#"
protocol = "tcp"

[topology]
type = "ring"
ring_config = { n_nodes = 600 }

[db]
user = "pgusr"
password = "pgpwrd"
host = "172.16.8.2"
database = "nextmini"
port = "5432"
"#;
        let f = parse(text).unwrap();
        let e = f.resolve(None).unwrap();
        assert_eq!(e.topology.n_nodes(), 600);
        assert!(e.force_tcp);
        assert_eq!(
            e.db_url.as_deref(),
            Some("postgres://pgusr:pgpwrd@172.16.8.2:5432/nextmini")
        );
        assert_eq!(e.port, DEFAULT_PORT);
        assert_eq!(e.overlay_prefix_len, 16);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_line() {
        let e = parse("[topology]\ntype = \"ring\"\nring_config = { n_nodes = 4 }\nfoo = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("exp.toml:4:1:") && e.contains("foo"), "{e}");
        let e = parse("port = \"three thousand\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("exp.toml:1:8:"), "{e}");
        let e = parse("[topology]\ntype = \"ring\"\nring_config = { n_nodes = -4 }\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("exp.toml:3:"), "{e}");
    }

    #[test]
    fn unimplemented_seed_keys_are_named() {
        let f = parse("scheduler_type = \"fifo\"\n[routing]\nprotocol = \"shortest_path\"\n[topology]\nn_nodes = 3\n").unwrap();
        assert_eq!(f.ignored_keys(), vec!["scheduler_type"]);
        assert_eq!(f.resolve(None).unwrap().topology.n_links(), 0);
    }

    #[test]
    fn placement_entries_become_node_constraints() {
        let ring = "[topology]\ntype = \"ring\"\nring_config = { n_nodes = 6 }\n";
        let f = parse(&format!(
            "{ring}[[placement]]\nnodes = \"1-2\"\nschedule = \"h1\"\n[[placement]]\nnode = 3\ncoschedule = 0\ncpu = 0.5\n[[placement]]\nnode = 4\ncolocate = 3\n"
        ))
        .unwrap();
        let e = f.resolve(None).unwrap();
        let nodes = f.placement(&e.topology).unwrap();
        assert_eq!(nodes.len(), 6);
        assert_eq!(nodes[0].schedule.as_deref(), Some("h1"));
        assert_eq!(nodes[1].schedule.as_deref(), Some("h1"));
        assert_eq!((nodes[2].coschedule, nodes[2].cpu), (Some(0), 0.5));
        assert_eq!(nodes[3].colocate, Some(3));
        assert_eq!(nodes[5].links, 2, "a ring node has two links");
        let err = |extra: &str| {
            let f = parse(&format!("{ring}{extra}")).unwrap();
            let e = f.resolve(None).unwrap();
            f.placement(&e.topology).unwrap_err().to_string()
        };
        assert!(
            err("[[placement]]\nnode = 9\ncoschedule = 1\n").contains("node 9 is not in ring(6)")
        );
        assert!(err("[[placement]]\nnode = 1\ncolocate = 0\n").contains("#1"));
        assert!(err("[[placement]]\ncoschedule = 1\n").contains("give `node = N`"));
        assert!(
            err("[[placement]]\nnode = 2\nschedule = \"h\"\ncolocate = 1\n").contains("can't both")
        );
    }

    #[test]
    fn routing_metric_and_explicit_routes() {
        use topology::routing::Metric;
        let ring = "[topology]\ntype = \"ring\"\nring_config = { n_nodes = 6 }\n";
        let e = parse(&format!(
            "{ring}[routing]\nprotocol = \"shortest_path\"\nmetric = \"delay\"\n[[routes]]\nroute = [1, 6, 5, 4]\n[[routes]]\nroute = [[1, 2], [2, 3], [1, 6], [6, 5], [5, 4], [3, 4]]\n"
        ))
        .unwrap()
        .resolve(None)
        .unwrap();
        assert_eq!(e.metric, Metric::Delay);
        assert_eq!(e.explicit_routes.len(), 2);
        assert_eq!((e.explicit_routes[1].src, e.explicit_routes[1].dst), (1, 4));
        let err = |extra: &str| {
            parse(&format!("{ring}{extra}"))
                .unwrap()
                .resolve(None)
                .unwrap_err()
                .to_string()
        };
        assert!(err("[routing]\nmetric = \"bandwidth\"\n").contains("use \"hops\" or \"delay\""));
        assert!(err("[routing]\nprotocol = \"ospf\"\n").contains("shortest_path"));
        let e = err("[[routes]]\nroute = [1, 2]\n[[routes]]\nroute = [1, 3]\n");
        assert!(e.contains("#2") && e.contains("1-3 is not a link"), "{e}");
        let e = err("[[routes]]\nroute = [[1, 2], [1, 6]]\n");
        assert!(e.contains("#1") && e.contains("multicast"), "{e}");
    }

    #[test]
    fn unsupported_protocols_and_missing_topology_are_errors() {
        let f = parse("protocol = \"quic\"\n[topology]\nn_nodes = 3\n").unwrap();
        assert!(
            f.resolve(None)
                .unwrap_err()
                .to_string()
                .contains("not supported yet")
        );
        let f = parse("port = 3001\n").unwrap();
        assert!(
            f.resolve(None)
                .unwrap_err()
                .to_string()
                .contains("no [topology]")
        );
        let f = parse("[topology]\ntype = \"hypercube\"\n").unwrap();
        let e = format!("{:#}", f.resolve(None).unwrap_err());
        assert!(e.contains("unknown topology type `hypercube`"), "{e}");
    }

    #[test]
    fn links_are_configured_with_units_and_overrides() {
        let f = parse(
            "[topology]\ntype = \"line\"\nline_config = { n_nodes = 3 }\n[links]\nrate = \"100mbit\"\ndelay = \"5ms\"\nloss = \"1%\"\nqueue = 50\n[[link]]\nbetween = [2, 3]\ndelay = \"20ms\"\n[[link]]\nfrom = 1\nto = 2\nup = false\n",
        )
        .unwrap();
        let e = f.resolve(None).unwrap();
        let s12 = e.links.spec(1, 2);
        let s21 = e.links.spec(2, 1);
        assert_eq!(
            (s12.rate_bps, s12.delay_ns, s12.up),
            (Some(100_000_000), 5_000_000, false)
        );
        assert!(s21.up);
        assert_eq!(s21.queue_packets, 50);
        assert!((s21.loss - 0.01).abs() < 1e-12);
        assert_eq!(e.links.spec(3, 2).delay_ns, 20_000_000);
        let bad =
            parse("[topology]\nn_nodes = 2\nedges = [[1, 2]]\n[links]\nrate = \"fast\"\n").unwrap();
        let msg = bad.resolve(None).unwrap_err().to_string();
        assert!(
            msg.contains("[links] rate") && msg.contains("100mbit"),
            "{msg}"
        );
        let missing =
            parse("[topology]\nn_nodes = 3\nedges = [[1, 2]]\n[[link]]\nbetween = [1, 3]\n")
                .unwrap();
        assert!(
            missing
                .resolve(None)
                .unwrap_err()
                .to_string()
                .contains("no link between nodes 1 and 3")
        );
    }

    #[test]
    fn imported_maps_get_delays_from_their_lengths() {
        let dir = std::env::temp_dir().join(format!("nm-geo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("map.json"),
            r#"{"nodes": [{"id": "a"}, {"id": "b"}, {"id": "c"}], "links": [{"source": "a", "target": "b", "dist": 1000}, {"source": "b", "target": "c", "dist": 200}]}"#,
        )
        .unwrap();
        let path = dir.join("exp.toml");
        std::fs::write(&path, "[topology]\ntype = \"file\"\nfile = \"map.json\"\n").unwrap();
        let e = ExperimentFile::load(&path)
            .unwrap()
            .resolve(Some(&path))
            .unwrap();
        // 1,000 km at 2×10⁸ m/s is 5 ms; 200 km is 1 ms.
        assert_eq!(e.links.spec(1, 2).delay_ns, 5_000_000);
        assert_eq!(e.links.spec(3, 2).delay_ns, 1_000_000);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_seeds_dataplane_config_parses() {
        let dir = std::env::temp_dir().join(format!("nm-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        std::fs::write(
            &path,
            "num_tun_queues = 1\nnum_packet_processors = 1\nchannel_capacity = 4000\nqueue_capacity = 3000\nfeature = \"concurrent\"\ncontroller_addr = \"127.0.0.1:3000\"\nn_nodes = 800\nnode_id_offset = 0\nbridge_ip = \"172.16.8.1\"\n",
        )
        .unwrap();
        let f = DataplaneFile::load(&path).unwrap();
        assert_eq!(f.n_nodes, Some(800));
        assert_eq!(f.underlay_base(), Some(Ipv4Addr::new(172, 16, 8, 0)));
        assert_eq!(f.controller().unwrap().unwrap().port(), 3000);
        std::fs::write(&path, "auto_add_nat = true\n").unwrap();
        assert!(
            DataplaneFile::load(&path)
                .unwrap_err()
                .to_string()
                .contains("never adds NAT")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
