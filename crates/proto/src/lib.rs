//! nextmini's control protocol: serde enums, MessagePack-encoded (field names kept, so either
//! side may add optional fields), one message per binary WebSocket frame.
//!
//! Two kinds of sessions reach the controller:
//! - an **agent** (one per host, from the host's namespace) registers the host and its node id
//!   range, reports plumbing progress and is told to shut down;
//! - a **node** (one per emulated node) says hello, is told its overlay address and its
//!   neighbours, reports each link up and finally that it is ready; the controller broadcasts
//!   topology-ready when all are. Node sessions travel inside their agent's session
//!   (`FromNode`/`ToNode`), so a host's thousands of nodes cost the controller and the agent
//!   one socket, not one each.
//!
//! Nothing in this exchange waits on a timer: every step answers a message.

mod flows;
pub mod monitor;

use std::net::{Ipv4Addr, SocketAddrV4};

use serde::{Deserialize, Serialize};

pub use flows::{
    DEFAULT_FLOW_PORT, DEFAULT_LOSSLESS_CHUNK, FlowLen, FlowOrder, FlowSpec, FlowTransport,
    LosslessConfig, TcpStats,
};

/// Bumped on any incompatible change; both hellos carry it.
pub const VERSION: u32 = 5;

/// Where multicast groups take their addresses unless the experiment says otherwise (the
/// seeds' `multicast_pool_base` and `multicast_pool_mask`).
pub const DEFAULT_MULTICAST_POOL: MulticastPool = MulticastPool {
    base: Ipv4Addr::new(239, 255, 0, 0),
    len: 16,
};

/// The addresses multicast groups take: `base/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MulticastPool {
    pub base: Ipv4Addr,
    pub len: u8,
}

impl MulticastPool {
    /// The prefix's mask, as a number.
    pub fn mask(self) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0)
    }

    pub fn contains(self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & self.mask() == u32::from(self.base) & self.mask()
    }

    /// The addresses groups are given, in order: all but the pool's first and last.
    pub fn group_addresses(self) -> impl Iterator<Item = Ipv4Addr> {
        let size = 1u64 << (32 - u32::from(self.len.min(32)));
        let base = u32::from(self.base) & self.mask();
        (1..size.saturating_sub(1)).map(move |i| Ipv4Addr::from(base.wrapping_add(i as u32)))
    }
}

impl std::fmt::Display for MulticastPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.len)
    }
}

/// WebSocket paths on the controller.
pub const AGENT_PATH: &str = "/agent";
/// Where host agents connect to a head (`nextmini serve`).
pub const HOST_PATH: &str = "/host";

/// How a link between two nodes is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// In-process channel: both nodes live in the same agent.
    Local,
    /// A persistent TCP connection over the underlay; the higher node id dials the lower.
    Tcp,
    /// UDP datagrams over the underlay, a frame each (a segment too large for one datagram
    /// is cut into packets first); the higher node id says hello to the lower.
    Udp,
    /// A QUIC connection over the underlay (quinn), frames on one stream each way; the
    /// higher node id dials the lower, as for TCP.
    Quic,
    /// A veth pair between two max-mode nodes of one agent: the kernels of the two
    /// namespaces forward across it, shaped by a token bucket filter (rate and queue only).
    Kernel,
}

fn default_network_transport() -> Transport {
    Transport::Tcp
}

impl Transport {
    /// The port a node takes links of this transport on, given its link port: QUIC's is the
    /// next one, so that a run with UDP and QUIC links has a socket for each.
    pub fn port(self, link_port: u16) -> u16 {
        match self {
            Transport::Quic => link_port.wrapping_add(1),
            _ => link_port,
        }
    }
}

/// The congestion controller of QUIC links (`quic_congestion_control`): both ends of a link
/// use the run's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuicCongestion {
    #[default]
    Cubic,
    Bbr,
}

/// A link direction's parameters, and changes to them: the link emulator's own types.
pub use linkem::{LinkChange, LinkParams};

/// One neighbour of a node, as the controller assigns it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Neighbour {
    pub id: u32,
    pub transport: Transport,
    /// The direction from this node to the neighbour.
    pub egress: LinkParams,
}

/// Destinations `first..=last` are reached through `next_hops`: a row of the routing
/// crate's table, sent as it is.
pub use topology::routing::RouteEntry as Route;

/// Counters of one link direction, from this node to `peer`, since the link came up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkCounters {
    pub peer: u32,
    /// The emulator's own counters. Packets offered to the link count a TSO segment as the
    /// packets it stands for once the link cuts it, and as one where the link only delays.
    #[serde(flatten)]
    pub counters: linkem::Counters,
    /// Packets waiting for the transmitter when the counters were taken.
    pub queue_packets: u64,
}

/// Traffic from `src` to `dst` leaves through `next_hops` (a route pinned by the user).
pub use topology::routing::PinnedEntry as PinnedRoute;

/// What a node does with a multicast group's packets: its trees, its parent and children on
/// each, whether it is a member. Sent as the topology crate builds it.
pub use topology::multicast::{GroupEntry as GroupRoute, TreeHop};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NodeToController {
    Hello {
        version: u32,
        node_id: u32,
        underlay_addr: Ipv4Addr,
        /// Where the node accepts TCP links.
        link_port: u16,
    },
    LinkUp {
        peer: u32,
    },
    LinkDown {
        peer: u32,
    },
    /// Every link of the node is up.
    Ready,
    /// The node's link counters (since each link came up), sent every metrics interval
    /// while they change, with what its links carried per flow in the interval and the
    /// applications' connections that opened or closed; `time_ns` is when they were read
    /// (Unix time).
    LinkStats {
        links: Vec<LinkCounters>,
        #[serde(default)]
        flows: Vec<monitor::FlowBytes>,
        #[serde(default)]
        app_flows: Vec<monitor::AppFlowEvent>,
        #[serde(default)]
        time_ns: u64,
    },
    /// The node gave up; the run goes on without it.
    Failed {
        reason: String,
    },
    /// The routes of this version (and every earlier one) are in the node's table.
    RoutesApplied {
        version: u64,
    },
    /// The node takes flows now (after `AcceptFlows`).
    FlowsAccepted,
    /// The node can't take flows.
    FlowsRefused {
        reason: String,
    },
    /// A flow's connection is open: from this node's `local_port`, at `start_ns` (Unix time).
    FlowStarted {
        id: u64,
        local_port: u16,
        start_ns: u64,
    },
    /// A flow this node sent is over: everything was sent and the receiver closed.
    FlowSent {
        id: u64,
        bytes: u64,
        end_ns: u64,
        tcp: TcpStats,
    },
    /// A flow this node received is over (its sender closed).
    FlowReceived {
        id: u64,
        bytes: u64,
        first_ns: u64,
        last_ns: u64,
    },
    /// A flow could not run.
    FlowFailed {
        id: u64,
        reason: String,
    },
    /// A program in the node joined (or left) a multicast group: its kernel's IGMP report,
    /// seen on the node's TUN device.
    GroupMember {
        group: Ipv4Addr,
        joined: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControllerToNode {
    Welcome {
        node_id: u32,
        overlay_addr: Ipv4Addr,
        overlay_prefix_len: u8,
        neighbours: Vec<Neighbour>,
        /// Give the node a TUN device and forward packets.
        dataplane: bool,
        /// MTU of the node's TUN device.
        mtu: u16,
        /// How often the node reports its counters.
        #[serde(default = "monitor::metrics_interval_default")]
        metrics_interval_ms: u32,
        /// Max mode (`operating_mode = "max"`): the node's kernel forwards over its kernel
        /// links, and the routes that leave by them are the kernel's too.
        #[serde(default)]
        max_mode: bool,
    },
    /// The node's whole forwarding table, replacing the previous one; the node confirms
    /// `version` once it is in place (`RoutesApplied`).
    Routes {
        routes: Vec<Route>,
        /// Source-specific routes, looked up before `routes`.
        #[serde(default)]
        pinned: Vec<PinnedRoute>,
        #[serde(default)]
        version: u64,
    },
    /// A change to the direction from this node to `peer`, made at once.
    SetLink {
        peer: u32,
        change: LinkChange,
    },
    /// Connect a TCP link to this neighbour.
    Dial {
        peer: u32,
        addr: SocketAddrV4,
    },
    /// A neighbour failed: stop waiting for the link to it.
    PeerFailed {
        peer: u32,
    },
    TopologyReady,
    Rejected {
        reason: String,
    },
    /// Take flows on the overlay address at `port`; answer `FlowsAccepted`.
    AcceptFlows {
        port: u16,
    },
    /// Start a flow to another node.
    StartFlow {
        flow: FlowOrder,
    },
    /// Multicast groups' entries that changed at this node (each replaces the group's
    /// previous one), and the groups it no longer takes part in.
    Groups {
        set: Vec<GroupRoute>,
        #[serde(default)]
        removed: Vec<Ipv4Addr>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentToController {
    Register {
        version: u32,
        host: String,
        n_nodes: u32,
        node_id_offset: u32,
        /// The agent's node ids when they are not the block `node_id_offset + 1 ..`
        /// (empty: the block).
        #[serde(default)]
        node_ids: Vec<u32>,
        cpus: u32,
        mem_bytes: u64,
        /// The network the agent's nodes send from towards the host (its underlay route;
        /// none without an underlay): the controller answers connections from there as it
        /// answers programs in nodes (the status only).
        #[serde(default)]
        underlay_route: Option<(Ipv4Addr, u8)>,
    },
    /// Nodes plumbed so far.
    Plumbed { done: u32 },
    PlumbingDone {
        seconds: f64,
        mem_available_before: u64,
        mem_available_after: u64,
    },
    /// A node of this agent failed before or outside its own control session.
    NodeFailed { node: u32, reason: String },
    /// The agent could not go on (plumbing failed); its nodes are gone.
    Failed { reason: String },
    TornDown {
        seconds: f64,
        /// The nodes were kept for the next run of the same layout (`Park`), not removed.
        #[serde(default)]
        kept: bool,
    },
    /// A message of one of this agent's node sessions: the agent carries all of its nodes'
    /// sessions over its own connection (one socket per host, not one per node).
    FromNode { node: u32, msg: NodeToController },
    /// That node's session ended.
    NodeClosed { node: u32 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControllerToAgent {
    Accepted {
        /// Port nodes use to reach the controller at their gateway address.
        node_port: u16,
        /// Nodes must accept links over the network (some link is carried over it).
        tcp_links: bool,
        /// What carries those links (`protocol`): TCP unless the experiment says otherwise.
        #[serde(default = "default_network_transport")]
        link_transport: Transport,
        /// The congestion controller of QUIC links.
        #[serde(default)]
        quic_congestion: QuicCongestion,
        /// Every transport this run's links take over the network (`link_transport` and
        /// those of links with a protocol of their own); empty: `link_transport` alone.
        #[serde(default)]
        link_transports: Vec<Transport>,
    },
    Rejected {
        reason: String,
    },
    /// Tear the nodes down and disconnect.
    Shutdown,
    /// End the run but keep the nodes (namespaces, veths, bridges, TUN devices) for the next
    /// run of the same layout, then disconnect (`down --keep`).
    Park,
    /// A message for one of the agent's node sessions.
    ToNode {
        node: u32,
        msg: ControllerToNode,
    },
}

/// A host agent to the head that pools hosts for experiments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HostToHead {
    Hello {
        version: u32,
        name: String,
        cpus: u32,
        mem_mib: u64,
        /// The host's address towards the head and the other hosts.
        addr: Ipv4Addr,
    },
    /// An experiment's share was plumbed and registered (or could not be: `error`).
    Launched {
        experiment: String,
        error: Option<String>,
    },
    /// An experiment's share is gone from this host.
    Cleared { experiment: String },
    /// What a command run in a node printed, and how it ended.
    ExecDone {
        request: u64,
        /// Exit code (128 + signal when killed; 124 when it timed out; 127 when it can't run).
        code: i32,
        stdout: String,
        stderr: String,
    },
    /// The host's load, every few seconds.
    Load {
        /// One-minute load average.
        load1: f64,
        mem_available_mib: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HeadToHost {
    Accepted,
    Rejected {
        reason: String,
    },
    /// Run these nodes of an experiment: plumb them with this prefix and underlay, join the
    /// bridges to `peers` with `vni`, register with the experiment's controller at the head's
    /// address and `port`.
    Launch {
        experiment: String,
        port: u16,
        prefix: String,
        base: Ipv4Addr,
        vni: u32,
        node_ids: Vec<u32>,
        peers: Vec<Ipv4Addr>,
    },
    /// Remove everything of an experiment from this host.
    Clear {
        experiment: String,
    },
    /// Run a command inside a node's namespace and report its output (`nextmini exp exec`).
    Exec {
        request: u64,
        /// The node's namespace name (prefix and id).
        netns: String,
        argv: Vec<String>,
        timeout_ms: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("could not decode a control message: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("could not encode a control message: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
}

pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, ProtoError> {
    Ok(rmp_serde::to_vec_named(msg)?)
}

pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ProtoError> {
    Ok(rmp_serde::from_slice(bytes)?)
}

/// Overlay address of a node: `base + node_id` (the seeds' `10.0.0.0/16` plan).
pub fn overlay_addr(base: Ipv4Addr, node_id: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base) + node_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_counters_travel_flat() {
        let c = LinkCounters {
            peer: 3,
            counters: linkem::Counters {
                delivered_packets: 7,
                dropped_loss: 2,
                ..Default::default()
            },
            queue_packets: 1,
        };
        let msg = NodeToController::LinkStats {
            links: vec![c],
            flows: vec![],
            app_flows: vec![],
            time_ns: 1,
        };
        assert_eq!(
            decode::<NodeToController>(&encode(&msg).unwrap()).unwrap(),
            msg
        );
        let json = serde_json::to_value(c).unwrap();
        assert_eq!(
            (json["delivered_packets"].as_u64(), json["peer"].as_u64()),
            (Some(7), Some(3))
        );
    }

    #[test]
    fn messages_round_trip() {
        let msgs = vec![
            NodeToController::Hello {
                version: VERSION,
                node_id: 7,
                underlay_addr: Ipv4Addr::new(172, 16, 8, 8),
                link_port: 8080,
            },
            NodeToController::LinkUp { peer: 3 },
            NodeToController::Ready,
            NodeToController::Failed { reason: "x".into() },
        ];
        for m in msgs {
            let bytes = encode(&m).unwrap();
            assert_eq!(decode::<NodeToController>(&bytes).unwrap(), m);
        }
        let w = ControllerToNode::Welcome {
            node_id: 7,
            overlay_addr: overlay_addr(Ipv4Addr::new(10, 0, 0, 0), 7),
            overlay_prefix_len: 16,
            neighbours: vec![Neighbour {
                id: 6,
                transport: Transport::Local,
                egress: LinkChange::from_short("rate=100mbit,delay=5ms")
                    .unwrap()
                    .apply(LinkParams::default()),
            }],
            dataplane: true,
            mtu: 1500,
            metrics_interval_ms: 250,
            max_mode: false,
        };
        assert_eq!(decode::<ControllerToNode>(&encode(&w).unwrap()).unwrap(), w);
        let a = ControllerToAgent::Accepted {
            node_port: 3000,
            tcp_links: true,
            link_transport: Transport::Udp,
            quic_congestion: QuicCongestion::Bbr,
            link_transports: vec![Transport::Udp, Transport::Quic],
        };
        assert_eq!(
            decode::<ControllerToAgent>(&encode(&a).unwrap()).unwrap(),
            a
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode::<NodeToController>(&[0xc1, 0x00]).is_err());
        assert!(decode::<ControllerToNode>(b"").is_err());
    }

    #[test]
    fn overlay_addresses_follow_node_ids() {
        assert_eq!(
            overlay_addr(Ipv4Addr::new(10, 0, 0, 0), 300),
            Ipv4Addr::new(10, 0, 1, 44)
        );
    }
}
