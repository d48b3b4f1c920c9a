//! Generated flows, as the controller sees them: scheduled, started, measured. Part of the
//! coordinator's state machine (no I/O, time passed in); the coordinator drains what it says
//! to nodes and records.
//!
//! A flow's life: it is added (from the experiment file, the API or the store) and scheduled
//! for `start` after the topology is ready (or after now, once it is). When it is due, its
//! destination is asked to take flows (once per node: `AcceptFlows`, answered by
//! `FlowsAccepted`), then its source is told to start it (`StartFlow`). The source reports the
//! connection open (`FlowStarted`: its port and start time) and, once everything is sent and
//! the receiver has closed, its TCP figures (`FlowSent`); the destination reports what it
//! received (`FlowReceived`). With both reports the flow is finished: its completion time is
//! from the source's start to the destination's last byte. A node that fails takes its
//! unfinished flows with it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use proto::{ControllerToNode, FlowLen, FlowOrder, FlowSpec, TcpStats};
use serde::{Deserialize, Serialize};

/// Where a flow is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowState {
    /// Waiting for its start time (or for the topology to be ready).
    Scheduled,
    /// Due; its destination is being asked to take flows.
    Waiting,
    /// Its source was told to start it.
    Starting,
    /// Its connection is open.
    Running,
    Finished,
    Failed,
}

impl FlowState {
    pub fn as_str(self) -> &'static str {
        match self {
            FlowState::Scheduled => "scheduled",
            FlowState::Waiting => "waiting",
            FlowState::Starting => "starting",
            FlowState::Running => "running",
            FlowState::Finished => "finished",
            FlowState::Failed => "failed",
        }
    }
}

/// A flow and what is known of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowRow {
    pub id: u64,
    pub src: u32,
    pub dst: u32,
    pub spec: FlowSpec,
    /// After the topology is ready (or after it was added, once the topology was ready).
    pub start_offset: f64,
    pub state: FlowState,
    /// The source's port, once the connection is open (the flow's 5-tuple).
    pub local_port: Option<u16>,
    /// Unix time, nanoseconds: the source opening the connection.
    pub start_ns: Option<u64>,
    /// Unix time, nanoseconds: the destination's last byte.
    pub finish_ns: Option<u64>,
    /// Bytes the destination received.
    pub bytes: Option<u64>,
    pub fct_seconds: Option<f64>,
    /// Bytes × 8 over the completion time.
    pub throughput_bps: Option<f64>,
    /// The source's TCP figures at the end.
    pub tcp: Option<TcpStats>,
    pub failure: Option<String>,
}

/// What the table says: to a node, or about a flow.
#[derive(Debug, Clone, PartialEq)]
pub enum FlowOutput {
    Node(u32, ControllerToNode),
    /// A flow changed state: its row as it is now.
    Changed(Box<FlowRow>),
}

/// Whether a node takes flows yet.
#[derive(Debug, Clone, Default)]
enum Listener {
    #[default]
    No,
    /// Asked; these flows wait for it.
    Asked(Vec<u64>),
    Yes,
}

/// What a flow's two ends said: the source (bytes sent, TCP figures) and the destination
/// (bytes received, first and last byte's Unix time).
#[derive(Debug, Clone, Copy, Default)]
struct Reports {
    sent: Option<(u64, TcpStats)>,
    received: Option<(u64, u64, u64)>,
}

/// Every flow of a run.
#[derive(Debug, Default)]
pub struct FlowTable {
    flows: BTreeMap<u64, FlowRow>,
    /// Start times of scheduled flows.
    due: BinaryHeap<Reverse<(Instant, u64)>>,
    /// When the topology was ready: flows added before wait for it.
    ready_at: Option<Instant>,
    listeners: BTreeMap<u32, Listener>,
    /// Flows that wait for the topology.
    before_ready: Vec<u64>,
    /// The reports of a flow's ends, until both are in.
    reports: BTreeMap<u64, Reports>,
    out: std::collections::VecDeque<FlowOutput>,
    port: u16,
    /// How lossless flows are cut and protected.
    lossless: proto::LosslessConfig,
    overlay_base: Option<Ipv4Addr>,
    /// Open connections by their 5-tuple's hash (routes for one flow) and by their source
    /// node and port (the dataplane's per-flow counters).
    by_hash: std::collections::HashMap<u64, u64>,
    by_source: std::collections::HashMap<(u32, u16), u64>,
}

impl FlowTable {
    /// Flows are taken on `port` of each node's overlay address (`base + id`).
    pub fn new(port: u16, overlay_base: Ipv4Addr) -> FlowTable {
        FlowTable {
            port,
            overlay_base: Some(overlay_base),
            ..Default::default()
        }
    }

    /// Lossless flows are cut and protected so.
    pub fn with_lossless(mut self, lossless: proto::LosslessConfig) -> FlowTable {
        self.lossless = lossless;
        self
    }

    #[must_use]
    pub fn poll_output(&mut self) -> Option<FlowOutput> {
        self.out.pop_front()
    }

    /// When the next flow is due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.due.peek().map(|Reverse((t, _))| *t)
    }

    pub fn rows(&self) -> impl Iterator<Item = &FlowRow> {
        self.flows.values()
    }

    pub fn get(&self, id: u64) -> Option<&FlowRow> {
        self.flows.get(&id)
    }

    /// The flow with this source port from `src` (its 5-tuple's sender side).
    pub fn by_port(&self, src: u32, port: u16) -> Option<&FlowRow> {
        self.by_source
            .get(&(src, port))
            .and_then(|id| self.flows.get(id))
    }

    /// The hash of a flow's 5-tuple (the dataplane's [`topology::routing::flow_hash`]), once
    /// its connection is open.
    pub fn hash_of(&self, id: u64) -> Option<u64> {
        let f = self.flows.get(&id)?;
        let base = self.overlay_base?;
        Some(topology::routing::flow_hash(
            proto::overlay_addr(base, f.src),
            proto::overlay_addr(base, f.dst),
            6,
            Some((f.local_port?, self.port)),
        ))
    }

    /// The flow whose 5-tuple has this hash.
    pub fn id_of_hash(&self, hash: u64) -> Option<u64> {
        self.by_hash.get(&hash).copied()
    }

    fn changed(&mut self, id: u64) {
        if let Some(f) = self.flows.get(&id) {
            self.out.push_back(FlowOutput::Changed(Box::new(f.clone())));
        }
    }

    /// A flow to run `start` after the topology is ready (or after `now`, once it is). Its
    /// id is the store's.
    pub fn add(
        &mut self,
        now: Instant,
        id: u64,
        src: u32,
        dst: u32,
        spec: FlowSpec,
        start: Duration,
    ) {
        self.flows.insert(
            id,
            FlowRow {
                id,
                src,
                dst,
                spec,
                start_offset: start.as_secs_f64(),
                state: FlowState::Scheduled,
                local_port: None,
                start_ns: None,
                finish_ns: None,
                bytes: None,
                fct_seconds: None,
                throughput_bps: None,
                tcp: None,
                failure: None,
            },
        );
        match self.ready_at {
            Some(_) => self.due.push(Reverse((now + start, id))),
            None => self.before_ready.push(id),
        }
        self.changed(id);
    }

    /// The topology is ready: flows added so far count their start from now.
    pub fn handle_ready(&mut self, now: Instant) {
        self.ready_at = Some(now);
        for id in std::mem::take(&mut self.before_ready) {
            let start = Duration::from_secs_f64(self.flows[&id].start_offset);
            self.due.push(Reverse((now + start, id)));
        }
    }

    /// Starts the flows that are due; `alive(n)` says whether node `n` can take part.
    pub fn handle_timeout(&mut self, now: Instant, alive: impl Fn(u32) -> bool) {
        while let Some(&Reverse((at, id))) = self.due.peek() {
            if at > now {
                break;
            }
            self.due.pop();
            let Some(f) = self.flows.get(&id) else {
                continue;
            };
            let (src, dst) = (f.src, f.dst);
            if let Some(down) = [src, dst].into_iter().find(|&n| !alive(n)) {
                self.fail(id, format!("node {down} is not running"));
                continue;
            }
            match self.listeners.entry(dst).or_default() {
                Listener::Yes => self.order(id),
                Listener::Asked(waiting) => {
                    waiting.push(id);
                    self.set_state(id, FlowState::Waiting);
                }
                l @ Listener::No => {
                    *l = Listener::Asked(vec![id]);
                    self.out.push_back(FlowOutput::Node(
                        dst,
                        ControllerToNode::AcceptFlows { port: self.port },
                    ));
                    self.set_state(id, FlowState::Waiting);
                }
            }
        }
    }

    fn set_state(&mut self, id: u64, state: FlowState) {
        if let Some(f) = self.flows.get_mut(&id) {
            f.state = state;
        }
        self.changed(id);
    }

    /// Tells a flow's source to start it.
    fn order(&mut self, id: u64) {
        let Some(f) = self.flows.get(&id) else {
            return;
        };
        let dst_addr =
            proto::overlay_addr(self.overlay_base.unwrap_or(Ipv4Addr::UNSPECIFIED), f.dst);
        let order = FlowOrder {
            id,
            dst: f.dst,
            dst_addr,
            port: self.port,
            spec: f.spec.clone(),
            lossless: self.lossless,
        };
        self.out.push_back(FlowOutput::Node(
            f.src,
            ControllerToNode::StartFlow { flow: order },
        ));
        self.set_state(id, FlowState::Starting);
    }

    /// `node` takes flows now.
    pub fn handle_accepted(&mut self, node: u32) {
        if let Listener::Asked(waiting) =
            std::mem::replace(self.listeners.entry(node).or_default(), Listener::Yes)
        {
            for id in waiting {
                self.order(id);
            }
        }
    }

    /// `node` can't take flows: those waiting for it fail (and later ones ask again).
    pub fn handle_refused(&mut self, node: u32, reason: &str) {
        if let Some(Listener::Asked(waiting)) = self.listeners.remove(&node) {
            for id in waiting {
                self.fail(id, format!("node {node} can't take flows: {reason}"));
            }
        }
    }

    pub fn handle_started(&mut self, node: u32, id: u64, local_port: u16, start_ns: u64) {
        let Some(f) = self.flows.get_mut(&id).filter(|f| f.src == node) else {
            return;
        };
        f.local_port = Some(local_port);
        f.start_ns = Some(start_ns);
        self.by_source.insert((node, local_port), id);
        if let Some(hash) = self.hash_of(id) {
            self.by_hash.insert(hash, id);
        }
        self.set_state(id, FlowState::Running);
    }

    pub fn handle_sent(&mut self, node: u32, id: u64, bytes: u64, tcp: TcpStats) {
        if self.flows.get(&id).is_some_and(|f| f.src == node) {
            self.reports.entry(id).or_default().sent = Some((bytes, tcp));
            self.maybe_finish(id);
        }
    }

    pub fn handle_received(&mut self, node: u32, id: u64, bytes: u64, first_ns: u64, last_ns: u64) {
        if self.flows.get(&id).is_some_and(|f| f.dst == node) {
            self.reports.entry(id).or_default().received = Some((bytes, first_ns, last_ns));
            self.maybe_finish(id);
        }
    }

    fn maybe_finish(&mut self, id: u64) {
        let Some(Reports {
            sent: Some((_, tcp)),
            received: Some((bytes, _, last_ns)),
        }) = self.reports.get(&id).copied()
        else {
            return;
        };
        self.reports.remove(&id);
        let Some(f) = self.flows.get_mut(&id) else {
            return;
        };
        f.state = FlowState::Finished;
        f.bytes = Some(bytes);
        f.finish_ns = Some(last_ns);
        f.tcp = Some(tcp);
        if let Some(start) = f.start_ns {
            let fct = last_ns.saturating_sub(start) as f64 / 1e9;
            f.fct_seconds = Some(fct);
            f.throughput_bps = (fct > 0.0).then(|| bytes as f64 * 8.0 / fct);
        }
        self.changed(id);
    }

    /// A flow could not run, or its node went away.
    pub fn fail(&mut self, id: u64, reason: String) {
        let Some(f) = self.flows.get_mut(&id) else {
            return;
        };
        if matches!(f.state, FlowState::Finished | FlowState::Failed) {
            return;
        }
        f.state = FlowState::Failed;
        f.failure = Some(reason);
        self.reports.remove(&id);
        self.changed(id);
    }

    /// A node failed: its unfinished flows with it.
    pub fn handle_node_failed(&mut self, node: u32) {
        let lost: Vec<u64> = self
            .flows
            .values()
            .filter(|f| (f.src == node || f.dst == node) && f.state != FlowState::Scheduled)
            .map(|f| f.id)
            .collect();
        for id in lost {
            self.fail(id, format!("node {node} failed"));
        }
        self.listeners.remove(&node);
    }

    /// Counts by state, for the status.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut c = BTreeMap::new();
        for f in self.flows.values() {
            *c.entry(f.state.as_str()).or_default() += 1;
        }
        c
    }
}

/// The bytes a flow is to carry, if it is given in bytes.
pub fn planned_bytes(spec: &FlowSpec) -> Option<u64> {
    match spec.flow_len {
        FlowLen::Bytes(b) => Some(b),
        FlowLen::Duration(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(t: &mut FlowTable) -> Vec<FlowOutput> {
        std::iter::from_fn(|| t.poll_output()).collect()
    }

    fn to_nodes(out: &[FlowOutput]) -> Vec<(u32, ControllerToNode)> {
        out.iter()
            .filter_map(|o| match o {
                FlowOutput::Node(n, m) => Some((*n, m.clone())),
                FlowOutput::Changed(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_flow_waits_for_ready_then_its_start_then_its_destination() {
        let t0 = Instant::now();
        let mut t = FlowTable::new(47_000, Ipv4Addr::new(10, 0, 0, 0));
        t.add(t0, 1, 1, 4, FlowSpec::bytes(1000), Duration::from_secs(2));
        t.add(t0, 2, 2, 4, FlowSpec::bytes(1000), Duration::ZERO);
        drain(&mut t);
        assert_eq!(
            t.poll_timeout(),
            None,
            "nothing is due before the topology is ready"
        );
        let ready = t0 + Duration::from_secs(5);
        t.handle_ready(ready);
        assert_eq!(t.poll_timeout(), Some(ready));
        t.handle_timeout(ready, |_| true);
        let out = drain(&mut t);
        assert_eq!(
            to_nodes(&out),
            vec![(4, ControllerToNode::AcceptFlows { port: 47_000 })]
        );
        assert_eq!(t.get(2).unwrap().state, FlowState::Waiting);
        t.handle_accepted(4);
        let out = to_nodes(&drain(&mut t));
        let ControllerToNode::StartFlow { flow } = &out[0].1 else {
            panic!("{out:?}")
        };
        assert_eq!(
            (out[0].0, flow.id, flow.dst_addr),
            (2, 2, Ipv4Addr::new(10, 0, 0, 4))
        );
        // Flow 1 comes 2 s later; its destination already takes flows.
        assert_eq!(t.poll_timeout(), Some(ready + Duration::from_secs(2)));
        t.handle_timeout(ready + Duration::from_secs(2), |_| true);
        let out = to_nodes(&drain(&mut t));
        assert!(
            matches!(out[..], [(1, ControllerToNode::StartFlow { .. })]),
            "{out:?}"
        );
    }

    #[test]
    fn both_ends_report_and_the_flow_is_measured() {
        let t0 = Instant::now();
        let mut t = FlowTable::new(47_000, Ipv4Addr::new(10, 0, 0, 0));
        t.handle_ready(t0);
        t.add(t0, 7, 1, 2, FlowSpec::bytes(10_000_000), Duration::ZERO);
        t.handle_timeout(t0, |_| true);
        t.handle_accepted(2);
        t.handle_started(1, 7, 40_000, 1_000_000_000);
        assert_eq!(t.get(7).unwrap().state, FlowState::Running);
        assert_eq!(t.by_port(1, 40_000).map(|f| f.id), Some(7));
        // The wrong node's report changes nothing.
        t.handle_received(3, 7, 1, 1, 1);
        t.handle_received(2, 7, 10_000_000, 1_001_000_000, 2_000_000_000);
        assert_eq!(t.get(7).unwrap().state, FlowState::Running);
        let tcp = TcpStats {
            retransmits: 3,
            srtt_us: 20_000,
            cwnd: 80,
        };
        t.handle_sent(1, 7, 10_000_000, tcp);
        let f = t.get(7).unwrap();
        assert_eq!(f.state, FlowState::Finished);
        assert_eq!(f.fct_seconds, Some(1.0));
        assert_eq!(f.throughput_bps, Some(80e6));
        assert_eq!(f.tcp, Some(tcp));
        let changed = drain(&mut t)
            .into_iter()
            .filter(|o| matches!(o, FlowOutput::Changed(_)))
            .count();
        assert!(changed >= 4, "every change is told");
    }

    #[test]
    fn flows_of_failed_nodes_fail_and_due_flows_to_dead_nodes_never_start() {
        let t0 = Instant::now();
        let mut t = FlowTable::new(47_000, Ipv4Addr::new(10, 0, 0, 0));
        t.handle_ready(t0);
        t.add(t0, 1, 1, 2, FlowSpec::bytes(1), Duration::ZERO);
        t.add(t0, 2, 3, 1, FlowSpec::bytes(1), Duration::ZERO);
        t.handle_timeout(t0, |n| n != 3);
        assert_eq!(t.get(2).unwrap().state, FlowState::Failed);
        assert!(
            t.get(2)
                .unwrap()
                .failure
                .as_deref()
                .unwrap()
                .contains("node 3")
        );
        t.handle_accepted(2);
        t.handle_node_failed(2);
        assert_eq!(t.get(1).unwrap().state, FlowState::Failed);
        assert_eq!(t.counts().get("failed"), Some(&2));
    }
}
