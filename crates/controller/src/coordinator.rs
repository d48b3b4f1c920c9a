//! The controller's decisions, as a state machine without sockets or clocks.
//!
//! Calling order: feed each message from an agent or node session to the matching `handle_*`
//! method with the time it arrived, then drain [`Coordinator::poll_output`] until it returns
//! `None` and deliver what it yields. Time only ever comes in as an argument.
//!
//! Readiness: a link is up when both its ends have reported it; a node is ready when it says so
//! (all its links are up, or their peers failed); the topology is ready when every node is
//! either ready or failed and at least one is ready. Failed nodes are reported, not fatal.

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

pub use experiment::LinkPlan;

use crate::flows::{FlowOutput, FlowRow, FlowTable};
use proto::{ControllerToAgent, ControllerToNode, LinkChange, LinkParams, Neighbour, Transport};
use topology::Topology;
use topology::routing::Metric;

mod groups;
mod routes;
pub use groups::{GroupError, GroupEvent, GroupEventKind, GroupOp, GroupRow};
pub use routes::{PathRow, RouteChange, RouteError, RouteFilter, RouteRequest, RouteRow};

pub type AgentId = u64;

/// Settings the controller hands out.
#[derive(Debug, Clone)]
pub struct Settings {
    pub overlay_base: Ipv4Addr,
    pub overlay_prefix_len: u8,
    /// Carry every link over the network, even between nodes of one agent (`protocol`).
    pub force_network: bool,
    /// What carries links over the network: TCP, UDP or QUIC (`protocol`).
    pub network_transport: Transport,
    /// The congestion controller of QUIC links.
    pub quic_congestion: proto::QuicCongestion,
    /// How lossless flows are cut and protected (`[lossless_runtime_config]`).
    pub lossless: proto::LosslessConfig,
    /// Links with a transport of their own (`[[link]] protocol`), by their ends, lower first.
    pub link_protocols: std::collections::BTreeMap<(u32, u32), Transport>,
    /// Port nodes use to reach the controller at their gateway.
    pub node_port: u16,
    /// Nodes may be spread over several agents, so links between them go over TCP.
    pub multi_host: bool,
    /// Nodes get TUN devices and forward packets along the routes.
    pub dataplane: bool,
    /// MTU of the nodes' TUN devices.
    pub mtu: u16,
    pub links: LinkPlan,
    /// What shortest paths minimise.
    pub metric: topology::routing::Metric,
    /// Routes pinned by the experiment file (`[[routes]]`), checked against the topology.
    pub explicit_routes: Vec<topology::routing::ExplicitRoute>,
    /// Where nodes take generated flows.
    pub flow_port: u16,
    /// How often nodes report their counters.
    pub metrics_interval_ms: u32,
    /// Nodes in max mode, ascending.
    pub max_nodes: Vec<u32>,
    /// Where multicast groups take their addresses (`multicast_pool_base`, `_mask`).
    pub multicast_pool: proto::MulticastPool,
}

/// Why an agent was refused (the agent is told the same words).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("an agent must register first")]
    NotRegister,
    #[error(
        "agent speaks protocol version {agent}, the controller {controller}: run the same nextmini build on both"
    )]
    Version { agent: u32, controller: u32 },
    #[error("the agent has no nodes: give it --n-nodes or --nodes")]
    NoNodes,
    #[error(
        "the agent has nodes {ids} but the topology ({topology}) has {total} nodes (1..={total}): set the agent's n_nodes and node_id_offset (or --nodes) to fit (--n-nodes {total} for one host)"
    )]
    OutOfRange {
        ids: String,
        topology: String,
        total: u32,
    },
    #[error(
        "nodes {ids} are already on agent {agent}: give each host its own nodes (node_id_offset or --nodes)"
    )]
    Taken { ids: String, agent: AgentId },
    #[error(
        "node {node} is not this agent's (it has {nodes}): an agent speaks only for its own nodes"
    )]
    NotItsNode { node: u32, nodes: String },
    #[error("node {node} has no session through this agent: a node says hello first")]
    NotCarried { node: u32 },
    #[error("node {node}'s session said hello as node {said}")]
    HelloAsAnother { node: u32, said: u32 },
}

/// Why a node's hello was refused (the node is told the same words).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    #[error("a node must say hello first")]
    NotHello,
    #[error("node speaks protocol version {node}, the controller {controller}")]
    Version { node: u32, controller: u32 },
    #[error("node {node} is not in the topology, which has nodes 1..={total}")]
    NotInTopology { node: u32, total: u32 },
    #[error("node {0} is connected already")]
    AlreadyConnected(u32),
    #[error("node {node} is not one of this agent's nodes ({nodes})")]
    NotItsNode { node: u32, nodes: String },
}

/// A change to something the topology lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("there is no link {a}-{b} in {topology}")]
    NoLink { a: u32, b: u32, topology: String },
    #[error(
        "the link {a}-{b} joins two max-mode nodes, which the kernel carries with a rate, a burst and a queue only: it can't take {what}"
    )]
    BeyondTheKernel { a: u32, b: u32, what: String },
}

/// Something to deliver or to tell the world.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Node(u32, ControllerToNode),
    Agent(AgentId, ControllerToAgent),
    Milestone(Milestone),
}

/// Lifecycle events, for logs, progress bars and the store.
#[derive(Debug, Clone, PartialEq)]
pub enum Milestone {
    AgentRegistered {
        agent: AgentId,
        host: String,
        /// Its node ids, as ranges: `1-4,9`.
        nodes: String,
    },
    Plumbed {
        done: u32,
    },
    PlumbingDone {
        agent: AgentId,
        seconds: f64,
        mem_per_node_bytes: u64,
    },
    NodeConnected {
        node: u32,
        underlay_addr: Ipv4Addr,
        connected: u32,
    },
    AllConnected {
        nodes: u32,
        since_first: Duration,
    },
    LinkUp {
        a: u32,
        b: u32,
        links_up: u32,
    },
    LinkDown {
        a: u32,
        b: u32,
    },
    NodeReady {
        node: u32,
        ready: u32,
    },
    NodeFailed {
        node: u32,
        reason: String,
    },
    TopologyReady {
        wiring: Duration,
    },
    AgentGone {
        agent: AgentId,
        lost_nodes: u32,
    },
    /// An agent removed everything of its nodes from view (it may still be closing their
    /// TUN devices, which the kernel frees in the background).
    AgentTornDown {
        agent: AgentId,
        seconds: f64,
        /// Its nodes were kept for the next run instead (`down --keep`).
        kept: bool,
    },
    /// A generated flow changed state.
    Flow(Box<FlowRow>),
    /// A multicast group changed.
    Group(Box<GroupEvent>),
    /// A node's report: its links' and flows' traffic over the interval.
    Metrics(Box<crate::metrics::MetricsReport>),
    /// Every node sent the routes of `version` has them in place.
    RoutesApplied {
        version: u64,
        nodes: usize,
        elapsed: Duration,
    },
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Wiring,
    Ready,
    /// Teardown was asked for: sessions closing now are not failures.
    Down,
}

/// Where a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Not connected yet.
    Pending,
    Connected,
    Ready,
    Failed,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Wiring => "wiring",
            Phase::Ready => "ready",
            Phase::Down => "down",
        })
    }
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Pending => "pending",
            NodeState::Connected => "connected",
            NodeState::Ready => "ready",
            NodeState::Failed => "failed",
        }
    }
}

#[derive(Debug, Default, Clone)]
struct NodeSlot {
    agent: Option<AgentId>,
    /// The node's session travels inside this agent's session: messages to it go there.
    carried_by: Option<AgentId>,
    connected: bool,
    link_addr: Option<SocketAddrV4>,
    ready: bool,
    failed: bool,
}

#[derive(Debug, Clone)]
struct AgentSlot {
    /// The agent's node ids, ascending.
    ids: Vec<u32>,
    plumbed: u32,
}

/// A read-only view of the state, for the HTTP API.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Status {
    pub phase: Phase,
    pub topology: String,
    pub nodes: u32,
    pub links: usize,
    pub plumbed: u32,
    pub connected: u32,
    pub ready: u32,
    pub failed: u32,
    pub links_up: u32,
    pub wiring_seconds: Option<f64>,
    pub agents: usize,
    /// Generated flows by state.
    #[serde(default)]
    pub flows: BTreeMap<String, usize>,
}

pub struct Coordinator {
    topology: Topology,
    /// Every node's forwarding table, when there is a dataplane.
    router: Option<topology::routing::Router>,
    /// The router is being computed elsewhere (see [`Coordinator::without_routes`]): links
    /// that change meanwhile are told to it when it arrives.
    routes_pending: Option<Vec<(u32, u32)>>,
    /// Latest counters per link direction (from, to).
    counters: std::collections::HashMap<(u32, u32), proto::LinkCounters>,
    /// When each node last reported (Unix time, nanoseconds).
    report_times: std::collections::HashMap<u32, u64>,
    adjacency: Vec<Vec<u32>>,
    settings: Settings,
    agents: BTreeMap<AgentId, AgentSlot>,
    nodes: Vec<NodeSlot>,
    /// Per link (same order as `topology.edges()`): ends reported up (bit 0: lower id).
    link_ends: Vec<u8>,
    connected: u32,
    ready: u32,
    failed: u32,
    links_up: u32,
    first_hello: Option<Instant>,
    wiring: Option<Duration>,
    phase: Phase,
    flows: FlowTable,
    /// The latest version of routes sent, and the changes not yet confirmed by every node.
    route_version: u64,
    route_waits: BTreeMap<u64, routes::RouteWait>,
    /// Routes asked for single flows, by flow id (set once the flow's connection is open).
    flow_routes: BTreeMap<u64, routes::RouteRequest>,
    /// Multicast groups, by address.
    groups: BTreeMap<Ipv4Addr, groups::GroupState>,
    /// The experiment's groups (`[[groups]]`), made once the topology is ready.
    planned_groups: Vec<experiment::groups::PlannedGroup>,
    /// Nodes whose programs hold a membership of an address of the pool (their kernels' IGMP
    /// reports), group or not: members of the group at that address whenever it exists (a
    /// host's membership does not wait for a sender).
    igmp_members: BTreeMap<Ipv4Addr, std::collections::BTreeSet<u32>>,
    out: VecDeque<Output>,
}

/// A flow that can't be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddFlowError {
    #[error("{0}")]
    Invalid(String),
    #[error("flows need the dataplane (the experiment runs without TUN devices)")]
    NoDataplane,
    #[error("the run is being torn down")]
    Down,
}

impl Coordinator {
    pub fn new(topology: Topology, settings: Settings) -> Self {
        let router = Self::build_router(&topology, &settings);
        let mut c = Self::without_routes(topology, settings);
        if let Some(router) = router {
            c.router = Some(router);
            c.routes_pending = None;
        }
        c
    }

    /// Every node's forwarding table for the experiment as it starts (None without a
    /// dataplane). Quadratic in the node count (3 s for a 10,000-node ring here), so `run`
    /// computes it while the agents plumb and hands it over with
    /// [`Coordinator::handle_router`].
    pub fn build_router(
        topology: &Topology,
        settings: &Settings,
    ) -> Option<topology::routing::Router> {
        settings.dataplane.then(|| {
            let links = &settings.links;
            topology::routing::Router::new(
                topology,
                settings.metric,
                |a, b| link_weight(&links.params(a, b)),
                settings.explicit_routes.clone(),
            )
        })
    }

    /// A coordinator that takes agents and nodes at once but sends no routes, and declares
    /// no topology ready, until its router arrives ([`Coordinator::handle_router`]).
    pub fn without_routes(topology: Topology, settings: Settings) -> Self {
        let n = topology.n_nodes() as usize;
        Coordinator {
            router: None,
            routes_pending: settings.dataplane.then(Vec::new),
            counters: Default::default(),
            report_times: Default::default(),
            adjacency: topology.adjacency(),
            link_ends: vec![0; topology.n_links()],
            topology,
            agents: BTreeMap::new(),
            nodes: vec![NodeSlot::default(); n],
            connected: 0,
            ready: 0,
            failed: 0,
            links_up: 0,
            first_hello: None,
            wiring: None,
            phase: Phase::Wiring,
            flows: FlowTable::new(settings.flow_port, settings.overlay_base)
                .with_lossless(settings.lossless),
            route_version: 0,
            route_waits: BTreeMap::new(),
            flow_routes: BTreeMap::new(),
            groups: BTreeMap::new(),
            planned_groups: Vec::new(),
            igmp_members: BTreeMap::new(),
            out: VecDeque::new(),
            settings,
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        match self.out.pop_front()? {
            Output::Node(node, msg) => match self.slot(node).and_then(|s| s.carried_by) {
                Some(agent) => Some(Output::Agent(
                    agent,
                    proto::ControllerToAgent::ToNode { node, msg },
                )),
                None => Some(Output::Node(node, msg)),
            },
            out => Some(out),
        }
    }

    fn emit(&mut self, m: Milestone) {
        self.out.push_back(Output::Milestone(m));
    }

    fn slot(&self, node: u32) -> Option<&NodeSlot> {
        node.checked_sub(1).and_then(|i| self.nodes.get(i as usize))
    }

    fn slot_mut(&mut self, node: u32) -> Option<&mut NodeSlot> {
        node.checked_sub(1)
            .and_then(|i| self.nodes.get_mut(i as usize))
    }

    /// An agent registers its node id range `offset+1 ..= offset+n`.
    pub fn handle_agent_register(
        &mut self,
        agent: AgentId,
        msg: &proto::AgentToController,
    ) -> Result<(), RegisterError> {
        let proto::AgentToController::Register {
            version,
            host,
            n_nodes,
            node_id_offset,
            node_ids,
            ..
        } = msg
        else {
            return Err(RegisterError::NotRegister);
        };
        // A block by count and offset (the seeds' way), or any set a scheduler gave it.
        let ids: Vec<u32> = if node_ids.is_empty() {
            (u64::from(*node_id_offset) + 1..=u64::from(*node_id_offset) + u64::from(*n_nodes))
                .map(|i| u32::try_from(i).unwrap_or(u32::MAX))
                .collect()
        } else {
            let mut ids = node_ids.clone();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        let verdict = self.check_agent(*version, &ids);
        if let Err(reason) = &verdict {
            self.out.push_back(Output::Agent(
                agent,
                ControllerToAgent::Rejected {
                    reason: reason.to_string(),
                },
            ));
            return verdict;
        }
        for &id in &ids {
            self.slot_mut(id).expect("ids checked").agent = Some(agent);
        }
        let nodes = topology::ids::format_ids(&ids);
        self.agents.insert(agent, AgentSlot { ids, plumbed: 0 });
        self.out.push_back(Output::Agent(
            agent,
            ControllerToAgent::Accepted {
                node_port: self.settings.node_port,
                // One agent with local links needs no listener; several agents link over TCP.
                tcp_links: !self.network_transports().is_empty(),
                link_transport: self.settings.network_transport,
                quic_congestion: self.settings.quic_congestion,
                link_transports: self.network_transports(),
            },
        ));
        self.emit(Milestone::AgentRegistered {
            agent,
            host: host.clone(),
            nodes,
        });
        Ok(())
    }

    fn check_agent(&self, version: u32, ids: &[u32]) -> Result<(), RegisterError> {
        if version != proto::VERSION {
            return Err(RegisterError::Version {
                agent: version,
                controller: proto::VERSION,
            });
        }
        let total = self.topology.n_nodes();
        let (Some(&first), Some(&last)) = (ids.first(), ids.last()) else {
            return Err(RegisterError::NoNodes);
        };
        if first == 0 || last > total {
            return Err(RegisterError::OutOfRange {
                ids: topology::ids::format_ids(ids),
                topology: self.topology.label.clone(),
                total,
            });
        }
        let taken: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&id| self.slot(id).is_some_and(|s| s.agent.is_some()))
            .collect();
        if let Some(other) = taken
            .first()
            .and_then(|&id| self.slot(id))
            .and_then(|s| s.agent)
        {
            return Err(RegisterError::Taken {
                ids: topology::ids::format_ids(&taken),
                agent: other,
            });
        }
        Ok(())
    }

    /// Any message from an agent's session.
    pub fn handle_agent_message(
        &mut self,
        now: Instant,
        agent: AgentId,
        msg: proto::AgentToController,
    ) -> Result<(), RegisterError> {
        use proto::AgentToController as A;
        if let A::Register { .. } = msg {
            return self.handle_agent_register(agent, &msg);
        }
        // A session speaks only for the nodes it registered: anything else on an unregistered
        // session, or about another agent's node, is refused (a program inside a node could
        // otherwise open a session and fail its neighbours).
        let Some(slot) = self.agents.get(&agent) else {
            return Err(RegisterError::NotRegister);
        };
        if let A::NodeFailed { node, .. } = &msg
            && slot.ids.binary_search(node).is_err()
        {
            return Err(RegisterError::NotItsNode {
                node: *node,
                nodes: topology::ids::format_ids(&slot.ids),
            });
        }
        match msg {
            A::Register { .. } => unreachable!("handled above"),
            A::Plumbed { done } => self.handle_agent_plumbed(agent, done),
            A::PlumbingDone {
                seconds,
                mem_available_before,
                mem_available_after,
            } => self.handle_agent_plumbing_done(
                agent,
                seconds,
                mem_available_before,
                mem_available_after,
            ),
            A::NodeFailed { node, reason } => self.handle_node_failed(now, node, reason),
            A::Failed { reason } => {
                tracing::error!("agent {agent} failed: {reason}");
                self.handle_agent_gone(now, agent);
            }
            A::TornDown { seconds, kept } => self.emit(Milestone::AgentTornDown {
                agent,
                seconds,
                kept,
            }),
            A::FromNode { node, msg } => self.handle_carried(now, agent, node, msg)?,
            A::NodeClosed { node } => {
                if self.slot(node).is_some_and(|s| s.carried_by == Some(agent)) {
                    self.handle_node_gone(now, node);
                }
            }
        }
        Ok(())
    }

    /// A message of a node session that `agent` carries.
    fn handle_carried(
        &mut self,
        now: Instant,
        agent: AgentId,
        node: u32,
        msg: proto::NodeToController,
    ) -> Result<(), RegisterError> {
        if let proto::NodeToController::Hello { node_id, .. } = msg {
            if node_id != node {
                return Err(RegisterError::HelloAsAnother {
                    node,
                    said: node_id,
                });
            }
            match self.handle_node_hello_via(now, agent, &msg) {
                // What the hello queued for the node (its welcome) goes through its agent too:
                // `poll_output` looks at `carried_by` as it hands outputs out.
                Ok(id) => self.slot_mut(id).expect("welcomed").carried_by = Some(agent),
                // Not to the node's own session: it may be another agent's node.
                Err(e) => {
                    tracing::warn!("node refused: {e}");
                    self.out.push_back(Output::Agent(
                        agent,
                        proto::ControllerToAgent::ToNode {
                            node: node_id,
                            msg: ControllerToNode::Rejected {
                                reason: e.to_string(),
                            },
                        },
                    ));
                }
            }
            return Ok(());
        }
        if self.slot(node).is_none_or(|s| s.carried_by != Some(agent)) {
            return Err(RegisterError::NotCarried { node });
        }
        self.handle_node_message(now, node, msg);
        Ok(())
    }

    /// Any message from a welcomed node's session (its hello goes to
    /// [`Coordinator::handle_node_hello`]).
    pub fn handle_node_message(&mut self, now: Instant, node: u32, msg: proto::NodeToController) {
        use proto::NodeToController as N;
        match msg {
            N::LinkUp { peer } => self.handle_link_up(node, peer),
            N::LinkDown { peer } => self.handle_link_down(node, peer),
            N::Ready => self.handle_node_ready(now, node),
            N::LinkStats {
                links,
                flows,
                app_flows,
                time_ns,
            } => self.handle_link_stats(node, links, flows, app_flows, time_ns),
            N::Failed { reason } => self.handle_node_failed(now, node, reason),
            N::Hello { .. } => tracing::warn!("node {node} said hello twice"),
            N::FlowsAccepted => self.flows.handle_accepted(node),
            N::FlowsRefused { reason } => self.flows.handle_refused(node, &reason),
            N::RoutesApplied { version } => self.handle_routes_applied(now, node, version),
            N::FlowStarted {
                id,
                local_port,
                start_ns,
            } => {
                self.flows.handle_started(node, id, local_port, start_ns);
                self.flow_started_route(now, id);
            }
            N::FlowSent { id, bytes, tcp, .. } => self.flows.handle_sent(node, id, bytes, tcp),
            N::FlowReceived {
                id,
                bytes,
                first_ns,
                last_ns,
            } => self
                .flows
                .handle_received(node, id, bytes, first_ns, last_ns),
            N::FlowFailed { id, reason } => self.flows.fail(id, format!("node {node}: {reason}")),
            N::GroupMember { group, joined } => self.handle_group_member(node, group, joined),
        }
        self.drain_flows();
    }

    /// Whether a flow would be taken.
    pub fn check_flow(
        &self,
        src: u32,
        dst: u32,
        spec: &proto::FlowSpec,
    ) -> Result<(), AddFlowError> {
        if !self.settings.dataplane {
            return Err(AddFlowError::NoDataplane);
        }
        if self.phase == Phase::Down {
            return Err(AddFlowError::Down);
        }
        experiment::flows::check_flow(&self.topology, src, dst, spec).map_err(AddFlowError::Invalid)
    }

    /// Adds a flow (its id is the store's) to start `start` after the topology is ready, or
    /// after `now` once it is.
    pub fn handle_add_flow(
        &mut self,
        now: Instant,
        id: u64,
        src: u32,
        dst: u32,
        spec: proto::FlowSpec,
        start: Duration,
    ) -> Result<(), AddFlowError> {
        self.check_flow(src, dst, &spec)?;
        self.flows.add(now, id, src, dst, spec, start);
        self.drain_flows();
        Ok(())
    }

    /// When [`Coordinator::handle_timeout`] wants to be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.flows.poll_timeout()
    }

    /// Starts what is due by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let nodes = &self.nodes;
        self.flows.handle_timeout(now, |n| {
            n.checked_sub(1)
                .and_then(|i| nodes.get(i as usize))
                .is_some_and(|s| s.connected && !s.failed)
        });
        self.drain_flows();
    }

    /// Every flow and what is known of it.
    pub fn flow_rows(&self) -> Vec<FlowRow> {
        self.flows.rows().cloned().collect()
    }

    pub fn flow(&self, id: u64) -> Option<&FlowRow> {
        self.flows.get(id)
    }

    fn drain_flows(&mut self) {
        while let Some(o) = self.flows.poll_output() {
            match o {
                FlowOutput::Node(n, m) => self.out.push_back(Output::Node(n, m)),
                FlowOutput::Changed(row) => {
                    self.out.push_back(Output::Milestone(Milestone::Flow(row)))
                }
            }
        }
    }

    pub fn handle_agent_plumbed(&mut self, agent: AgentId, done: u32) {
        if let Some(a) = self.agents.get_mut(&agent) {
            a.plumbed = done;
        }
        let total = self.agents.values().map(|a| a.plumbed).sum();
        self.emit(Milestone::Plumbed { done: total });
    }

    pub fn handle_agent_plumbing_done(
        &mut self,
        agent: AgentId,
        seconds: f64,
        before: u64,
        after: u64,
    ) {
        let nodes = self
            .agents
            .get(&agent)
            .map_or(1, |a| a.ids.len().max(1) as u64);
        self.emit(Milestone::PlumbingDone {
            agent,
            seconds,
            mem_per_node_bytes: before.saturating_sub(after) / nodes,
        });
    }

    /// The agent's session ended: nodes of it that were not ready are lost.
    pub fn handle_agent_gone(&mut self, now: Instant, agent: AgentId) {
        let Some(a) = self.agents.remove(&agent) else {
            return;
        };
        let mut lost = 0;
        for id in a.ids {
            let slot = self.slot(id).expect("ids checked");
            if !slot.failed && (self.phase == Phase::Wiring || slot.connected) {
                lost += 1;
                self.fail(now, id, "its agent disconnected".to_owned());
            }
        }
        self.emit(Milestone::AgentGone {
            agent,
            lost_nodes: lost,
        });
    }

    /// A node's hello carried by `agent`'s session: accepted only for a node that agent
    /// registered (a session speaks for its own nodes and no others).
    pub fn handle_node_hello_via(
        &mut self,
        now: Instant,
        agent: AgentId,
        msg: &proto::NodeToController,
    ) -> Result<u32, HelloError> {
        if let proto::NodeToController::Hello { node_id, .. } = *msg
            && self.slot(node_id).is_some_and(|s| s.agent != Some(agent))
        {
            let nodes = self.agents.get(&agent).map_or_else(
                || "none registered".to_owned(),
                |a| topology::ids::format_ids(&a.ids),
            );
            return Err(HelloError::NotItsNode {
                node: node_id,
                nodes,
            });
        }
        self.handle_node_hello(now, msg)
    }

    /// A node's hello. On `Err`, the session should be closed with the reason.
    pub fn handle_node_hello(
        &mut self,
        now: Instant,
        msg: &proto::NodeToController,
    ) -> Result<u32, HelloError> {
        let proto::NodeToController::Hello {
            version,
            node_id,
            underlay_addr,
            link_port,
        } = *msg
        else {
            return Err(HelloError::NotHello);
        };
        if version != proto::VERSION {
            return Err(HelloError::Version {
                node: version,
                controller: proto::VERSION,
            });
        }
        let total = self.topology.n_nodes();
        let Some(slot) = self.slot_mut(node_id) else {
            return Err(HelloError::NotInTopology {
                node: node_id,
                total,
            });
        };
        if slot.connected {
            return Err(HelloError::AlreadyConnected(node_id));
        }
        slot.connected = true;
        slot.link_addr = Some(SocketAddrV4::new(underlay_addr, link_port));
        let my_agent = slot.agent;
        self.first_hello.get_or_insert(now);
        self.connected += 1;

        let neighbours: Vec<Neighbour> = self.adjacency[node_id as usize - 1]
            .iter()
            .map(|&peer| {
                let same_agent =
                    my_agent.is_some() && self.slot(peer).and_then(|s| s.agent) == my_agent;
                let own = self
                    .settings
                    .link_protocols
                    .get(&(node_id.min(peer), node_id.max(peer)));
                let transport = if self.kernel_link(node_id, peer) {
                    Transport::Kernel
                } else if let Some(&own) = own {
                    own
                } else if same_agent && !self.settings.force_network {
                    Transport::Local
                } else {
                    self.settings.network_transport
                };
                Neighbour {
                    id: peer,
                    transport,
                    egress: self.settings.links.params(node_id, peer),
                }
            })
            .collect();
        self.out.push_back(Output::Node(
            node_id,
            ControllerToNode::Welcome {
                node_id,
                overlay_addr: proto::overlay_addr(self.settings.overlay_base, node_id),
                overlay_prefix_len: self.settings.overlay_prefix_len,
                neighbours: neighbours.clone(),
                dataplane: self.settings.dataplane,
                mtu: self.settings.mtu,
                metrics_interval_ms: self.settings.metrics_interval_ms,
                max_mode: self.max_mode(node_id),
            },
        ));
        if let Some(table) = self
            .router
            .as_ref()
            .and_then(|r| r.tables().get(node_id as usize - 1))
        {
            let message = to_routes(table, self.route_version);
            self.out.push_back(Output::Node(node_id, message));
        }
        // TCP links: once both ends are known, the higher id dials the lower.
        for n in &neighbours {
            let peer = self.slot(n.id).expect("adjacency is in range");
            if peer.failed {
                self.out.push_back(Output::Node(
                    node_id,
                    ControllerToNode::PeerFailed { peer: n.id },
                ));
                continue;
            }
            if matches!(n.transport, Transport::Local | Transport::Kernel) || !peer.connected {
                continue;
            }
            let (dialer, target) = if node_id > n.id {
                (node_id, n.id)
            } else {
                (n.id, node_id)
            };
            let at = self
                .slot(target)
                .and_then(|s| s.link_addr)
                .expect("connected");
            let addr = SocketAddrV4::new(*at.ip(), n.transport.port(at.port()));
            self.out.push_back(Output::Node(
                dialer,
                ControllerToNode::Dial { peer: target, addr },
            ));
        }
        self.emit(Milestone::NodeConnected {
            node: node_id,
            underlay_addr,
            connected: self.connected,
        });
        if self.connected + self.failed_unconnected() == total {
            self.emit(Milestone::AllConnected {
                nodes: total,
                since_first: now - self.first_hello.expect("set above"),
            });
        }
        Ok(node_id)
    }

    /// The transports links take over the network in this run: the run's own when some link
    /// leaves an agent (or `protocol` says so), and every link's own.
    fn network_transports(&self) -> Vec<Transport> {
        let mut all: Vec<Transport> = self.settings.link_protocols.values().copied().collect();
        if self.settings.force_network || self.settings.multi_host {
            all.push(self.settings.network_transport);
        }
        all.sort_by_key(|t| *t as u8);
        all.dedup();
        all
    }

    fn max_mode(&self, node: u32) -> bool {
        self.settings.max_nodes.binary_search(&node).is_ok()
    }

    /// Whether a–b is a link the kernel carries: both ends in max mode on one agent.
    fn kernel_link(&self, a: u32, b: u32) -> bool {
        let agent = |n: u32| self.slot(n).and_then(|s| s.agent);
        self.max_mode(a) && self.max_mode(b) && agent(a).is_some() && agent(a) == agent(b)
    }

    /// Whether `node`'s kernel forwards some of its traffic: it is in max mode with a
    /// max-mode neighbour on its agent (a kernel link), or may have one (not placed yet).
    fn forwards_in_kernel(&self, node: u32) -> bool {
        let agent = |n: u32| self.slot(n).and_then(|s| s.agent);
        self.max_mode(node)
            && self.adjacency[node as usize - 1].iter().any(|&peer| {
                self.max_mode(peer) && (agent(node).is_none() || agent(peer) == agent(node))
            })
    }

    fn failed_unconnected(&self) -> u32 {
        self.nodes
            .iter()
            .filter(|s| s.failed && !s.connected)
            .count() as u32
    }

    fn edge_index(&self, a: u32, b: u32) -> Option<usize> {
        self.topology
            .edges()
            .binary_search(&(a.min(b), a.max(b)))
            .ok()
    }

    pub fn handle_link_up(&mut self, node: u32, peer: u32) {
        let Some(i) = self.edge_index(node, peer) else {
            tracing::warn!("node {node} reports a link to {peer}, which the topology lacks");
            return;
        };
        let bit = if node < peer { 1 } else { 2 };
        let before = self.link_ends[i];
        self.link_ends[i] |= bit;
        if before != 3 && self.link_ends[i] == 3 {
            self.links_up += 1;
            self.emit(Milestone::LinkUp {
                a: node.min(peer),
                b: node.max(peer),
                links_up: self.links_up,
            });
        }
    }

    pub fn handle_link_down(&mut self, node: u32, peer: u32) {
        let Some(i) = self.edge_index(node, peer) else {
            return;
        };
        if self.link_ends[i] == 3 {
            self.links_up -= 1;
            self.emit(Milestone::LinkDown {
                a: node.min(peer),
                b: node.max(peer),
            });
        }
        self.link_ends[i] &= !(if node < peer { 1 } else { 2 });
    }

    pub fn handle_node_ready(&mut self, now: Instant, node: u32) {
        let Some(slot) = self.slot_mut(node) else {
            return;
        };
        if slot.ready || slot.failed {
            return;
        }
        slot.ready = true;
        self.ready += 1;
        self.emit(Milestone::NodeReady {
            node,
            ready: self.ready,
        });
        self.check_ready(now);
    }

    /// A node reported failure, or its session ended before the run was ready.
    pub fn handle_node_failed(&mut self, now: Instant, node: u32, reason: String) {
        self.fail(now, node, reason);
        self.check_ready(now);
    }

    /// A node's session ended.
    pub fn handle_node_gone(&mut self, now: Instant, node: u32) {
        let Some(slot) = self.slot(node) else {
            return;
        };
        if !slot.failed {
            self.fail(now, node, "its control connection closed".to_owned());
            self.check_ready(now);
        }
    }

    /// Teardown was asked for.
    pub fn handle_shutdown(&mut self) {
        self.phase = Phase::Down;
    }

    fn fail(&mut self, now: Instant, node: u32, reason: String) {
        if self.phase == Phase::Down {
            return;
        }
        let Some(slot) = self.slot_mut(node) else {
            return;
        };
        if slot.failed {
            return;
        }
        slot.failed = true;
        let was_ready = std::mem::replace(&mut slot.ready, false);
        if was_ready {
            self.ready -= 1;
        }
        self.failed += 1;
        for &peer in &self.adjacency[node as usize - 1].clone() {
            self.handle_link_down(node, peer);
            self.handle_link_down(peer, node);
            // Traffic goes round a failed node where another way exists.
            self.update_routes(now, node, peer);
            if self.slot(peer).is_some_and(|s| s.connected && !s.failed) {
                self.out.push_back(Output::Node(
                    peer,
                    ControllerToNode::PeerFailed { peer: node },
                ));
            }
        }
        self.emit(Milestone::NodeFailed { node, reason });
        self.forget_route_waits(now, node);
        self.flows.handle_node_failed(node);
        self.drain_flows();
    }

    /// The router computed for the experiment's start arrives: links changed since are told
    /// to it, every connected node gets its table, and the topology may become ready.
    pub fn handle_router(&mut self, now: Instant, router: topology::routing::Router) {
        let Some(changed) = self.routes_pending.take() else {
            return;
        };
        let mut router = router;
        for (a, b) in changed {
            router.set_link(a, b, self.route_weight(a, b), self.route_weight(b, a));
        }
        self.router = Some(router);
        let connected: Vec<u32> = (1..=self.topology.n_nodes())
            .filter(|&id| self.slot(id).is_some_and(|s| s.connected && !s.failed))
            .collect();
        if !connected.is_empty() {
            self.send_routes(now, connected);
        }
        self.check_ready(now);
    }

    fn check_ready(&mut self, now: Instant) {
        if self.phase != Phase::Wiring
            || self.routes_pending.is_some()
            || self.ready == 0
            || self.ready + self.failed != self.topology.n_nodes()
        {
            return;
        }
        self.phase = Phase::Ready;
        let wiring = now - self.first_hello.unwrap_or(now);
        self.wiring = Some(wiring);
        for id in 1..=self.topology.n_nodes() {
            let s = &self.nodes[id as usize - 1];
            if s.connected && !s.failed {
                self.out
                    .push_back(Output::Node(id, ControllerToNode::TopologyReady));
            }
        }
        self.emit(Milestone::TopologyReady { wiring });
        self.make_planned_groups();
        self.flows.handle_ready(now);
        self.drain_flows();
    }

    pub fn status(&self) -> Status {
        Status {
            phase: self.phase,
            topology: self.topology.label.clone(),
            nodes: self.topology.n_nodes(),
            links: self.topology.n_links(),
            plumbed: self.agents.values().map(|a| a.plumbed).sum(),
            connected: self.connected,
            ready: self.ready,
            failed: self.failed,
            links_up: self.links_up,
            wiring_seconds: self.wiring.map(|d| d.as_secs_f64()),
            agents: self.agents.len(),
            flows: self
                .flows
                .counts()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        }
    }

    /// Every node with its state, for the API and the store.
    pub fn node_rows(&self) -> Vec<NodeRow> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let id = i as u32 + 1;
                NodeRow {
                    node_id: id,
                    underlay_addr: s.link_addr.map(|a| a.ip().to_string()),
                    overlay_addr: proto::overlay_addr(self.settings.overlay_base, id).to_string(),
                    state: if s.failed {
                        NodeState::Failed
                    } else if s.ready {
                        NodeState::Ready
                    } else if s.connected {
                        NodeState::Connected
                    } else {
                        NodeState::Pending
                    },
                }
            })
            .collect()
    }

    /// The live view's codes: a letter per node (`p` pending, `c` connected, `r` ready, `f`
    /// failed) and a digit per link in topology order (`1` up both ways and not taken down).
    pub fn view_codes(&self) -> (String, String) {
        let nodes = self
            .nodes
            .iter()
            .map(|s| {
                if s.failed {
                    'f'
                } else if s.ready {
                    'r'
                } else if s.connected {
                    'c'
                } else {
                    'p'
                }
            })
            .collect();
        let links = self
            .topology
            .edges()
            .iter()
            .zip(&self.link_ends)
            .map(|(&(a, b), &ends)| {
                let up = ends == 3
                    && self.settings.links.params(a, b).up
                    && self.settings.links.params(b, a).up;
                if up { '1' } else { '0' }
            })
            .collect();
        (nodes, links)
    }

    /// A node's forwarding table as it was sent: shortest-path entries and pinned routes.
    pub fn node_routes(&self, node: u32) -> Option<NodeRoutes> {
        let table = self
            .router
            .as_ref()?
            .tables()
            .get(node.checked_sub(1)? as usize)?;
        Some(NodeRoutes {
            node,
            routes: table.entries.clone(),
            pinned: table.pinned.clone(),
        })
    }

    /// One link: whether it is up, and each direction's parameters and counters.
    pub fn link_row(&self, a: u32, b: u32) -> Option<LinkRow> {
        let (a, b) = (a.min(b), a.max(b));
        self.edge_index(a, b)?;
        self.link_rows().into_iter().find(|r| (r.a, r.b) == (a, b))
    }

    /// Changes a link, both directions; returns the new parameters (from `a` to `b`). When the link
    /// goes down or up, routes are recomputed without the down links and sent to the nodes
    /// whose tables changed.
    pub fn handle_set_link(
        &mut self,
        now: Instant,
        a: u32,
        b: u32,
        change: &LinkChange,
    ) -> Result<LinkParams, ChangeError> {
        if self.edge_index(a, b).is_none() {
            return Err(ChangeError::NoLink {
                a,
                b,
                topology: self.topology.label.clone(),
            });
        }
        if self.max_mode(a) && self.max_mode(b) {
            for (from, to) in [(a, b), (b, a)] {
                let after = change.apply(self.settings.links.params(from, to));
                if let Some(what) = after.beyond_the_kernel() {
                    return Err(ChangeError::BeyondTheKernel { a, b, what });
                }
            }
        }
        let was_up = self.settings.links.params(a, b).up;
        for (from, to) in [(a, b), (b, a)] {
            self.settings.links.change(from, to, change);
            if self.slot(from).is_some_and(|s| s.connected && !s.failed) {
                self.out.push_back(Output::Node(
                    from,
                    ControllerToNode::SetLink {
                        peer: to,
                        change: *change,
                    },
                ));
            }
        }
        let params = self.settings.links.params(a, b);
        // Routes change when the link comes or goes, or, by delay, when its delay does.
        if params.up != was_up || self.settings.metric == Metric::Delay {
            self.update_routes(now, a, b);
        }
        Ok(params)
    }

    /// The routing weight of the direction a→b: its delay, or None when the link is down or
    /// either end has failed.
    fn route_weight(&self, a: u32, b: u32) -> Option<u64> {
        let failed = |n| self.slot(n).is_some_and(|s| s.failed);
        if failed(a) || failed(b) {
            return None;
        }
        link_weight(&self.settings.links.params(a, b))
    }

    /// Tells the router about link a–b as it is now and sends the tables that changed.
    fn update_routes(&mut self, now: Instant, a: u32, b: u32) {
        if let Some(pending) = &mut self.routes_pending {
            pending.push((a, b));
            return;
        }
        let (ab, ba) = (self.route_weight(a, b), self.route_weight(b, a));
        let Some(router) = &mut self.router else {
            return;
        };
        let changed = router.set_link(a, b, ab, ba);
        if !changed.is_empty() {
            self.send_routes(now, changed);
            self.regroup();
        }
    }

    /// A node's report: its link counters (kept for `link show`), and what its links carried
    /// per flow and its applications' connections, as rows for the store.
    pub fn handle_link_stats(
        &mut self,
        node: u32,
        links: Vec<proto::LinkCounters>,
        flows: Vec<proto::monitor::FlowBytes>,
        app_flows: Vec<proto::monitor::AppFlowEvent>,
        time_ns: u64,
    ) {
        use crate::metrics::{AppFlowRow, FlowSample, MetricsReport, link_sample, node_of};
        let interval_ns = self.report_times.insert(node, time_ns).map_or(
            u64::from(self.settings.metrics_interval_ms) * 1_000_000,
            |t| time_ns.saturating_sub(t),
        );
        let mut report = MetricsReport {
            node,
            time_ns,
            links: Vec::with_capacity(links.len()),
            flows: Vec::with_capacity(flows.len()),
            apps: Vec::with_capacity(app_flows.len()),
        };
        for c in links {
            if self.edge_index(node, c.peer).is_none() {
                continue;
            }
            let rate = self
                .settings
                .links
                .params(node, c.peer)
                .rate
                .map(|r| r.bps());
            let previous = self.counters.insert((node, c.peer), c);
            let sample = link_sample(node, previous.as_ref(), &c, rate, interval_ns);
            if sample.packets > 0 || sample.queue_packets > 0 || sample.dropped_queue > 0 {
                report.links.push(sample);
            }
        }
        let (base, n) = (self.settings.overlay_base, self.topology.n_nodes());
        let port = self.settings.flow_port;
        for f in flows {
            // A generated flow: its data towards the flow port, its acknowledgements back.
            let ends = |addr| node_of(base, n, addr);
            let flow = if f.key.protocol != 6 {
                None
            } else if f.key.dport == port {
                ends(f.key.src).and_then(|s| self.flows.by_port(s, f.key.sport))
            } else if f.key.sport == port {
                ends(f.key.dst).and_then(|d| self.flows.by_port(d, f.key.dport))
            } else {
                None
            };
            report.flows.push(FlowSample {
                key: f.key,
                flow: flow.map(|r| r.id),
                local: node,
                remote: f.peer,
                bytes: f.bytes,
                packets: f.packets,
            });
        }
        for e in app_flows {
            report.apps.push(match e {
                proto::monitor::AppFlowEvent::Started { key, at_ns } => {
                    let dst = node_of(base, n, key.dst).unwrap_or(0);
                    let route = self
                        .router
                        .as_ref()
                        .filter(|_| dst != 0)
                        .and_then(|r| r.path(node, dst, key.hash()))
                        .map(|p| p.iter().map(u32::to_string).collect::<Vec<_>>().join("-"));
                    AppFlowRow::Started {
                        key,
                        src: node,
                        dst,
                        at_ns,
                        route,
                    }
                }
                proto::monitor::AppFlowEvent::Finished { key, at_ns, bytes } => {
                    AppFlowRow::Finished { key, at_ns, bytes }
                }
            });
        }
        if !(report.links.is_empty() && report.flows.is_empty() && report.apps.is_empty()) {
            self.emit(Milestone::Metrics(Box::new(report)));
        }
    }

    /// Every link: whether it is up, and each direction's parameters and counters.
    pub fn link_rows(&self) -> Vec<LinkRow> {
        let direction = |from: u32, to: u32| DirectionRow {
            params: self.settings.links.params(from, to),
            counters: self
                .counters
                .get(&(from, to))
                .copied()
                .unwrap_or(proto::LinkCounters {
                    peer: to,
                    ..Default::default()
                }),
        };
        self.topology
            .edges()
            .iter()
            .zip(&self.link_ends)
            .map(|(&(a, b), &ends)| LinkRow {
                a,
                b,
                up: ends == 3,
                a_to_b: direction(a, b),
                b_to_a: direction(b, a),
            })
            .collect()
    }
}

/// A direction's routing weight: its delay in nanoseconds, None when it is down.
fn link_weight(params: &LinkParams) -> Option<u64> {
    params
        .up
        .then(|| params.delay.duration().as_nanos().min(u128::from(u64::MAX)) as u64)
}

/// A node's table as the message that replaces its routes.
fn to_routes(table: &topology::routing::RouteTable, version: u64) -> ControllerToNode {
    ControllerToNode::Routes {
        routes: table.entries.clone(),
        pinned: table.pinned.clone(),
        version,
    }
}

/// A node's routes, as `GET /api/nodes/{id}/routes` answers.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct NodeRoutes {
    pub node: u32,
    pub routes: Vec<proto::Route>,
    pub pinned: Vec<proto::PinnedRoute>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct NodeRow {
    pub node_id: u32,
    pub underlay_addr: Option<String>,
    pub overlay_addr: String,
    pub state: NodeState,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct LinkRow {
    pub a: u32,
    pub b: u32,
    /// Both ends report the link's connection up.
    pub up: bool,
    pub a_to_b: DirectionRow,
    pub b_to_a: DirectionRow,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct DirectionRow {
    pub params: LinkParams,
    /// As last reported by the sending node (zero before its first report).
    pub counters: proto::LinkCounters,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{AgentToController, NodeToController};
    use topology::Preset;

    fn coordinator(n: u32, force_network: bool) -> Coordinator {
        Coordinator::new(
            Preset::Ring { n }.build().unwrap(),
            Settings {
                overlay_base: Ipv4Addr::new(10, 0, 0, 0),
                overlay_prefix_len: 16,
                force_network,
                network_transport: Transport::Tcp,
                quic_congestion: proto::QuicCongestion::Cubic,
                link_protocols: Default::default(),
                lossless: Default::default(),
                node_port: 3000,
                multi_host: true,
                dataplane: false,
                mtu: 1500,
                links: LinkPlan::unshaped(),
                metric: Metric::Hops,
                explicit_routes: Vec::new(),
                flow_port: proto::DEFAULT_FLOW_PORT,
                metrics_interval_ms: 1000,
                max_nodes: Vec::new(),
                multicast_pool: proto::DEFAULT_MULTICAST_POOL,
            },
        )
    }

    fn register(
        c: &mut Coordinator,
        agent: AgentId,
        n: u32,
        offset: u32,
    ) -> Result<(), RegisterError> {
        c.handle_agent_register(
            agent,
            &AgentToController::Register {
                version: proto::VERSION,
                host: "h".into(),
                n_nodes: n,
                node_id_offset: offset,
                node_ids: Vec::new(),
                cpus: 2,
                mem_bytes: 1 << 30,
                underlay_route: None,
            },
        )
    }

    fn register_ids(c: &mut Coordinator, agent: AgentId, ids: &[u32]) -> Result<(), RegisterError> {
        c.handle_agent_register(
            agent,
            &AgentToController::Register {
                version: proto::VERSION,
                host: "h".into(),
                n_nodes: ids.len() as u32,
                node_id_offset: 0,
                node_ids: ids.to_vec(),
                cpus: 2,
                mem_bytes: 1 << 30,
                underlay_route: None,
            },
        )
    }

    fn hello(id: u32) -> NodeToController {
        NodeToController::Hello {
            version: proto::VERSION,
            node_id: id,
            underlay_addr: Ipv4Addr::new(172, 16, 8, 1 + id as u8),
            link_port: 8080,
        }
    }

    fn drain(c: &mut Coordinator) -> Vec<Output> {
        std::iter::from_fn(|| c.poll_output()).collect()
    }

    fn to_node(out: &[Output], id: u32) -> Vec<ControllerToNode> {
        out.iter()
            .filter_map(|o| match o {
                Output::Node(n, m) if *n == id => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_ring_on_one_agent_wires_locally_and_becomes_ready() {
        let t0 = Instant::now();
        let mut c = coordinator(4, false);
        register(&mut c, 1, 4, 0).unwrap();
        drain(&mut c);
        for id in 1..=4 {
            c.handle_node_hello(t0 + Duration::from_millis(id.into()), &hello(id))
                .unwrap();
        }
        let out = drain(&mut c);
        let ControllerToNode::Welcome {
            neighbours,
            overlay_addr,
            ..
        } = &to_node(&out, 1)[0]
        else {
            panic!("node 1 gets a welcome first");
        };
        assert_eq!(*overlay_addr, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(
            neighbours
                .iter()
                .map(|n| (n.id, n.transport))
                .collect::<Vec<_>>(),
            vec![(2, Transport::Local), (4, Transport::Local)]
        );
        assert!(
            !out.iter()
                .any(|o| matches!(o, Output::Node(_, ControllerToNode::Dial { .. })))
        );
        assert!(out.iter().any(|o| matches!(
            o,
            Output::Milestone(Milestone::AllConnected { nodes: 4, since_first }) if *since_first == Duration::from_millis(3)
        )));
        for (a, b) in [(1, 2), (2, 3), (3, 4), (1, 4)] {
            c.handle_link_up(a, b);
            c.handle_link_up(b, a);
        }
        assert_eq!(c.status().links_up, 4);
        for id in 1..=3 {
            c.handle_node_ready(t0 + Duration::from_millis(10), id);
        }
        assert!(
            !drain(&mut c)
                .iter()
                .any(|o| matches!(o, Output::Node(_, ControllerToNode::TopologyReady)))
        );
        c.handle_node_ready(t0 + Duration::from_millis(20), 4);
        let out = drain(&mut c);
        for id in 1..=4 {
            assert_eq!(to_node(&out, id), vec![ControllerToNode::TopologyReady]);
        }
        assert!(out.contains(&Output::Milestone(Milestone::TopologyReady {
            wiring: Duration::from_millis(19)
        })));
        assert_eq!(c.phase(), Phase::Ready);
    }

    #[test]
    fn tcp_links_are_dialled_by_the_higher_id_once_both_are_known() {
        let t0 = Instant::now();
        let mut c = coordinator(3, true);
        register(&mut c, 1, 3, 0).unwrap();
        drain(&mut c);
        c.handle_node_hello(t0, &hello(2)).unwrap();
        assert!(
            to_node(&drain(&mut c), 2)
                .iter()
                .all(|m| matches!(m, ControllerToNode::Welcome { .. }))
        );
        c.handle_node_hello(t0, &hello(1)).unwrap();
        let out = drain(&mut c);
        let dial = to_node(&out, 2);
        assert_eq!(
            dial,
            vec![ControllerToNode::Dial {
                peer: 1,
                addr: SocketAddrV4::new(Ipv4Addr::new(172, 16, 8, 2), 8080)
            }]
        );
        c.handle_node_hello(t0, &hello(3)).unwrap();
        let out = drain(&mut c);
        // Node 3 dials both 1 and 2.
        let dials: Vec<u32> = to_node(&out, 3)
            .iter()
            .filter_map(|m| match m {
                ControllerToNode::Dial { peer, .. } => Some(*peer),
                _ => None,
            })
            .collect();
        assert_eq!(dials, vec![1, 2]);
    }

    #[test]
    fn with_udp_every_link_is_udp_the_agents_are_told_and_the_higher_id_dials() {
        let t0 = Instant::now();
        let mut c = coordinator(3, true);
        c.settings.network_transport = Transport::Udp;
        register(&mut c, 1, 3, 0).unwrap();
        let accepted = drain(&mut c);
        assert!(
            accepted.iter().any(|o| matches!(
                o,
                Output::Agent(
                    _,
                    ControllerToAgent::Accepted {
                        tcp_links: true,
                        link_transport: Transport::Udp,
                        ..
                    }
                )
            )),
            "{accepted:?}"
        );
        c.handle_node_hello(t0, &hello(1)).unwrap();
        let welcome = to_node(&drain(&mut c), 1);
        let ControllerToNode::Welcome { neighbours, .. } = &welcome[0] else {
            panic!("{welcome:?}");
        };
        assert!(neighbours.iter().all(|n| n.transport == Transport::Udp));
        c.handle_node_hello(t0, &hello(2)).unwrap();
        let dial = to_node(&drain(&mut c), 2);
        assert!(
            dial.iter()
                .any(|m| matches!(m, ControllerToNode::Dial { peer: 1, .. })),
            "{dial:?}"
        );
    }

    #[test]
    fn a_link_with_a_protocol_of_its_own_takes_it_and_quic_is_dialled_on_the_next_port() {
        let t0 = Instant::now();
        let mut c = coordinator(4, false);
        c.settings.multi_host = false;
        c.settings.link_protocols = [((1, 2), Transport::Quic), ((3, 4), Transport::Udp)].into();
        register(&mut c, 1, 4, 0).unwrap();
        let accepted = drain(&mut c);
        assert!(
            accepted.iter().any(|o| matches!(
                o,
                Output::Agent(_, ControllerToAgent::Accepted { tcp_links: true, link_transports, .. })
                    if link_transports == &[Transport::Udp, Transport::Quic]
            )),
            "{accepted:?}"
        );
        c.handle_node_hello(t0, &hello(1)).unwrap();
        let out = to_node(&drain(&mut c), 1);
        let Some(ControllerToNode::Welcome { neighbours, .. }) = out.first() else {
            panic!("{out:?}");
        };
        let got: Vec<_> = neighbours.iter().map(|n| (n.id, n.transport)).collect();
        assert_eq!(got, [(2, Transport::Quic), (4, Transport::Local)]);
        c.handle_node_hello(t0, &hello(2)).unwrap();
        let dial = to_node(&drain(&mut c), 2);
        assert!(
            dial.contains(&ControllerToNode::Dial {
                peer: 1,
                addr: SocketAddrV4::new(Ipv4Addr::new(172, 16, 8, 2), 8081),
            }),
            "{dial:?}"
        );
    }

    #[test]
    fn links_between_max_mode_nodes_of_one_agent_are_the_kernels_and_take_no_delay() {
        let t0 = Instant::now();
        let mut c = coordinator(4, false);
        c.settings.max_nodes = vec![1, 2, 3];
        register(&mut c, 1, 2, 0).unwrap();
        register(&mut c, 2, 2, 2).unwrap();
        drain(&mut c);
        let mut transports = Vec::new();
        for id in 1..=4 {
            c.handle_node_hello(t0, &hello(id)).unwrap();
            let out = to_node(&drain(&mut c), id);
            let Some(ControllerToNode::Welcome {
                neighbours,
                max_mode,
                ..
            }) = out.first()
            else {
                panic!("{out:?}");
            };
            assert_eq!(*max_mode, id != 4);
            transports.extend(neighbours.iter().map(|n| (id, n.id, n.transport)));
        }
        // 1=2 one agent, both max: kernel. 2-3 both max on two agents: over the network.
        // 3-4 one agent, 4 normal: in process. 4-1: two agents.
        assert_eq!(
            transports,
            [
                (1, 2, Transport::Kernel),
                (1, 4, Transport::Tcp),
                (2, 1, Transport::Kernel),
                (2, 3, Transport::Tcp),
                (3, 2, Transport::Tcp),
                (3, 4, Transport::Local),
                (4, 1, Transport::Tcp),
                (4, 3, Transport::Local),
            ]
        );
        // Between two max-mode nodes a rate goes; a delay is refused, wherever they are.
        let rate = LinkChange::from_short("rate=10mbit").unwrap();
        assert!(c.handle_set_link(t0, 1, 2, &rate).is_ok());
        let delay = LinkChange::from_short("delay=5ms").unwrap();
        for (a, b) in [(1, 2), (2, 3)] {
            let refused = c.handle_set_link(t0, a, b, &delay).unwrap_err().to_string();
            assert!(refused.contains("can't take delay 5ms"), "{refused}");
            assert!(c.settings.links.params(a, b).delay.is_zero());
        }
        assert!(c.handle_set_link(t0, 3, 4, &delay).is_ok());
        // A route pinned out of 1 or 2 (kernel links) can't hold; out of 3 (on another agent
        // than its max-mode neighbour) it can.
        let through = RouteRequest::path(&[4, 1, 2], None).unwrap();
        assert!(matches!(
            c.handle_set_route(t0, through),
            Err(RouteError::ThroughMaxMode(1))
        ));
        let around = RouteRequest::path(&[3, 4, 1], None).unwrap();
        assert!(!matches!(
            c.handle_set_route(t0, around),
            Err(RouteError::ThroughMaxMode(_))
        ));
    }

    #[test]
    fn a_failed_node_is_reported_and_the_rest_become_ready() {
        let t0 = Instant::now();
        let mut c = coordinator(3, false);
        register(&mut c, 1, 3, 0).unwrap();
        for id in 1..=3 {
            c.handle_node_hello(t0, &hello(id)).unwrap();
        }
        drain(&mut c);
        c.handle_node_failed(t0, 2, "injected".into());
        let out = drain(&mut c);
        assert!(to_node(&out, 1).contains(&ControllerToNode::PeerFailed { peer: 2 }));
        assert!(to_node(&out, 3).contains(&ControllerToNode::PeerFailed { peer: 2 }));
        c.handle_link_up(1, 3);
        c.handle_link_up(3, 1);
        c.handle_node_ready(t0, 1);
        c.handle_node_ready(t0, 3);
        let out = drain(&mut c);
        assert_eq!(to_node(&out, 1), vec![ControllerToNode::TopologyReady]);
        assert!(to_node(&out, 2).is_empty());
        let s = c.status();
        assert_eq!(
            (s.ready, s.failed, s.links_up, s.phase),
            (2, 1, 1, Phase::Ready)
        );
    }

    #[test]
    fn a_session_speaks_only_for_the_nodes_it_registered() {
        let t0 = Instant::now();
        let mut c = coordinator(6, false);
        register(&mut c, 1, 3, 0).unwrap();
        register(&mut c, 2, 3, 3).unwrap();
        for id in 1..=6 {
            c.handle_node_hello(t0, &hello(id)).unwrap();
        }
        drain(&mut c);
        let fail = |node| proto::AgentToController::NodeFailed {
            node,
            reason: "claimed".into(),
        };
        // A session that never registered (a program in a node dialling the controller).
        let e = c.handle_agent_message(t0, 99, fail(5)).unwrap_err();
        assert_eq!(e, RegisterError::NotRegister);
        // A registered agent about another agent's node.
        let e = c
            .handle_agent_message(t0, 1, fail(5))
            .unwrap_err()
            .to_string();
        assert!(e.contains("node 5 is not this agent's (it has 1-3)"), "{e}");
        assert!(drain(&mut c).is_empty());
        assert_eq!(c.status().failed, 0);
        // Its own node, as before.
        c.handle_agent_message(t0, 2, fail(5)).unwrap();
        assert_eq!(c.status().failed, 1);
    }

    #[test]
    fn node_sessions_carried_by_their_agent_are_answered_through_it_and_only_for_its_nodes() {
        let t0 = Instant::now();
        let mut c = coordinator(6, false);
        register(&mut c, 1, 3, 0).unwrap();
        register(&mut c, 2, 3, 3).unwrap();
        drain(&mut c);
        let carried = |node, msg| AgentToController::FromNode { node, msg };
        let via = |out: &[Output], agent: AgentId, id: u32| -> Vec<ControllerToNode> {
            out.iter()
                .filter_map(|o| match o {
                    Output::Agent(a, ControllerToAgent::ToNode { node, msg })
                        if *a == agent && *node == id =>
                    {
                        Some(msg.clone())
                    }
                    _ => None,
                })
                .collect()
        };
        // Agent 1 carries node 2's session: the welcome comes back through agent 1 and
        // nothing goes to a session of the node's own.
        c.handle_agent_message(t0, 1, carried(2, hello(2))).unwrap();
        let out = drain(&mut c);
        assert!(matches!(
            via(&out, 1, 2).first(),
            Some(ControllerToNode::Welcome { node_id: 2, .. })
        ));
        assert!(to_node(&out, 2).is_empty(), "{out:?}");
        // Agent 1 can't open node 5's session (agent 2's): refused to it, node 5 untouched.
        c.handle_agent_message(t0, 1, carried(5, hello(5))).unwrap();
        let out = drain(&mut c);
        match via(&out, 1, 5).as_slice() {
            [ControllerToNode::Rejected { reason }] => {
                assert!(
                    reason.contains("not one of this agent's nodes (1-3)"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.status().connected, 1);
        // Nor say hello for one node in another's session.
        let e = c
            .handle_agent_message(t0, 1, carried(1, hello(3)))
            .unwrap_err();
        assert_eq!(e, RegisterError::HelloAsAnother { node: 1, said: 3 });
        assert_eq!(c.status().connected, 1);
        // Nor speak in a session it does not carry.
        let e = c
            .handle_agent_message(t0, 1, carried(3, NodeToController::Ready))
            .unwrap_err();
        assert_eq!(e, RegisterError::NotCarried { node: 3 });
        let e = c
            .handle_agent_message(t0, 2, carried(2, NodeToController::Ready))
            .unwrap_err();
        assert_eq!(e, RegisterError::NotCarried { node: 2 });
        // Its own node's session closing fails that node; another agent's word does not.
        c.handle_agent_message(t0, 2, AgentToController::NodeClosed { node: 2 })
            .unwrap();
        assert_eq!(c.status().failed, 0);
        c.handle_agent_message(t0, 1, AgentToController::NodeClosed { node: 2 })
            .unwrap();
        assert_eq!(c.status().failed, 1);
    }

    #[test]
    fn routes_computed_elsewhere_arrive_with_the_links_changed_meanwhile_before_ready() {
        let t0 = Instant::now();
        let settings = Settings {
            dataplane: true,
            ..coordinator(4, false).settings.clone()
        };
        let topology = Preset::Ring { n: 4 }.build().unwrap();
        let router = Coordinator::build_router(&topology, &settings).unwrap();
        let mut c = Coordinator::without_routes(topology, settings);
        register(&mut c, 1, 4, 0).unwrap();
        for id in 1..=4 {
            c.handle_node_hello(t0, &hello(id)).unwrap();
        }
        let down = LinkChange {
            up: Some(false),
            ..Default::default()
        };
        c.handle_set_link(t0, 1, 2, &down).unwrap();
        for (a, b) in [(2, 3), (3, 4), (1, 4)] {
            c.handle_link_up(a, b);
            c.handle_link_up(b, a);
        }
        for id in 1..=4 {
            c.handle_node_ready(t0, id);
        }
        let out = drain(&mut c);
        let routes = |out: &[Output], id| {
            to_node(out, id).into_iter().find_map(|m| match m {
                ControllerToNode::Routes { routes, .. } => Some(routes),
                _ => None,
            })
        };
        assert!(
            (1..=4).all(|id| routes(&out, id).is_none()),
            "no routes yet"
        );
        assert!(
            !out.iter()
                .any(|o| matches!(o, Output::Milestone(Milestone::TopologyReady { .. })))
        );
        assert_eq!(c.phase(), Phase::Wiring);
        assert_eq!(c.route_path(1, 2, None), Err(RouteError::NotYet));
        // The router was computed with link 1-2 up; it learns that it went down.
        c.handle_router(t0, router);
        let out = drain(&mut c);
        let to_2 = |id| {
            routes(&out, id)
                .unwrap()
                .into_iter()
                .find(|e| (e.first..=e.last).contains(&2))
                .unwrap()
                .next_hops
        };
        assert_eq!(to_2(1), vec![4], "1 reaches 2 the long way round");
        assert!((1..=4).all(|id| routes(&out, id).is_some()));
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Milestone(Milestone::TopologyReady { .. })))
        );
        let tables = to_node(&out, 3);
        assert!(
            matches!(tables.first(), Some(ControllerToNode::Routes { .. }))
                && tables.last() == Some(&ControllerToNode::TopologyReady),
            "a node has its table before it hears the topology is ready: {tables:?}"
        );
    }

    #[test]
    fn bad_agents_and_hellos_are_refused_with_reasons() {
        let mut c = coordinator(10, false);
        let e = register(&mut c, 1, 20, 0).unwrap_err().to_string();
        assert!(e.contains("has 10") && e.contains("--n-nodes 10"), "{e}");
        register(&mut c, 2, 5, 0).unwrap();
        let e = register(&mut c, 3, 5, 3).unwrap_err().to_string();
        assert!(e.contains("nodes 4-5 are already on agent 2"), "{e}");
        // Any set of ids, as a scheduler hands them out.
        let e = register_ids(&mut c, 4, &[6, 8, 11])
            .unwrap_err()
            .to_string();
        assert!(e.contains("6,8,11") && e.contains("(1..=10)"), "{e}");
        register_ids(&mut c, 4, &[10, 6, 8]).unwrap();
        register_ids(&mut c, 5, &[7, 9]).unwrap();
        let t0 = Instant::now();
        let e = c.handle_node_hello(t0, &hello(11)).unwrap_err().to_string();
        assert!(e.contains("not in the topology"), "{e}");
        c.handle_node_hello(t0, &hello(1)).unwrap();
        assert!(
            c.handle_node_hello(t0, &hello(1))
                .unwrap_err()
                .to_string()
                .contains("already")
        );
        let old = NodeToController::Hello {
            version: 0,
            node_id: 2,
            underlay_addr: Ipv4Addr::LOCALHOST,
            link_port: 1,
        };
        assert!(
            c.handle_node_hello(t0, &old)
                .unwrap_err()
                .to_string()
                .contains("version")
        );
    }

    #[test]
    fn a_link_going_down_reroutes_only_the_nodes_that_need_it() {
        let t0 = Instant::now();
        let mut c = Coordinator::new(
            Preset::Ring { n: 6 }.build().unwrap(),
            Settings {
                multi_host: false,
                dataplane: true,
                ..coordinator(6, false).settings
            },
        );
        register(&mut c, 1, 6, 0).unwrap();
        for id in 1..=6 {
            c.handle_node_hello(t0, &hello(id)).unwrap();
        }
        drain(&mut c);
        let delay = LinkChange::from_short("delay=20ms").unwrap();
        let params = c.handle_set_link(t0, 1, 2, &delay).unwrap();
        assert_eq!(params.delay, linkem::Span::from_millis(20));
        let out = drain(&mut c);
        assert_eq!(
            to_node(&out, 1),
            vec![ControllerToNode::SetLink {
                peer: 2,
                change: delay
            }]
        );
        assert!(matches!(
            to_node(&out, 2)[0],
            ControllerToNode::SetLink { peer: 1, .. }
        ));
        assert!(
            to_node(&out, 3).is_empty(),
            "a delay change reroutes nothing"
        );
        // Down: node 1 now reaches 2 the long way round, via 6.
        let down = LinkChange {
            up: Some(false),
            ..Default::default()
        };
        c.handle_set_link(t0, 2, 1, &down).unwrap();
        let out = drain(&mut c);
        let routes_of = |id| {
            to_node(&out, id).into_iter().find_map(|m| match m {
                ControllerToNode::Routes { routes, .. } => Some(routes),
                _ => None,
            })
        };
        let r1 = routes_of(1).expect("node 1 gets new routes");
        let to2 = r1.iter().find(|r| r.first <= 2 && 2 <= r.last).unwrap();
        assert_eq!(to2.next_hops, vec![6]);
        assert!(
            c.handle_set_link(t0, 1, 3, &down)
                .unwrap_err()
                .to_string()
                .contains("no link 1-3")
        );
    }

    #[test]
    fn by_delay_a_slower_link_reroutes_and_a_pinned_route_reaches_its_nodes() {
        let t0 = Instant::now();
        let mut links = LinkPlan::unshaped();
        links.default.delay = linkem::Span::from_millis(1);
        let mut c = Coordinator::new(
            Preset::Ring { n: 6 }.build().unwrap(),
            Settings {
                multi_host: false,
                dataplane: true,
                links,
                metric: Metric::Delay,
                explicit_routes: vec![topology::routing::ExplicitRoute::path(&[4, 3, 2]).unwrap()],
                ..coordinator(6, false).settings
            },
        );
        register(&mut c, 1, 6, 0).unwrap();
        for id in 1..=6 {
            c.handle_node_hello(t0, &hello(id)).unwrap();
        }
        let out = drain(&mut c);
        let routes_of = |out: &[Output], id| {
            to_node(out, id).into_iter().find_map(|m| match m {
                ControllerToNode::Routes { routes, pinned, .. } => Some((routes, pinned)),
                _ => None,
            })
        };
        let (_, pinned) = routes_of(&out, 3).expect("node 3 has routes");
        assert_eq!(
            pinned,
            vec![proto::PinnedRoute {
                flow: None,
                src: 4,
                dst: 2,
                next_hops: vec![2]
            }]
        );
        // 1-2 becomes 20 ms: by delay, 1 reaches 2 round the other five links (5 ms).
        let slower = LinkChange::from_short("delay=20ms").unwrap();
        c.handle_set_link(t0, 1, 2, &slower).unwrap();
        let out = drain(&mut c);
        let (r1, _) = routes_of(&out, 1).expect("node 1 gets new routes");
        let to2 = r1.iter().find(|r| r.first <= 2 && 2 <= r.last).unwrap();
        assert_eq!(to2.next_hops, vec![6]);
    }

    #[test]
    fn traffic_goes_round_a_failed_node() {
        let t0 = Instant::now();
        let mut settings = coordinator(6, false).settings;
        settings.dataplane = true;
        let mut c = Coordinator::new(Preset::Ring { n: 6 }.build().unwrap(), settings);
        register(&mut c, 1, 6, 0).unwrap();
        for id in 1..=6 {
            c.handle_node_hello(t0, &hello(id)).unwrap();
        }
        drain(&mut c);
        c.handle_node_gone(t0, 2);
        let out = drain(&mut c);
        // The latest table node 1 was sent.
        let routes = to_node(&out, 1)
            .into_iter()
            .filter_map(|m| match m {
                ControllerToNode::Routes { routes, .. } => Some(routes),
                _ => None,
            })
            .next_back()
            .expect("node 1 gets new routes");
        let to3 = routes.iter().find(|r| r.first <= 3 && 3 <= r.last).unwrap();
        assert_eq!(to3.next_hops, vec![6]);
        assert!(
            !routes.iter().any(|r| r.first <= 2 && 2 <= r.last),
            "no route to the failed node"
        );
        assert!(
            to_node(&out, 2).is_empty(),
            "nothing is sent to the failed node"
        );
    }

    #[test]
    fn groups_wait_for_the_topology_take_addresses_from_the_pool_and_follow_failures() {
        let t0 = Instant::now();
        let mut settings = coordinator(6, false).settings;
        settings.dataplane = true;
        // A pool of four addresses: two for groups (its first and last are skipped).
        settings.multicast_pool = proto::MulticastPool {
            base: Ipv4Addr::new(239, 9, 9, 0),
            len: 30,
        };
        let mut c = Coordinator::new(Preset::Ring { n: 6 }.build().unwrap(), settings);
        register(&mut c, 1, 6, 0).unwrap();
        for id in 1..=6 {
            c.handle_node_hello(t0, &hello(id)).unwrap();
        }
        assert_eq!(
            c.handle_create_group(1, None, &[3]).unwrap_err(),
            GroupError::NotYet
        );
        for id in 1..=6u32 {
            for peer in [id % 6 + 1, (id + 4) % 6 + 1] {
                c.handle_link_up(id, peer);
            }
            c.handle_node_ready(t0, id);
        }
        assert_eq!(c.phase(), Phase::Ready);
        drain(&mut c);
        let g = c.handle_create_group(1, None, &[3]).unwrap();
        assert_eq!(g.group, Ipv4Addr::new(239, 9, 9, 1));
        // Only the nodes on the tree are told: 1, 2 and 3.
        let told: Vec<u32> = drain(&mut c)
            .iter()
            .filter_map(|o| match o {
                Output::Node(n, ControllerToNode::Groups { .. }) => Some(*n),
                _ => None,
            })
            .collect();
        assert_eq!(told, vec![1, 2, 3]);
        assert!(matches!(
            c.handle_create_group(1, Some(Ipv4Addr::new(239, 255, 0, 1)), &[]),
            Err(GroupError::OutsidePool { .. })
        ));
        assert!(matches!(
            c.handle_create_group(7, None, &[]),
            Err(GroupError::UnknownNode { node: 7, .. })
        ));
        assert!(matches!(
            c.handle_create_group(2, Some(g.group), &[]),
            Err(GroupError::Exists(_, 1))
        ));
        c.handle_create_group(2, None, &[]).unwrap();
        assert!(matches!(
            c.handle_create_group(4, None, &[]),
            Err(GroupError::PoolFull { .. })
        ));
        // Node 2 fails: the tree goes the other way round, 1-6-5-4-3.
        c.handle_node_gone(t0, 2);
        let row = &c.group_rows()[0];
        assert_eq!(row.trees[0].edges, vec![(1, 6), (4, 3), (5, 4), (6, 5)]);
        // A group deleted frees its address, and its nodes forget it.
        drain(&mut c);
        c.handle_group_op(GroupOp::Delete { group: g.group })
            .unwrap();
        let forgot: Vec<u32> = drain(&mut c)
            .iter()
            .filter_map(|o| match o {
                Output::Node(n, ControllerToNode::Groups { removed, .. })
                    if removed == &vec![g.group] =>
                {
                    Some(*n)
                }
                _ => None,
            })
            .collect();
        assert_eq!(forgot, vec![1, 3, 4, 5, 6]);
        assert_eq!(c.handle_create_group(4, None, &[]).unwrap().group, g.group);
    }

    #[test]
    fn groups_are_refused_over_kernel_links_and_cut_where_routes_move_onto_one() {
        let t0 = Instant::now();
        let mut settings = coordinator(6, false).settings;
        settings.dataplane = true;
        // 5 and 6 in max mode on one agent: the link between them is the kernel's.
        settings.max_nodes = vec![5, 6];
        let mut c = Coordinator::new(Preset::Ring { n: 6 }.build().unwrap(), settings);
        register(&mut c, 1, 6, 0).unwrap();
        for id in 1..=6u32 {
            c.handle_node_hello(t0, &hello(id)).unwrap();
            for peer in [id % 6 + 1, (id + 4) % 6 + 1] {
                c.handle_link_up(id, peer);
            }
            c.handle_node_ready(t0, id);
        }
        assert_eq!(c.phase(), Phase::Ready);
        // From 1 to 5 the shortest path is 1-6-5, over the kernel link: refused.
        assert_eq!(
            c.handle_create_group(1, None, &[5]).unwrap_err(),
            GroupError::ThroughMaxMode { a: 6, b: 5 }
        );
        let g = c.handle_create_group(1, None, &[3, 6]).unwrap();
        assert_eq!(
            c.group_rows()[0].trees[0].edges,
            vec![(1, 2), (1, 6), (2, 3)]
        );
        // Node 2 fails: the route to 3 goes 1-6-5-4-3, and the tree is cut at 6-5.
        c.handle_node_gone(t0, 2);
        let row = &c.group_rows()[0];
        assert_eq!(row.group, g.group);
        assert_eq!(row.trees[0].edges, vec![(1, 6)]);
        assert_eq!(row.trees[0].unreached, vec![3]);
    }

    #[test]
    fn nodes_of_different_agents_link_over_tcp() {
        let mut c = coordinator(4, false);
        register(&mut c, 1, 2, 0).unwrap();
        register(&mut c, 2, 2, 2).unwrap();
        drain(&mut c);
        c.handle_node_hello(Instant::now(), &hello(2)).unwrap();
        let out = drain(&mut c);
        let ControllerToNode::Welcome { neighbours, .. } = &to_node(&out, 2)[0] else {
            panic!()
        };
        assert_eq!(
            neighbours
                .iter()
                .map(|n| (n.id, n.transport))
                .collect::<Vec<_>>(),
            vec![(1, Transport::Local), (3, Transport::Tcp)]
        );
    }
}
