//! The simulator tier: an experiment run in virtual time, deterministically, in one thread,
//! without root. It drives the same state machines the real run does: the controller's
//! [`Coordinator`], every node's [`NodeSession`], the forwarding decision
//! ([`dataplane::forward::Forwarder`]) and a [`linkem::Link`] per link direction. What the
//! kernel does in a real run (sockets, TUN devices, the nodes' own IP stacks) is simulated:
//! control messages arrive after a fixed latency, links come up when both ends ask, and a small
//! host stack per node answers pings and runs the traffic generators below.
//!
//! Time: every machine is handed `t0 + virtual elapsed` as "now"; nothing reads a clock, so a
//! run is the same every time. Events are processed in time order (then in the order they were
//! made); [`Sim::run_until`] bounds every drive loop by a virtual deadline.
//!
//! Traffic: [`Sim::ping`] sends ICMP echo requests through the emulated network (the real
//! forwarder answers TTL expiry and unreachable destinations), [`Sim::trace`] lists the hops
//! the way traceroute does, and [`Sim::start_bulk`] runs a window-limited bulk sender whose
//! delivered bytes [`Sim::bulk_received`] reports.

mod host;
mod packets;

/// Each simulator test file runs itself again as `nobody` (from a test named
/// `runs_without_root`), so that the tier's claim, no root needed, is checked, not assumed.
pub fn rerun_unprivileged(this_test: &str) {
    if !nix::unistd::geteuid().is_root() {
        return; // this is the unprivileged run (or a user's): the other tests speak for it
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&exe)
        .args(["--skip", this_test, "--test-threads", "2"])
        .output()
        .expect("setpriv (util-linux) runs the tests as nobody");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(" passed; 0 failed") && !text.contains(" 0 passed"),
        "as nobody: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use agent::session::{Action, FlowEvent, NodeSession, SessionConfig, SessionEnd};
use controller::coordinator::{
    AgentId, Coordinator, GroupOp, LinkPlan, Milestone, Output, Settings, Status,
};
use dataplane::forward::{Forwarder, Hop};
use linkem::{LinkChange, LinkParams};
use proto::{AgentToController, ControllerToNode, NodeToController, Transport};
use topology::Topology;
use topology::routing::{ExplicitRoute, Metric, RouteTable};

pub use host::{BulkId, PingReply};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimSpec {
    pub topology: Topology,
    pub links: LinkPlan,
    pub metric: Metric,
    pub explicit_routes: Vec<ExplicitRoute>,
    /// Hosts the nodes are split over, in blocks of consecutive ids: links between nodes of
    /// different agents are dialled (TCP), links within one are paired in process.
    pub agents: u32,
    /// Every link dialled, as `protocol = "tcp"` asks.
    pub force_network: bool,
    /// Nodes forward packets (else: control sessions and links only).
    pub dataplane: bool,
    /// Nodes that fail right after their welcome (as `--fail-node`).
    pub fail: Vec<u32>,
    /// One-way latency of a control message between a node and the controller.
    pub control_delay: Duration,
    /// Time a dialled link takes to come up.
    pub dial_delay: Duration,
    /// Packets a generated flow may have unacknowledged (it starts at 10 and grows by one per
    /// acknowledgement).
    pub flow_window: u32,
    /// How often nodes report their counters.
    pub metrics_interval: Duration,
    /// Multicast groups made once the topology is ready (`[[groups]]`).
    pub groups: Vec<experiment::groups::PlannedGroup>,
    /// How lossless flows are cut and protected (`[lossless_runtime_config]`).
    pub lossless: proto::LosslessConfig,
}

impl SimSpec {
    /// One agent, a dataplane, unshaped links, shortest paths by hops, 50 µs control latency.
    pub fn new(topology: Topology) -> SimSpec {
        SimSpec {
            topology,
            links: LinkPlan::unshaped(),
            metric: Metric::Hops,
            explicit_routes: Vec::new(),
            agents: 1,
            force_network: false,
            dataplane: true,
            fail: Vec::new(),
            control_delay: Duration::from_micros(50),
            dial_delay: Duration::from_micros(200),
            flow_window: 1000,
            metrics_interval: Duration::from_secs(1),
            groups: Vec::new(),
            lossless: Default::default(),
        }
    }

    /// What an experiment file describes.
    pub fn from_experiment(exp: &experiment::Experiment) -> SimSpec {
        SimSpec {
            links: exp.links.clone(),
            metric: exp.metric,
            explicit_routes: exp.explicit_routes.clone(),
            force_network: exp.force_network,
            dataplane: exp.dataplane,
            metrics_interval: exp.metrics_interval,
            groups: exp.groups.clone(),
            lossless: exp.lossless,
            ..SimSpec::new(exp.topology.clone())
        }
    }

    /// Every link with these parameters.
    pub fn with_links(mut self, change: &str) -> SimSpec {
        self.links.default = LinkChange::from_short(change)
            .expect("a valid link change")
            .apply(LinkParams::default());
        self
    }
}

/// Something that happens at a time.
#[derive(Debug)]
enum Event {
    /// An agent's message reaches the controller.
    FromAgent(AgentId, AgentToController),
    /// A node's message reaches the controller.
    FromNode(u32, NodeToController),
    /// A node's session ended; the controller notices.
    NodeGone(u32),
    ToNode(u32, ControllerToNode),
    LinkUp(u32, u32),
    LinkDown(u32, u32),
    /// A link direction's emulator may have packets due.
    Emulator(u32, u32),
    SessionTimer(u32),
    /// A node's host stack sends a packet into the node's TUN device.
    Inject(u32, Vec<u8>),
    /// The coordinator's timeout (flows due).
    CoordinatorTimer,
    /// The host stacks' timeout (lossless flows' pacing and repairs).
    HostTimer,
}

struct Scheduled {
    at: Instant,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// A packet as it crosses the simulated network: the IP packet, with its flow for the
/// weighted scheduler.
struct SimPacket(Vec<u8>);

impl linkem::Packet for SimPacket {
    fn len_bytes(&self) -> usize {
        self.0.len()
    }

    fn flow(&self) -> (u64, u32) {
        dataplane::packet::Ipv4Packet::new_checked(&self.0[..])
            .map_or((0, 1), |p| (p.flow_hash(), p.weight()))
    }
}

impl dataplane::forward::IpBuffer for SimPacket {
    fn ip(&self) -> &[u8] {
        &self.0
    }
    fn ip_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
    fn from_ip(ip: &[u8]) -> Self {
        SimPacket(ip.to_vec())
    }
    fn duplicate(&self) -> Self {
        SimPacket(self.0.clone())
    }
}

/// One direction of a link, as the node that sends on it holds it.
struct SimLink {
    emulator: linkem::Link<SimPacket>,
    /// Bytes per flow since the node last reported.
    flows: dataplane::monitor::FlowMeter,
    /// The earliest emulator event queued.
    wake: Option<Instant>,
}

struct SimNode {
    session: NodeSession,
    closed: Option<SessionEnd>,
    forwarder: Option<Forwarder>,
    links: BTreeMap<u32, SimLink>,
    timer: Option<Instant>,
    /// What the controller told this node, in order.
    received: Vec<(Instant, ControllerToNode)>,
    /// The host's own connections, as the dataplane sees them leave.
    apps: dataplane::monitor::AppFlows,
}

/// A simulated run. See the crate documentation.
pub struct Sim {
    spec: SimSpec,
    t0: Instant,
    now: Instant,
    coordinator: Coordinator,
    nodes: Vec<SimNode>,
    events: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    /// Local links one end has asked for.
    half_paired: HashSet<(u32, u32)>,
    milestones: Vec<(Instant, Milestone)>,
    coordinator_timer: Option<Instant>,
    host: host::HostStack,
    host_timer: Option<Instant>,
    /// Packets the forwarders dropped, by reason.
    pub dropped: HashMap<dataplane::forward::DropReason, u64>,
    /// Datagrams to a group taken up by a node: their sequence numbers, by (node, group).
    group_received: HashMap<(u32, Ipv4Addr), Vec<u32>>,
    /// Events processed so far.
    pub steps: u64,
}

const OVERLAY_BASE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 0);
const NODE_PORT: u16 = 3000;
const LINK_PORT: u16 = 8080;

fn underlay(id: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 8, 1)) + id)
}

/// A node's overlay address.
pub fn overlay(id: u32) -> Ipv4Addr {
    proto::overlay_addr(OVERLAY_BASE, id)
}

impl Sim {
    /// Agents register and every node connects at time zero.
    pub fn new(spec: SimSpec) -> Sim {
        let t0 = Instant::now();
        let n = spec.topology.n_nodes();
        let mut coordinator = Coordinator::new(
            spec.topology.clone(),
            Settings {
                overlay_base: OVERLAY_BASE,
                overlay_prefix_len: 16,
                force_network: spec.force_network,
                network_transport: proto::Transport::Tcp,
                quic_congestion: proto::QuicCongestion::Cubic,
                link_protocols: Default::default(),
                lossless: spec.lossless,
                node_port: NODE_PORT,
                multi_host: spec.agents > 1,
                dataplane: spec.dataplane,
                mtu: 1500,
                links: spec.links.clone(),
                metric: spec.metric,
                explicit_routes: spec.explicit_routes.clone(),
                flow_port: proto::DEFAULT_FLOW_PORT,
                metrics_interval_ms: spec.metrics_interval.as_millis() as u32,
                // Kernel links are the kernel's: the simulator models user-space links only.
                max_nodes: Vec::new(),
                multicast_pool: proto::DEFAULT_MULTICAST_POOL,
            },
        );
        coordinator.plan_groups(spec.groups.clone());
        let nodes = (1..=n)
            .map(|id| SimNode {
                session: NodeSession::new(SessionConfig {
                    node_id: id,
                    underlay_addr: underlay(id),
                    link_port: Some(LINK_PORT),
                    tun_device: true,
                    fail: spec.fail.contains(&id),
                }),
                closed: None,
                forwarder: None,
                links: BTreeMap::new(),
                timer: None,
                received: Vec::new(),
                apps: Default::default(),
            })
            .collect();
        let mut sim = Sim {
            t0,
            now: t0,
            coordinator,
            nodes,
            events: BinaryHeap::new(),
            seq: 0,
            half_paired: HashSet::new(),
            milestones: Vec::new(),
            coordinator_timer: None,
            host_timer: None,
            host: {
                let mut h = host::HostStack::default();
                h.start_clock(t0);
                h
            },
            dropped: HashMap::new(),
            group_received: HashMap::new(),
            steps: 0,
            spec,
        };
        let agents = sim.spec.agents.clamp(1, n.max(1));
        let per_agent = n.div_ceil(agents);
        for a in 0..agents {
            let first = a * per_agent;
            let count = per_agent.min(n.saturating_sub(first));
            sim.schedule(
                t0,
                Event::FromAgent(
                    AgentId::from(a + 1),
                    AgentToController::Register {
                        version: proto::VERSION,
                        host: format!("sim{}", a + 1),
                        n_nodes: count,
                        node_id_offset: first,
                        node_ids: Vec::new(),
                        cpus: 2,
                        mem_bytes: 1 << 30,
                        underlay_route: None,
                    },
                ),
            );
        }
        // Nodes start once their agent is registered, as in a real run.
        for id in 1..=n {
            sim.after_session(id);
        }
        sim
    }

    /// Virtual time since the start.
    /// The Unix time the simulated hosts read at `at` (a fixed epoch plus virtual time).
    fn unix_ns(&self, at: Instant) -> u64 {
        host::EPOCH_NS + (at - self.t0).as_nanos() as u64
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    pub fn status(&self) -> Status {
        self.coordinator.status()
    }

    pub fn coordinator(&self) -> &Coordinator {
        &self.coordinator
    }

    /// Lifecycle events with their virtual times since the start.
    pub fn milestones(&self) -> impl Iterator<Item = (Duration, &Milestone)> {
        self.milestones.iter().map(|(t, m)| (*t - self.t0, m))
    }

    /// What the controller told `node`, with virtual times since the start.
    pub fn received(&self, node: u32) -> impl Iterator<Item = (Duration, &ControllerToNode)> {
        self.nodes[node as usize - 1]
            .received
            .iter()
            .map(|(t, m)| (*t - self.t0, m))
    }

    /// How `node`'s session ended, if it has.
    pub fn ended(&self, node: u32) -> Option<&SessionEnd> {
        self.nodes[node as usize - 1].closed.as_ref()
    }

    /// The forwarding table `node` holds now.
    pub fn table(&self, node: u32) -> Option<&RouteTable> {
        self.nodes[node as usize - 1]
            .forwarder
            .as_ref()
            .map(Forwarder::table)
    }

    /// The counters of the direction `from` → `to`, as its emulator keeps them.
    pub fn counters(&self, from: u32, to: u32) -> Option<linkem::Counters> {
        self.nodes[from as usize - 1]
            .links
            .get(&to)
            .map(|l| l.emulator.counters())
    }

    fn schedule(&mut self, at: Instant, event: Event) {
        self.seq += 1;
        self.events.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            event,
        }));
    }

    /// Processes events up to `deadline` (virtual, since the start); returns when the queue
    /// holds nothing earlier.
    pub fn run_until(&mut self, deadline: Duration) {
        let deadline = self.t0 + deadline;
        self.run_while(deadline, |_| true);
        self.now = self.now.max(deadline);
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.elapsed() + d;
        self.run_until(until);
    }

    /// Processes events until `deadline` or until `go_on` says stop (asked after each event).
    fn run_while(&mut self, deadline: Instant, mut go_on: impl FnMut(&Sim) -> bool) -> bool {
        while let Some(Reverse(next)) = self.events.peek() {
            if next.at > deadline {
                return false;
            }
            let Reverse(Scheduled { at, event, .. }) = self.events.pop().expect("peeked");
            self.now = at;
            self.steps += 1;
            self.handle(event);
            if !go_on(self) {
                return true;
            }
        }
        false
    }

    /// Runs until the topology is ready and every node has heard so (at most `limit` of
    /// virtual time); the wiring time.
    pub fn run_until_ready(&mut self, limit: Duration) -> Option<Duration> {
        let deadline = self.t0 + limit;
        self.run_while(deadline, |s| {
            !matches!(
                s.milestones.last(),
                Some((_, Milestone::TopologyReady { .. }))
            )
        });
        let wiring = self.milestones.iter().find_map(|(_, m)| match m {
            Milestone::TopologyReady { wiring } => Some(*wiring),
            _ => None,
        })?;
        let heard = self.now + self.spec.control_delay;
        self.run_while(heard, |_| true);
        self.now = self.now.max(heard);
        Some(wiring)
    }

    fn handle(&mut self, event: Event) {
        let now = self.now;
        match event {
            Event::FromAgent(agent, msg) => {
                if let Err(e) = self.coordinator.handle_agent_message(now, agent, msg) {
                    tracing::warn!("sim: agent {agent} refused: {e}");
                }
                self.deliver_outputs();
            }
            // A node's session travels inside its agent's, as the agent carries it.
            Event::FromNode(id, msg) => {
                let agent = self.agent_of(id);
                let carried = AgentToController::FromNode { node: id, msg };
                if let Err(e) = self.coordinator.handle_agent_message(now, agent, carried) {
                    tracing::warn!("sim: node {id}'s message refused: {e}");
                }
                self.deliver_outputs();
            }
            Event::NodeGone(id) => {
                let agent = self.agent_of(id);
                let closed = AgentToController::NodeClosed { node: id };
                if let Err(e) = self.coordinator.handle_agent_message(now, agent, closed) {
                    tracing::warn!("sim: node {id}'s end refused: {e}");
                }
                self.deliver_outputs();
            }
            Event::ToNode(id, msg) => {
                let _span = tracing::debug_span!("node", id).entered();
                let node = &mut self.nodes[id as usize - 1];
                node.received.push((now, msg.clone()));
                node.session.handle_message(now, msg);
                self.after_session(id);
            }
            Event::LinkUp(id, peer) => {
                self.nodes[id as usize - 1].session.handle_link_up(peer);
                self.after_session(id);
            }
            Event::LinkDown(id, peer) => {
                self.nodes[id as usize - 1].session.handle_link_down(peer);
                self.after_session(id);
            }
            Event::SessionTimer(id) => {
                let node = &mut self.nodes[id as usize - 1];
                if node.timer == Some(now) {
                    node.timer = None;
                    node.session.handle_timeout(now);
                    self.after_session(id);
                }
            }
            Event::Emulator(id, peer) => self.emulate(id, peer),
            Event::Inject(id, packet) => self.route(id, packet, None),
            Event::CoordinatorTimer => {
                self.coordinator_timer = None;
                self.coordinator.handle_timeout(now);
                self.deliver_outputs();
            }
            Event::HostTimer => {
                if self.host_timer.is_some_and(|at| at <= now) {
                    self.host_timer = None;
                    let answer = self.host.handle_timeout(now);
                    self.take_answer(answer);
                }
            }
        }
        self.keep_coordinator_timer();
        self.keep_host_timer();
    }

    /// Keeps one wake-up queued for the host stacks' next timeout (a moved one is stale and
    /// does nothing when it comes).
    fn keep_host_timer(&mut self) {
        if let Some(at) = self.host.poll_timeout()
            && self.host_timer.is_none_or(|t| at < t)
        {
            // Never at the same instant again: what is due now was just done.
            let at = at.max(self.now + Duration::from_micros(1));
            self.host_timer = Some(at);
            self.schedule(at, Event::HostTimer);
        }
    }

    /// The agent hosting node `id`: the nodes are split into blocks, one per agent.
    fn agent_of(&self, id: u32) -> AgentId {
        let n = self.nodes.len() as u32;
        let per_agent = n.div_ceil(self.spec.agents.clamp(1, n.max(1)));
        AgentId::from((id - 1) / per_agent + 1)
    }

    /// Keeps one wake-up queued for the coordinator's next timeout.
    fn keep_coordinator_timer(&mut self) {
        if let Some(at) = self.coordinator.poll_timeout()
            && self.coordinator_timer != Some(at)
        {
            self.coordinator_timer = Some(at);
            self.schedule(at.max(self.now), Event::CoordinatorTimer);
        }
    }

    /// Delivers what the coordinator decided.
    fn deliver_outputs(&mut self) {
        while let Some(out) = self.coordinator.poll_output() {
            match out {
                Output::Node(id, m)
                | Output::Agent(_, proto::ControllerToAgent::ToNode { node: id, msg: m }) => {
                    let at = self.now + self.spec.control_delay;
                    self.schedule(at, Event::ToNode(id, m));
                }
                Output::Agent(..) => {}
                Output::Milestone(m) => self.milestones.push((self.now, m)),
            }
        }
    }

    /// Carries out a session's actions, then keeps its timer.
    fn after_session(&mut self, id: u32) {
        let now = self.now;
        let control = now + self.spec.control_delay;
        while let Some(action) = self.nodes[id as usize - 1].session.poll_action() {
            match action {
                Action::Send(msg) => self.schedule(control, Event::FromNode(id, msg)),
                Action::StartDataplane {
                    overlay_addr,
                    prefix_len,
                    ..
                } => {
                    self.nodes[id as usize - 1].forwarder =
                        Some(Forwarder::new(id, overlay_addr, prefix_len));
                }
                Action::Accept | Action::StopAccepting | Action::Discard { .. } => {}
                Action::AcceptFlows { port } => {
                    self.host.listen(id, port);
                    self.nodes[id as usize - 1]
                        .session
                        .handle_flow_event(FlowEvent::Listening);
                }
                Action::StartFlow(order) => {
                    let answer = self.host.start_flow(now, id, &order, self.spec.flow_window);
                    self.take_answer(answer);
                }
                Action::Connect {
                    peer, transport, ..
                } => {
                    if transport == Transport::Local {
                        // Both ends ask; the link is up once both have.
                        if self.half_paired.remove(&(peer, id)) {
                            self.schedule(now, Event::LinkUp(id, peer));
                            self.schedule(now, Event::LinkUp(peer, id));
                        } else {
                            self.half_paired.insert((id, peer));
                        }
                    } else {
                        let at = now + self.spec.dial_delay;
                        self.schedule(at, Event::LinkUp(id, peer));
                        self.schedule(at, Event::LinkUp(peer, id));
                    }
                }
                Action::Attach { peer, params } => {
                    let node = &mut self.nodes[id as usize - 1];
                    if node.forwarder.is_some() {
                        let seed = u64::from(id) << 32 | u64::from(peer);
                        node.links.insert(
                            peer,
                            SimLink {
                                emulator: linkem::Link::new(params, seed),
                                flows: Default::default(),
                                wake: None,
                            },
                        );
                    }
                }
                Action::Detach { peer } => {
                    self.nodes[id as usize - 1].links.remove(&peer);
                }
                Action::SetGroups { set, removed } => {
                    if let Some(f) = &mut self.nodes[id as usize - 1].forwarder {
                        f.set_groups(set, &removed);
                    }
                }
                Action::SetRoutes { routes, pinned } => {
                    if let Some(f) = &mut self.nodes[id as usize - 1].forwarder {
                        f.set_table(RouteTable {
                            entries: routes,
                            pinned,
                        });
                    }
                }
                Action::ChangeLink { peer, change } => {
                    if let Some(l) = self.nodes[id as usize - 1].links.get_mut(&peer) {
                        l.emulator.apply(now, &change);
                    }
                }
                Action::ReadCounters => {
                    let time_ns = self.unix_ns(now);
                    let node = &mut self.nodes[id as usize - 1];
                    let mut flows = Vec::new();
                    let counters = node
                        .links
                        .iter_mut()
                        .map(|(&peer, l)| {
                            l.flows.take(peer, &mut flows);
                            proto::LinkCounters {
                                peer,
                                counters: l.emulator.counters(),
                                queue_packets: l.emulator.queue_depth(now) as u64,
                            }
                        })
                        .collect();
                    let mut apps = Vec::new();
                    node.apps.take(time_ns, &mut apps);
                    node.session.handle_counters(counters, flows, apps, time_ns);
                }
                Action::Close(end) => {
                    let node = &mut self.nodes[id as usize - 1];
                    node.closed = Some(end);
                    node.forwarder = None;
                    node.links.clear();
                    self.schedule(control, Event::NodeGone(id));
                }
            }
        }
        let node = &mut self.nodes[id as usize - 1];
        if let Some(at) = node.session.poll_timeout()
            && node.timer != Some(at)
        {
            node.timer = Some(at);
            self.schedule(at, Event::SessionTimer(id));
        }
    }

    /// Changes a link, both directions, as `nextmini link set` does.
    pub fn set_link(&mut self, a: u32, b: u32, change: &str) -> Result<LinkParams, String> {
        let change = LinkChange::from_short(change).map_err(|e| e.to_string())?;
        let params = self
            .coordinator
            .handle_set_link(self.now, a, b, &change)
            .map_err(|e| e.to_string())?;
        self.deliver_outputs();
        Ok(params)
    }

    /// Pins a route, as `nextmini route set` does; it is applied once the nodes confirm
    /// ([`Sim::routes_applied`]).
    pub fn set_route(
        &mut self,
        req: controller::coordinator::RouteRequest,
    ) -> Result<controller::coordinator::RouteChange, String> {
        let change = self
            .coordinator
            .handle_set_route(self.now, req)
            .map_err(|e| e.to_string())?;
        self.deliver_outputs();
        Ok(change)
    }

    /// Unpins routes, as `nextmini route clear` does.
    pub fn clear_routes(
        &mut self,
        filter: controller::coordinator::RouteFilter,
    ) -> controller::coordinator::RouteChange {
        let change = self.coordinator.handle_clear_routes(self.now, filter);
        self.deliver_outputs();
        change
    }

    /// Creates a multicast group of `source` with these members, as `nextmini group create`
    /// does.
    pub fn create_group(
        &mut self,
        source: u32,
        members: &[u32],
    ) -> Result<controller::coordinator::GroupRow, String> {
        self.group_op(GroupOp::Create {
            source,
            address: None,
            members: members.to_vec(),
        })
    }

    /// Nodes join (or leave) a group, as `nextmini group join` (`leave`) does.
    pub fn group_members(
        &mut self,
        group: Ipv4Addr,
        nodes: &[u32],
        join: bool,
    ) -> Result<controller::coordinator::GroupRow, String> {
        let nodes = nodes.to_vec();
        self.group_op(if join {
            GroupOp::Join { group, nodes }
        } else {
            GroupOp::Leave { group, nodes }
        })
    }

    /// Sets a group's trees from outside (None: back to the shortest-path tree).
    pub fn set_group_trees(
        &mut self,
        group: Ipv4Addr,
        trees: Option<Vec<topology::multicast::TreeSpec>>,
    ) -> Result<controller::coordinator::GroupRow, String> {
        self.group_op(GroupOp::Trees { group, trees })
    }

    /// Any change to the groups, as the API makes it (`delete` among them).
    pub fn group_op(&mut self, op: GroupOp) -> Result<controller::coordinator::GroupRow, String> {
        let row = self
            .coordinator
            .handle_group_op(op)
            .map_err(|e| e.to_string())?;
        self.deliver_outputs();
        Ok(row)
    }

    /// A program in `node` joins (or leaves) `group`: its kernel sends an IGMPv3 report out of
    /// the TUN device.
    pub fn igmp(&mut self, node: u32, group: Ipv4Addr, joined: bool) {
        // One record: change to exclude {} (join) or to include {} (leave).
        let mut report = vec![
            0x22,
            0,
            0,
            0,
            0,
            0,
            0,
            1,
            if joined { 4 } else { 3 },
            0,
            0,
            0,
        ];
        report.extend(group.octets());
        let p = packets::ipv4(
            overlay(node),
            Ipv4Addr::new(224, 0, 0, 22),
            1,
            dataplane::packet::IGMP,
            &report,
        );
        self.schedule(self.now, Event::Inject(node, p));
    }

    /// Sends datagram `seq` of flow `flow` (its UDP source port) from `src` to `group`.
    pub fn send_to_group(&mut self, src: u32, group: Ipv4Addr, flow: u16, seq: u32) {
        let mut udp = vec![0u8; 12];
        udp[0..2].copy_from_slice(&flow.to_be_bytes());
        udp[2..4].copy_from_slice(&5000u16.to_be_bytes());
        udp[4..6].copy_from_slice(&12u16.to_be_bytes());
        udp[8..12].copy_from_slice(&seq.to_be_bytes());
        let p = packets::ipv4(overlay(src), group, 64, dataplane::packet::UDP, &udp);
        self.schedule(self.now, Event::Inject(src, p));
    }

    /// The sequence numbers of the datagrams to `group` that `node` took up, in order.
    pub fn group_received(&self, node: u32, group: Ipv4Addr) -> &[u32] {
        self.group_received
            .get(&(node, group))
            .map_or(&[], Vec::as_slice)
    }

    /// When the routes of `version` were in place at every node they went to, measured from
    /// the change, and how many nodes that was.
    pub fn routes_applied(&self, version: u64) -> Option<(Duration, usize)> {
        self.milestones.iter().find_map(|(_, m)| match m {
            Milestone::RoutesApplied {
                version: v,
                nodes,
                elapsed,
            } if *v == version => Some((*elapsed, *nodes)),
            _ => None,
        })
    }

    /// A node's agent loses it (its session ends without a word).
    pub fn lose_node(&mut self, id: u32) {
        let node = &mut self.nodes[id as usize - 1];
        node.closed = Some(SessionEnd::ControllerGone);
        node.forwarder = None;
        node.links.clear();
        let at = self.now + self.spec.control_delay;
        self.schedule(at, Event::NodeGone(id));
        // Its neighbours' links to it break.
        let peers: Vec<u32> = self.coordinator.topology().adjacency()[id as usize - 1].clone();
        for p in peers {
            self.schedule(at, Event::LinkDown(p, id));
        }
    }

    /// Routes a packet at `node`: from its TUN device, or arriving from the link from `from`.
    fn route(&mut self, id: u32, packet: Vec<u8>, from: Option<u32>) {
        let time_ns = self.unix_ns(self.now);
        let node = &mut self.nodes[id as usize - 1];
        if from.is_none() {
            node.apps.observe(time_ns, &packet);
        }
        let Some(forwarder) = &node.forwarder else {
            return;
        };
        let links = &node.links;
        match forwarder.forward(SimPacket(packet), from, |peer| links.contains_key(&peer)) {
            Hop::Tun(p) => self.deliver_up(id, p.0),
            Hop::Link(peer, p) => self.send_on(id, peer, p),
            Hop::Copies { tun, links } => {
                if let Some(p) = tun {
                    self.deliver_up(id, p.0);
                }
                for (peer, p) in links {
                    if self.nodes[id as usize - 1].links.contains_key(&peer) {
                        self.send_on(id, peer, p);
                    }
                }
            }
            Hop::Membership(changes) => {
                for (group, joined) in changes {
                    self.nodes[id as usize - 1]
                        .session
                        .handle_membership(group, joined);
                }
                self.after_session(id);
            }
            Hop::Drop(why) => *self.dropped.entry(why).or_default() += 1,
        }
    }

    /// Puts a packet on the link from `id` to `peer` (which exists).
    fn send_on(&mut self, id: u32, peer: u32, p: SimPacket) {
        let now = self.now;
        let link = self.nodes[id as usize - 1]
            .links
            .get_mut(&peer)
            .expect("asked above");
        let _ = link.emulator.handle_arrival(now, p);
        if let Some(t) = link.emulator.poll_timeout()
            && link.wake.is_none_or(|w| t < w)
        {
            link.wake = Some(t);
            self.schedule(t, Event::Emulator(id, peer));
        }
    }

    /// Packets due on the direction `id` → `peer` reach the peer.
    fn emulate(&mut self, id: u32, peer: u32) {
        let now = self.now;
        let Some(link) = self.nodes[id as usize - 1].links.get_mut(&peer) else {
            return;
        };
        if link.wake.is_some_and(|w| w > now) {
            return; // an earlier wake-up was moved; this one is stale
        }
        link.wake = None;
        let mut due = Vec::new();
        while let Some(p) = link.emulator.poll_departure(now) {
            if let Some(key) = dataplane::monitor::flow_key(&p.0) {
                link.flows.record(key, p.0.len() as u64);
            }
            due.push(p);
        }
        if let Some(t) = link.emulator.poll_timeout() {
            link.wake = Some(t);
            self.schedule(t, Event::Emulator(id, peer));
        }
        for p in due {
            self.route(peer, p.0, Some(id));
        }
    }

    /// A packet for `node` itself: its host stack takes it (datagrams to a group are counted
    /// by [`Sim::group_received`]).
    fn deliver_up(&mut self, id: u32, packet: Vec<u8>) {
        if let Ok(p) = dataplane::packet::Ipv4Packet::new_checked(&packet[..])
            && p.dst_addr().is_multicast()
        {
            let seq = p
                .payload()
                .get(8..12)
                .map_or(0, |b| u32::from_be_bytes(b.try_into().expect("four bytes")));
            self.group_received
                .entry((id, p.dst_addr()))
                .or_default()
                .push(seq);
            return;
        }
        let answer = self.host.receive(self.now, id, &packet);
        self.take_answer(answer);
    }

    /// Sends what a host stack answered, and hands flow events to the sessions.
    fn take_answer(&mut self, answer: host::Answer) {
        let now = self.now;
        for (node, p) in answer.packets {
            self.schedule(now, Event::Inject(node, p));
        }
        for (node, event) in answer.events {
            self.nodes[node as usize - 1]
                .session
                .handle_flow_event(event);
            self.after_session(node);
        }
    }

    /// Sends one ping from `from` to `to` (TTL 64) and waits up to `timeout` for the answer.
    pub fn ping(&mut self, from: u32, to: u32, timeout: Duration) -> Option<PingReply> {
        self.probe(from, overlay(to), 64, timeout)
    }

    fn probe(&mut self, from: u32, to: Ipv4Addr, ttl: u8, timeout: Duration) -> Option<PingReply> {
        let (key, packet) = self.host.echo_request(self.now, from, to, ttl);
        self.schedule(self.now, Event::Inject(from, packet));
        let deadline = self.now + timeout;
        self.run_while(deadline, |s| !s.host.answered(key));
        self.host.answer(key)
    }

    /// The hops from `from` to `to`, as traceroute finds them: the address that answers each
    /// TTL, until the destination does.
    pub fn trace(&mut self, from: u32, to: u32) -> Vec<Ipv4Addr> {
        let mut hops = Vec::new();
        for ttl in 1..=32 {
            match self.probe(from, overlay(to), ttl, Duration::from_secs(2)) {
                Some(reply) => {
                    hops.push(reply.from);
                    if reply.from == overlay(to) {
                        break;
                    }
                }
                None => break,
            }
        }
        hops
    }

    /// Starts a bulk transfer from `src` to `dst`: 1,500-byte packets, each acknowledged, at
    /// most `window` unacknowledged (it starts at 10 and grows by one per acknowledgement).
    pub fn start_bulk(&mut self, src: u32, dst: u32, window: u32) -> BulkId {
        let (id, packets) = self.host.start_bulk(src, dst, window);
        for p in packets {
            self.schedule(self.now, Event::Inject(src, p));
        }
        id
    }

    /// Bytes of a bulk transfer delivered to its receiver so far (whole IP packets).
    pub fn bulk_received(&self, id: BulkId) -> u64 {
        self.host.bulk_received(id)
    }

    /// Adds a flow as the API does (the id stands for the store's).
    pub fn add_flow(
        &mut self,
        id: u64,
        src: u32,
        dst: u32,
        spec: proto::FlowSpec,
        start: Duration,
    ) -> Result<(), String> {
        self.coordinator
            .handle_add_flow(self.now, id, src, dst, spec, start)
            .map_err(|e| e.to_string())?;
        self.deliver_outputs();
        self.keep_coordinator_timer();
        Ok(())
    }

    /// Adds an experiment's flows (`[[flows]]`, `[[workload]]`) with ids from 1, as a run
    /// does with the ids its store gives them.
    pub fn add_experiment_flows(&mut self, exp: &experiment::Experiment) -> Result<(), String> {
        for (i, f) in exp.flows.iter().enumerate() {
            self.add_flow(i as u64 + 1, f.src, f.dst, f.spec.clone(), f.start)?;
        }
        Ok(())
    }

    /// Every flow and what is known of it.
    pub fn flows(&self) -> Vec<controller::flows::FlowRow> {
        self.coordinator.flow_rows()
    }

    /// Runs until every flow is finished or failed (at most `limit` more of virtual time).
    pub fn run_until_flows_done(&mut self, limit: Duration) -> bool {
        use controller::flows::FlowState::{Failed, Finished};
        let deadline = self.now + limit;
        let done = |s: &Sim| {
            s.coordinator
                .flow_rows()
                .iter()
                .all(|f| matches!(f.state, Finished | Failed))
        };
        if done(self) {
            return true;
        }
        self.run_while(deadline, |s| !done(s));
        done(self)
    }

    /// The dial address the controller gave, for tests of the control protocol.
    pub fn link_addr(id: u32) -> SocketAddrV4 {
        SocketAddrV4::new(underlay(id), LINK_PORT)
    }
}
