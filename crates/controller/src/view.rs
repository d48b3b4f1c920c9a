//! The live view: the page at `/` (built from `web/` into `assets/` and shipped inside the
//! binary: no CDN, nothing fetched at run time), the topology it draws (`GET /api/topology`),
//! and the state pushed to it about once a second (`GET /api/events`, server-sent events):
//! node states, links up or down, each direction's utilisation and drops.

use std::collections::HashMap;

use serde::Serialize;

use crate::coordinator::{Milestone, Phase};

pub const INDEX_HTML: &str = include_str!("../assets/index.html");
pub const APP_JS: &str = include_str!("../assets/app.js");
pub const STYLE_CSS: &str = include_str!("../assets/style.css");

/// What the page draws once: nodes (with names and map coordinates when the topology was
/// imported) and links, in the order every frame uses.
#[derive(Debug, Clone, Serialize)]
pub struct TopologyView {
    pub label: String,
    pub nodes: u32,
    pub names: Vec<Option<String>>,
    /// `[longitude, latitude]` per node, when every node has them.
    pub coords: Option<Vec<[f64; 2]>>,
    pub edges: Vec<(u32, u32)>,
}

impl TopologyView {
    pub fn of(t: &topology::Topology) -> TopologyView {
        let coords: Option<Vec<[f64; 2]>> = t
            .coords
            .iter()
            .map(|c| c.map(|p| [p.lon, p.lat]))
            .collect::<Option<Vec<_>>>()
            .filter(|c| !c.is_empty() && c.len() == t.n_nodes() as usize);
        TopologyView {
            label: t.label.clone(),
            nodes: t.n_nodes(),
            names: if t.names.iter().any(Option::is_some) {
                t.names.clone()
            } else {
                Vec::new()
            },
            coords,
            edges: t.edges().to_vec(),
        }
    }
}

/// Each link direction's latest utilisation and throughput and its drops so far, from the
/// nodes' reports.
#[derive(Debug, Default)]
pub struct Loads {
    utilization: HashMap<(u32, u32), f32>,
    bps: HashMap<(u32, u32), u64>,
    drops: HashMap<(u32, u32), u64>,
    /// When each node last reported (Unix ns).
    reported_at: HashMap<u32, u64>,
}

impl Loads {
    pub fn record(&mut self, m: &Milestone) {
        if let Milestone::Metrics(r) = m {
            let since = self.reported_at.insert(r.node, r.time_ns);
            let interval_ns = since.map_or(0, |t| r.time_ns.saturating_sub(t));
            for l in &r.links {
                let key = (l.src, l.dst);
                if let Some(u) = l.utilization {
                    self.utilization.insert(key, u as f32);
                }
                if interval_ns > 0 {
                    self.bps
                        .insert(key, (l.bytes as f64 * 8e9 / interval_ns as f64) as u64);
                }
                *self.drops.entry(key).or_default() +=
                    l.dropped_down + l.dropped_loss + l.dropped_queue + l.dropped_red;
            }
            // A direction with no traffic in an interval sends no sample: idle again.
            let reported: std::collections::HashSet<(u32, u32)> =
                r.links.iter().map(|l| (l.src, l.dst)).collect();
            let keep = |(src, dst): &(u32, u32)| *src != r.node || reported.contains(&(*src, *dst));
            self.utilization.retain(|k, _| keep(k));
            self.bps.retain(|k, _| keep(k));
        }
    }
}

/// One push to the page.
#[derive(Debug, Clone, Serialize)]
pub struct Frame {
    pub phase: Phase,
    /// One letter per node: `p` pending, `c` connected, `r` ready, `f` failed.
    pub nodes: String,
    /// One digit per link (topology order): `1` up, `0` down.
    pub links: String,
    /// Per link, a→b then b→a (a < b): the share of the rate used in the last interval, to
    /// three decimals (0 when idle or unshaped).
    pub utilization: Vec<f32>,
    /// Per link, a→b then b→a: bits per second in the last interval.
    pub bps: Vec<u64>,
    /// Per link, a→b then b→a: packets dropped so far.
    pub drops: Vec<u64>,
    /// Generated flows by state.
    pub flows: std::collections::BTreeMap<String, usize>,
}

impl Frame {
    pub fn new(
        phase: Phase,
        nodes: String,
        links: String,
        edges: &[(u32, u32)],
        loads: &Loads,
        flows: std::collections::BTreeMap<String, usize>,
    ) -> Frame {
        let mut utilization = Vec::with_capacity(edges.len() * 2);
        let mut drops = Vec::with_capacity(edges.len() * 2);
        let mut bps = Vec::with_capacity(edges.len() * 2);
        for &(a, b) in edges {
            for key in [(a, b), (b, a)] {
                bps.push(loads.bps.get(&key).copied().unwrap_or(0));
                utilization.push(
                    loads
                        .utilization
                        .get(&key)
                        .map_or(0.0, |u| (u * 1000.0).round() / 1000.0),
                );
                drops.push(loads.drops.get(&key).copied().unwrap_or(0));
            }
        }
        Frame {
            phase,
            nodes,
            links,
            utilization,
            bps,
            drops,
            flows,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{LinkSample, MetricsReport};

    fn sample(src: u32, dst: u32, utilization: Option<f64>, dropped_queue: u64) -> LinkSample {
        LinkSample {
            src,
            dst,
            bytes: 1,
            packets: 1,
            dropped_down: 0,
            dropped_loss: 0,
            dropped_queue,
            dropped_red: 0,
            queue_packets: 0,
            utilization,
        }
    }

    #[test]
    fn a_frame_carries_each_directions_load_in_topology_order() {
        let mut loads = Loads::default();
        let report = |links| {
            Milestone::Metrics(Box::new(MetricsReport {
                node: 2,
                time_ns: 1,
                links,
                flows: vec![],
                apps: vec![],
            }))
        };
        loads.record(&report(vec![
            sample(2, 1, Some(0.51234), 3),
            sample(2, 3, None, 1),
        ]));
        loads.record(&report(vec![sample(2, 1, Some(0.25), 2)]));
        let f = Frame::new(
            Phase::Ready,
            "rrr".into(),
            "11".into(),
            &[(1, 2), (2, 3)],
            &loads,
            Default::default(),
        );
        // 2→1 at its latest, 2→3 idle since; drops add up.
        assert_eq!(f.utilization, vec![0.0, 0.25, 0.0, 0.0]);
        assert_eq!(f.drops, vec![0, 5, 1, 0]);
    }
}
