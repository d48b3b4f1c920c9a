//! `[[workload]]`: flows generated the way datacenter studies generate them. Each sending node
//! starts flows as a Poisson process whose rate makes its offered load `load` × `rate`; sizes
//! come from a distribution, destinations from a pattern; a seed makes the whole workload the
//! same every time.
//!
//! ```toml
//! [[workload]]
//! load = 0.5                 # of `rate`, per sending node (for incast: at the receiver)
//! rate = "1gbit"             # the rate the load is a fraction of (a host's link)
//! sizes = "web_search"       # or "data_mining", { fixed = "1MB" }, { uniform = ["10KB", "1MB"] },
//!                            #    { lognormal = { median = "100KB", sigma = 1.5 } }
//! endpoints = "all_to_all"   # or "permutation", { incast = { to = 1 } }, { list = [[1, 2], [3, 4]] }
//! nodes = "21-36"            # the nodes that take part (default: all)
//! duration = "10s"           # flows start during this long
//! start = "1s"               # after the topology is ready
//! seed = 1
//! ```
//!
//! The named distributions are the two used throughout the datacenter transport literature:
//! web search (from DCTCP's measurements) and data mining (from VL2's), as pFabric's
//! simulations define them, in packets of 1,460 bytes; sizes are drawn by linear interpolation
//! of the CDF.

use std::time::Duration;

use linkem::{Bytes, Rate, Span};
use proto::{FlowLen, FlowSpec, FlowTransport};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use topology::Topology;

use crate::flows::PlannedFlow;

/// The payload of a pFabric packet.
const MSS: f64 = 1460.0;

/// Web search (DCTCP): flow size in packets, cumulative probability.
const WEB_SEARCH: &[(f64, f64)] = &[
    (6.0, 0.0),
    (6.0, 0.15),
    (13.0, 0.2),
    (19.0, 0.3),
    (33.0, 0.4),
    (53.0, 0.53),
    (133.0, 0.6),
    (667.0, 0.7),
    (1333.0, 0.8),
    (3333.0, 0.9),
    (6667.0, 0.97),
    (20000.0, 1.0),
];

/// Data mining (VL2): flow size in packets, cumulative probability.
const DATA_MINING: &[(f64, f64)] = &[
    (1.0, 0.0),
    (1.0, 0.5),
    (2.0, 0.6),
    (3.0, 0.7),
    (7.0, 0.8),
    (267.0, 0.9),
    (2107.0, 0.95),
    (66667.0, 0.99),
    (666667.0, 1.0),
];

/// At most this many flows from one workload, unless it says otherwise.
const MAX_FLOWS: usize = 100_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub load: f64,
    pub rate: Rate,
    pub sizes: Sizes,
    pub endpoints: Endpoints,
    pub nodes: Option<String>,
    pub duration: Span,
    pub start: Option<Span>,
    #[serde(default)]
    pub seed: u64,
    pub cc: Option<String>,
    pub flow_weight: Option<u32>,
    pub flow_rate: Option<u64>,
    pub max_flows: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Sizes {
    Named(String),
    Fixed { fixed: Bytes },
    Uniform { uniform: [Bytes; 2] },
    LogNormal { lognormal: LogNormal },
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogNormal {
    pub median: Bytes,
    pub sigma: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Endpoints {
    Named(String),
    Incast { incast: Incast },
    List { list: Vec<[u32; 2]> },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incast {
    pub to: u32,
    /// The senders (default: every node taking part but `to`).
    pub from: Option<String>,
}

/// A flow-size distribution, ready to draw from.
#[derive(Debug, Clone)]
pub enum SizeDist {
    Cdf(Vec<(f64, f64)>),
    Fixed(u64),
    Uniform(u64, u64),
    LogNormal { mu: f64, sigma: f64 },
}

impl SizeDist {
    pub fn from_sizes(sizes: &Sizes) -> Result<SizeDist, String> {
        let cdf = |points: &[(f64, f64)]| {
            SizeDist::Cdf(points.iter().map(|&(p, c)| (p * MSS, c)).collect())
        };
        Ok(match sizes {
            Sizes::Named(n) if n == "web_search" => cdf(WEB_SEARCH),
            Sizes::Named(n) if n == "data_mining" => cdf(DATA_MINING),
            Sizes::Named(n) => {
                return Err(format!(
                    "sizes = {n:?}: use \"web_search\", \"data_mining\", {{ fixed = … }}, {{ uniform = […, …] }} or {{ lognormal = {{ median = …, sigma = … }} }}"
                ));
            }
            Sizes::Fixed { fixed } if fixed.0 > 0 => SizeDist::Fixed(fixed.0),
            Sizes::Uniform { uniform: [a, b] } if 0 < a.0 && a.0 <= b.0 => {
                SizeDist::Uniform(a.0, b.0)
            }
            Sizes::LogNormal { lognormal } if lognormal.median.0 > 0 && lognormal.sigma >= 0.0 => {
                SizeDist::LogNormal {
                    mu: (lognormal.median.0 as f64).ln(),
                    sigma: lognormal.sigma,
                }
            }
            _ => return Err("sizes: give sizes above 0 (and uniform's low end first)".into()),
        })
    }

    /// The mean size in bytes.
    pub fn mean(&self) -> f64 {
        match self {
            SizeDist::Cdf(points) => points
                .windows(2)
                .map(|w| (w[1].1 - w[0].1) * (w[0].0 + w[1].0) / 2.0)
                .sum(),
            SizeDist::Fixed(b) => *b as f64,
            SizeDist::Uniform(a, b) => (*a as f64 + *b as f64) / 2.0,
            SizeDist::LogNormal { mu, sigma } => (mu + sigma * sigma / 2.0).exp(),
        }
    }

    pub fn sample(&self, rng: &mut ChaCha8Rng) -> u64 {
        let bytes = match self {
            SizeDist::Cdf(points) => {
                let u: f64 = rng.random();
                let i = points
                    .iter()
                    .position(|&(_, c)| c >= u)
                    .unwrap_or(points.len() - 1)
                    .max(1);
                let ((x0, c0), (x1, c1)) = (points[i - 1], points[i]);
                if c1 > c0 {
                    x0 + (x1 - x0) * (u - c0) / (c1 - c0)
                } else {
                    x1
                }
            }
            SizeDist::Fixed(b) => *b as f64,
            SizeDist::Uniform(a, b) => rng.random_range(*a as f64..=*b as f64),
            SizeDist::LogNormal { mu, sigma } => (mu + sigma * standard_normal(rng)).exp(),
        };
        bytes.round().max(1.0) as u64
    }
}

/// One draw of N(0, 1) (Box–Muller).
fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

impl Workload {
    /// The flows this workload starts.
    pub fn generate(&self, topology: &Topology) -> Result<Vec<PlannedFlow>, String> {
        if !(self.load > 0.0 && self.load <= 10.0) {
            return Err(format!("load = {}: give a fraction above 0", self.load));
        }
        let sizes = SizeDist::from_sizes(&self.sizes)?;
        let n = topology.n_nodes();
        let in_topology = |ids: Vec<u32>, what: &str| -> Result<Vec<u32>, String> {
            match ids.iter().find(|&&i| i == 0 || i > n) {
                Some(bad) => Err(format!("{what}: node {bad} is not in {}", topology.label)),
                None => Ok(ids),
            }
        };
        let nodes = match &self.nodes {
            Some(list) => in_topology(topology::ids::parse_ids(list)?, "nodes")?,
            None => (1..=n).collect(),
        };
        if nodes.len() < 2 {
            return Err("a workload needs at least two nodes".into());
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        // Each stream: its sender(s) and receiver(s); arrivals at `per_stream` flows/s.
        let flows_per_sec = self.load * self.rate.bytes_per_sec() as f64 / sizes.mean();
        let streams: Vec<(Vec<u32>, Vec<u32>)> = match &self.endpoints {
            Endpoints::Named(e) if e == "all_to_all" => nodes
                .iter()
                .map(|&s| (vec![s], nodes.iter().copied().filter(|&d| d != s).collect()))
                .collect(),
            Endpoints::Named(e) if e == "permutation" => {
                // A random derangement: a shuffle with every node moved.
                let mut to = nodes.clone();
                loop {
                    for i in (1..to.len()).rev() {
                        let j = rng.random_range(0..=i);
                        to.swap(i, j);
                    }
                    if nodes.iter().zip(&to).all(|(a, b)| a != b) {
                        break;
                    }
                }
                nodes
                    .iter()
                    .zip(to)
                    .map(|(&s, d)| (vec![s], vec![d]))
                    .collect()
            }
            Endpoints::Named(e) => {
                return Err(format!(
                    "endpoints = {e:?}: use \"all_to_all\", \"permutation\", {{ incast = {{ to = N }} }} or {{ list = [[a, b], …] }}"
                ));
            }
            Endpoints::Incast { incast } => {
                let to = in_topology(vec![incast.to], "incast to")?[0];
                let from = match &incast.from {
                    Some(list) => in_topology(topology::ids::parse_ids(list)?, "incast from")?,
                    None => nodes.iter().copied().filter(|&s| s != to).collect(),
                };
                if from.is_empty() || from.contains(&to) {
                    return Err("incast: give senders other than the receiver".into());
                }
                vec![(from, vec![to])]
            }
            Endpoints::List { list } => list
                .iter()
                .map(|&[s, d]| {
                    let ids = in_topology(vec![s, d], "list")?;
                    if s == d {
                        return Err(format!("list: a flow from node {s} to itself"));
                    }
                    Ok((vec![ids[0]], vec![ids[1]]))
                })
                .collect::<Result<_, String>>()?,
        };
        let duration = self.duration.duration().as_secs_f64();
        let offset = self.start.map_or(Duration::ZERO, Span::duration);
        let limit = self.max_flows.unwrap_or(MAX_FLOWS);
        let mut flows = Vec::new();
        for (senders, receivers) in &streams {
            let mut t = 0.0;
            loop {
                t += -(1.0 - rng.random::<f64>()).ln() / flows_per_sec;
                if t >= duration {
                    break;
                }
                let src = senders[rng.random_range(0..senders.len())];
                let dst = receivers[rng.random_range(0..receivers.len())];
                let mut spec = FlowSpec::bytes(sizes.sample(&mut rng));
                spec.cc = self.cc.clone();
                spec.flow_weight = self.flow_weight;
                spec.flow_rate = self.flow_rate;
                spec.transport = FlowTransport::Tcp;
                spec.check()?;
                flows.push(PlannedFlow {
                    src,
                    dst,
                    start: offset + Duration::from_secs_f64(t),
                    spec,
                });
                if flows.len() > limit {
                    return Err(format!(
                        "it would start more than {limit} flows: lower the load or the duration, or raise max_flows"
                    ));
                }
            }
        }
        flows.sort_by_key(|f| f.start);
        Ok(flows)
    }
}

/// The total bytes of flows given in bytes.
pub fn total_bytes(flows: &[PlannedFlow]) -> u64 {
    flows
        .iter()
        .map(|f| match f.spec.flow_len {
            FlowLen::Bytes(b) => b,
            FlowLen::Duration(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(toml_text: &str) -> Workload {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn named_distributions_have_the_published_means_and_draw_them() {
        let web = SizeDist::from_sizes(&Sizes::Named("web_search".into())).unwrap();
        // 1,141 packets of 1,460 bytes on average.
        assert!(
            (web.mean() / 1_665_830.0 - 1.0).abs() < 0.001,
            "{}",
            web.mean()
        );
        let mining = SizeDist::from_sizes(&Sizes::Named("data_mining".into())).unwrap();
        assert!(
            (mining.mean() / 7_470_250.0 - 1.0).abs() < 0.001,
            "{}",
            mining.mean()
        );
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let n = 200_000;
        let drawn: Vec<u64> = (0..n).map(|_| web.sample(&mut rng)).collect();
        let mean = drawn.iter().sum::<u64>() as f64 / n as f64;
        assert!((mean / web.mean() - 1.0).abs() < 0.03, "{mean}");
        // 15 % of web search flows are the smallest, 6 packets.
        let smallest = drawn.iter().filter(|&&b| b == 6 * 1460).count() as f64 / n as f64;
        assert!((smallest - 0.15).abs() < 0.005, "{smallest}");
        // Half of data mining flows are one packet.
        let one = (0..n).filter(|_| mining.sample(&mut rng) == 1460).count() as f64 / n as f64;
        assert!((one - 0.5).abs() < 0.005, "{one}");
        let logn = SizeDist::from_sizes(&Sizes::LogNormal {
            lognormal: LogNormal {
                median: Bytes(100_000),
                sigma: 1.0,
            },
        })
        .unwrap();
        let mut below = 0;
        for _ in 0..n {
            if logn.sample(&mut rng) < 100_000 {
                below += 1;
            }
        }
        assert!((f64::from(below) / n as f64 - 0.5).abs() < 0.01);
    }

    #[test]
    fn poisson_arrivals_offer_the_load_asked_for_and_repeat_with_the_seed() {
        let topo = topology::Preset::Star { n: 9 }.build().unwrap();
        let w = workload(
            "load = 0.5\nrate = \"1gbit\"\nsizes = { fixed = \"125KB\" }\nendpoints = \"all_to_all\"\nnodes = \"2-9\"\nduration = \"20s\"\nseed = 3\n",
        );
        let flows = w.generate(&topo).unwrap();
        // 8 senders at 0.5 Gbit/s of 1 Mbit flows: 500 flows/s each, 80,000 in 20 s.
        let n = flows.len() as f64;
        assert!((n / 80_000.0 - 1.0).abs() < 0.02, "{n} flows");
        assert!(
            flows
                .iter()
                .all(|f| f.src != f.dst && f.src >= 2 && f.dst >= 2)
        );
        assert!(flows.windows(2).all(|w| w[0].start <= w[1].start));
        let offered = total_bytes(&flows) as f64 * 8.0 / 20.0 / 8.0;
        assert!(
            (offered / 0.5e9 - 1.0).abs() < 0.02,
            "{offered} bit/s per sender"
        );
        assert_eq!(flows, w.generate(&topo).unwrap(), "the seed repeats it");
        let mut other = w.clone();
        other.seed = 4;
        assert_ne!(flows, other.generate(&topo).unwrap());
    }

    #[test]
    fn endpoint_patterns() {
        let topo = topology::Preset::Star { n: 6 }.build().unwrap();
        let base = "load = 0.1\nrate = \"1gbit\"\nsizes = { fixed = \"1MB\" }\nduration = \"5s\"\nnodes = \"2-6\"\n";
        let perm = workload(&format!("{base}endpoints = \"permutation\"\n"))
            .generate(&topo)
            .unwrap();
        let mut pairs: Vec<(u32, u32)> = perm.iter().map(|f| (f.src, f.dst)).collect();
        pairs.sort_unstable();
        pairs.dedup();
        assert_eq!(pairs.len(), 5, "each node has one partner: {pairs:?}");
        let incast = workload(&format!("{base}endpoints = {{ incast = {{ to = 2 }} }}\n"))
            .generate(&topo)
            .unwrap();
        assert!(incast.iter().all(|f| f.dst == 2 && f.src != 2));
        // The load is the receiver's: 0.1 Gbit/s of 8 Mbit flows, about 62 in 5 s.
        assert!((40..90).contains(&incast.len()), "{}", incast.len());
        let list = workload(&format!("{base}endpoints = {{ list = [[3, 4]] }}\n"))
            .generate(&topo)
            .unwrap();
        assert!(list.iter().all(|f| (f.src, f.dst) == (3, 4)));
        for (bad, expect) in [
            ("endpoints = \"ring\"\n", "all_to_all"),
            ("endpoints = { list = [[3, 3]] }\n", "itself"),
            ("endpoints = { incast = { to = 9 } }\n", "not in"),
        ] {
            let e = workload(&format!("{base}{bad}"))
                .generate(&topo)
                .unwrap_err();
            assert!(e.contains(expect), "{bad}: {e}");
        }
        let e = workload(&format!(
            "{base}endpoints = \"all_to_all\"\nmax_flows = 10\n"
        ))
        .generate(&topo)
        .unwrap_err();
        assert!(e.contains("more than 10 flows"), "{e}");
    }
}
