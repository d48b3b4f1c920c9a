//! Monitoring: what nodes report every metrics interval, turned into rows for the store (each
//! link direction's traffic, drops, queue and utilisation; each flow's bytes per link; the
//! applications' connections), and the Prometheus view served at `GET /metrics`.

use std::net::Ipv4Addr;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use proto::monitor::FlowKey;
use serde::{Deserialize, Serialize};

use crate::coordinator::{Milestone, Status};
use crate::flows::FlowState;

/// One link direction over one interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinkSample {
    pub src: u32,
    pub dst: u32,
    pub bytes: u64,
    pub packets: u64,
    pub dropped_down: u64,
    pub dropped_loss: u64,
    pub dropped_queue: u64,
    pub dropped_red: u64,
    /// Packets queued when the counters were read.
    pub queue_packets: u64,
    /// Bits sent over the interval against the link's rate (none when unshaped).
    pub utilization: Option<f64>,
}

/// One flow's traffic on one link direction over an interval (the seeds' `metrics` row).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FlowSample {
    pub key: FlowKey,
    /// The generated flow it belongs to, if any.
    pub flow: Option<u64>,
    pub local: u32,
    pub remote: u32,
    pub bytes: u64,
    pub packets: u64,
}

/// An application's connection opening or closing (the seeds' `app_flows`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AppFlowRow {
    Started {
        key: FlowKey,
        src: u32,
        dst: u32,
        at_ns: u64,
        /// Its path when it opened, as node ids: `1-2-3`.
        route: Option<String>,
    },
    Finished {
        key: FlowKey,
        at_ns: u64,
        bytes: u64,
    },
}

/// What one node's report adds to the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsReport {
    pub node: u32,
    /// When the node read its counters (Unix time, nanoseconds).
    pub time_ns: u64,
    pub links: Vec<LinkSample>,
    pub flows: Vec<FlowSample>,
    pub apps: Vec<AppFlowRow>,
}

/// The traffic between two readings of a link direction's counters (counters start again
/// from zero when a link is made anew).
pub fn link_sample(
    src: u32,
    prev: Option<&proto::LinkCounters>,
    now: &proto::LinkCounters,
    rate_bps: Option<u64>,
    interval_ns: u64,
) -> LinkSample {
    let zero = linkem::Counters::default();
    let before = prev.map_or(&zero, |p| &p.counters);
    let after = &now.counters;
    let reset = after.delivered_packets < before.delivered_packets
        || after.arrived_packets < before.arrived_packets;
    let before = if reset { &zero } else { before };
    let bytes = after.delivered_bytes - before.delivered_bytes;
    LinkSample {
        src,
        dst: now.peer,
        bytes,
        packets: after.delivered_packets - before.delivered_packets,
        dropped_down: after.dropped_down.saturating_sub(before.dropped_down),
        dropped_loss: after.dropped_loss.saturating_sub(before.dropped_loss),
        dropped_queue: after.dropped_queue.saturating_sub(before.dropped_queue),
        dropped_red: after.dropped_red.saturating_sub(before.dropped_red),
        queue_packets: now.queue_packets,
        utilization: rate_bps
            .filter(|_| interval_ns > 0)
            .map(|r| bytes as f64 * 8.0 / (r as f64 * interval_ns as f64 / 1e9)),
    }
}

/// The node an overlay address belongs to.
pub fn node_of(base: Ipv4Addr, n_nodes: u32, addr: Ipv4Addr) -> Option<u32> {
    let id = u32::from(addr).checked_sub(u32::from(base))?;
    (1..=n_nodes).contains(&id).then_some(id)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LinkLabels {
    src: u32,
    dst: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    src: u32,
    dst: u32,
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// The controller's Prometheus metrics.
pub struct Prometheus {
    registry: Registry,
    link_bytes: Family<LinkLabels, Counter>,
    link_packets: Family<LinkLabels, Counter>,
    link_drops: Family<DropLabels, Counter>,
    link_queue: Family<LinkLabels, Gauge>,
    link_utilization: Family<LinkLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    nodes: Family<StateLabels, Gauge>,
    flows: Family<StateLabels, Gauge>,
    fct: Histogram,
    flow_bytes: Counter,
    route_apply: Histogram,
    app_flows: Counter,
    /// Encoding takes the registry whole; scrapes are rare.
    lock: Mutex<()>,
}

impl Default for Prometheus {
    fn default() -> Self {
        Self::new()
    }
}

impl Prometheus {
    pub fn new() -> Prometheus {
        let mut registry = Registry::with_prefix("nextmini");
        let p = Prometheus {
            link_bytes: Family::default(),
            link_packets: Family::default(),
            link_drops: Family::default(),
            link_queue: Family::default(),
            link_utilization: Family::default(),
            nodes: Family::default(),
            flows: Family::default(),
            fct: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.001, 2.0, 18,
            )),
            flow_bytes: Counter::default(),
            route_apply: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 16),
            ),
            app_flows: Counter::default(),
            lock: Mutex::new(()),
            registry: Registry::default(),
        };
        registry.register(
            "link_bytes",
            "Bytes each link direction delivered",
            p.link_bytes.clone(),
        );
        registry.register(
            "link_packets",
            "Packets each link direction delivered",
            p.link_packets.clone(),
        );
        registry.register(
            "link_dropped_packets",
            "Packets each link direction dropped, by cause",
            p.link_drops.clone(),
        );
        registry.register(
            "link_queue_packets",
            "Packets queued at each link direction at its last report",
            p.link_queue.clone(),
        );
        registry.register(
            "link_utilization_ratio",
            "Bits sent over the last interval against the link's rate",
            p.link_utilization.clone(),
        );
        registry.register("nodes", "Nodes by state", p.nodes.clone());
        registry.register("flows", "Generated flows by state", p.flows.clone());
        registry.register(
            "flow_completion_seconds",
            "Completion times of generated flows",
            p.fct.clone(),
        );
        registry.register(
            "flow_bytes",
            "Bytes generated flows delivered",
            p.flow_bytes.clone(),
        );
        registry.register(
            "route_apply_seconds",
            "Time from a route change to the last node confirming it",
            p.route_apply.clone(),
        );
        registry.register(
            "app_flows",
            "Applications' connections seen opening",
            p.app_flows.clone(),
        );
        Prometheus { registry, ..p }
    }

    /// Takes in what a milestone says.
    pub fn record(&self, m: &Milestone) {
        match m {
            Milestone::Metrics(r) => {
                for l in &r.links {
                    let labels = LinkLabels {
                        src: l.src,
                        dst: l.dst,
                    };
                    self.link_bytes.get_or_create(&labels).inc_by(l.bytes);
                    self.link_packets.get_or_create(&labels).inc_by(l.packets);
                    self.link_queue
                        .get_or_create(&labels)
                        .set(l.queue_packets as i64);
                    if let Some(u) = l.utilization {
                        self.link_utilization.get_or_create(&labels).set(u);
                    }
                    for (cause, n) in [
                        ("down", l.dropped_down),
                        ("loss", l.dropped_loss),
                        ("queue", l.dropped_queue),
                        ("red", l.dropped_red),
                    ] {
                        self.link_drops
                            .get_or_create(&DropLabels {
                                src: l.src,
                                dst: l.dst,
                                cause,
                            })
                            .inc_by(n);
                    }
                }
                let opened = r
                    .apps
                    .iter()
                    .filter(|a| matches!(a, AppFlowRow::Started { .. }))
                    .count();
                self.app_flows.inc_by(opened as u64);
            }
            Milestone::Flow(f) if f.state == FlowState::Finished => {
                if let Some(fct) = f.fct_seconds {
                    self.fct.observe(fct);
                }
                self.flow_bytes.inc_by(f.bytes.unwrap_or(0));
            }
            Milestone::RoutesApplied { nodes, elapsed, .. } if *nodes > 0 => {
                self.route_apply.observe(elapsed.as_secs_f64());
            }
            _ => {}
        }
    }

    /// The text exposition, with the node and flow gauges from `status`.
    pub fn encode(&self, status: &Status) -> String {
        let _one = self.lock.lock().expect("no panics hold it");
        for (state, n) in [
            ("connected", status.connected),
            ("ready", status.ready),
            ("failed", status.failed),
        ] {
            self.nodes
                .get_or_create(&StateLabels { state })
                .set(i64::from(n));
        }
        for state in [
            FlowState::Scheduled,
            FlowState::Waiting,
            FlowState::Starting,
            FlowState::Running,
            FlowState::Finished,
            FlowState::Failed,
        ] {
            let n = status.flows.get(state.as_str()).copied().unwrap_or(0);
            self.flows
                .get_or_create(&StateLabels {
                    state: state.as_str(),
                })
                .set(n as i64);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a string");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(peer: u32, packets: u64, bytes: u64, queue_drops: u64) -> proto::LinkCounters {
        proto::LinkCounters {
            peer,
            counters: linkem::Counters {
                arrived_packets: packets + queue_drops,
                arrived_bytes: bytes,
                delivered_packets: packets,
                delivered_bytes: bytes,
                dropped_queue: queue_drops,
                ..Default::default()
            },
            queue_packets: 3,
        }
    }

    #[test]
    fn a_sample_is_the_traffic_between_two_readings() {
        let a = counters(2, 10, 15_000, 1);
        let b = counters(2, 110, 165_000, 4);
        // 150 kB in 0.1 s on a 24 Mbit/s link: half of it.
        let s = link_sample(1, Some(&a), &b, Some(24_000_000), 100_000_000);
        assert_eq!((s.src, s.dst, s.bytes, s.packets), (1, 2, 150_000, 100));
        assert_eq!((s.dropped_queue, s.queue_packets), (3, 3));
        assert!((s.utilization.unwrap() - 0.5).abs() < 1e-9);
        // A link made anew counts from zero.
        let s = link_sample(1, Some(&b), &a, None, 100_000_000);
        assert_eq!((s.bytes, s.packets, s.utilization), (15_000, 10, None));
    }

    #[test]
    fn overlay_addresses_name_nodes() {
        let base = Ipv4Addr::new(10, 0, 0, 0);
        assert_eq!(node_of(base, 300, Ipv4Addr::new(10, 0, 1, 4)), Some(260));
        assert_eq!(node_of(base, 3, Ipv4Addr::new(10, 0, 0, 4)), None);
        assert_eq!(node_of(base, 3, Ipv4Addr::new(9, 0, 0, 1)), None);
    }

    #[test]
    fn the_exposition_is_prometheus_text() {
        let p = Prometheus::new();
        let report = MetricsReport {
            node: 1,
            time_ns: 1,
            links: vec![link_sample(
                1,
                None,
                &counters(2, 10, 15_000, 0),
                None,
                1_000_000_000,
            )],
            flows: vec![],
            apps: vec![],
        };
        p.record(&Milestone::Metrics(Box::new(report)));
        let status = Status {
            phase: crate::coordinator::Phase::Ready,
            topology: "line(2)".into(),
            nodes: 2,
            links: 1,
            plumbed: 2,
            connected: 2,
            ready: 2,
            failed: 0,
            links_up: 1,
            wiring_seconds: None,
            agents: 1,
            flows: Default::default(),
        };
        let text = p.encode(&status);
        assert!(
            text.contains("nextmini_link_bytes_total{src=\"1\",dst=\"2\"} 15000"),
            "{text}"
        );
        assert!(text.contains("nextmini_nodes{state=\"ready\"} 2"));
        assert!(text.ends_with("# EOF\n"));
    }
}
