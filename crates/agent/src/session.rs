//! One node's control session with the controller, as a state machine without sockets or
//! clocks: the node's side of the handshake that the coordinator drives on the other.
//!
//! Calling order: make the session with [`NodeSession::new`] (it queues the hello), then feed
//! each input to its `handle_*` method with the time it happened: every message from the
//! controller ([`NodeSession::handle_message`]), links coming up or going down, a dataplane
//! that could not start, the controller going away. After each input, and when
//! [`NodeSession::poll_timeout`] comes due ([`NodeSession::handle_timeout`]), drain
//! [`NodeSession::poll_action`] and carry the actions out in order. The session ends with
//! [`Action::Close`].
//!
//! States: `AwaitingWelcome` → (welcome) `Wiring` → (every link up, or its peer failed)
//! `Ready`; `Closed` from any of them. The node says ready once; links that go down and come
//! back later are reported, and the node stays ready.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use proto::monitor::{AppFlowEvent, FlowBytes};
use proto::{
    ControllerToNode, LinkChange, LinkCounters, LinkParams, NodeToController, PinnedRoute, Route,
    Transport,
};

/// How often a node reports its link counters (when they changed) unless the experiment's
/// metrics interval says otherwise.
pub const STATS_EVERY: Duration =
    Duration::from_millis(proto::monitor::DEFAULT_METRICS_INTERVAL_MS as u64);

/// What the session knows about its node before it starts.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub node_id: u32,
    pub underlay_addr: Ipv4Addr,
    /// Where the node accepts TCP links, when it does.
    pub link_port: Option<u16>,
    /// The node may have a TUN device (the seeds' `enable_local_interface`).
    pub tun_device: bool,
    /// Fault injection: the node fails right after its welcome.
    pub fail: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    AwaitingWelcome,
    Wiring,
    Ready,
    Closed,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionEnd {
    #[error("refused by the controller: {0}")]
    Rejected(String),
    #[error("{0}")]
    Failed(String),
    #[error("the controller closed the session")]
    ControllerGone,
    #[error("control session: {0}")]
    Protocol(String),
}

/// Something for the glue to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Send(NodeToController),
    /// Create the node's TUN device and start forwarding; report failure with
    /// [`NodeSession::handle_dataplane_failed`].
    StartDataplane {
        overlay_addr: Ipv4Addr,
        prefix_len: u8,
        mtu: u16,
    },
    /// Start taking links that peers open to this node.
    Accept,
    /// Stop taking links: every peer that opens one has.
    StopAccepting,
    /// Open the link to `peer`.
    Connect {
        peer: u32,
        transport: Transport,
        addr: Option<SocketAddrV4>,
    },
    /// The link to `peer` is up and expected: carry it, with these parameters.
    Attach {
        peer: u32,
        params: LinkParams,
    },
    /// A link to `peer` came up that no neighbour asked for (or a second one): close it.
    Discard {
        peer: u32,
    },
    /// The link to `peer` is gone.
    Detach {
        peer: u32,
    },
    SetRoutes {
        routes: Vec<Route>,
        pinned: Vec<PinnedRoute>,
    },
    ChangeLink {
        peer: u32,
        change: LinkChange,
    },
    /// Read the link counters and hand them to [`NodeSession::handle_counters`].
    ReadCounters,
    /// Take flows on the node's overlay address at `port`; report with
    /// [`NodeSession::handle_flow_event`] (`FlowEvent::Listening`, then each received flow).
    AcceptFlows {
        port: u16,
    },
    /// Start a flow; report its events with [`NodeSession::handle_flow_event`].
    StartFlow(proto::FlowOrder),
    /// Set these multicast groups' entries and forget the groups `removed`.
    SetGroups {
        set: Vec<proto::GroupRoute>,
        removed: Vec<Ipv4Addr>,
    },
    /// The session is over.
    Close(SessionEnd),
}

/// Where a neighbour's link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    /// Not up yet, and its peer has not failed: the node waits for it.
    Waiting,
    Up,
    /// Went down, or its peer failed.
    Gone,
}

struct Neighbour {
    id: u32,
    transport: Transport,
    params: LinkParams,
    link: LinkState,
}

/// See the module documentation for the calling order.
pub struct NodeSession {
    cfg: SessionConfig,
    state: State,
    /// Sorted by id (a node has few neighbours; a vector costs less than a map for each of
    /// thousands of nodes).
    neighbours: Vec<Neighbour>,
    /// Neighbours in [`LinkState::Waiting`].
    waiting: usize,
    dataplane: bool,
    next_report: Option<Instant>,
    /// How often counters are read and reported (the experiment's metrics interval).
    report_every: Duration,
    reported: Vec<LinkCounters>,
    /// The groups programs in the node have joined, as its kernel reported them (the kernel
    /// repeats each report: only changes go to the controller).
    joined: Vec<Ipv4Addr>,
    actions: VecDeque<Action>,
}

impl NodeSession {
    /// A session that has just connected; its hello is the first action.
    pub fn new(cfg: SessionConfig) -> NodeSession {
        let hello = NodeToController::Hello {
            version: proto::VERSION,
            node_id: cfg.node_id,
            underlay_addr: cfg.underlay_addr,
            link_port: cfg.link_port.unwrap_or(0),
        };
        NodeSession {
            cfg,
            state: State::AwaitingWelcome,
            neighbours: Vec::new(),
            waiting: 0,
            dataplane: false,
            next_report: None,
            report_every: STATS_EVERY,
            reported: Vec::new(),
            joined: Vec::new(),
            actions: [Action::Send(hello)].into(),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn node_id(&self) -> u32 {
        self.cfg.node_id
    }

    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        let action = self.actions.pop_front();
        if self.actions.is_empty() && self.actions.capacity() > 2 {
            // Welcomes queue many actions at once; idle nodes should not keep the room.
            self.actions = VecDeque::new();
        }
        action
    }

    fn neighbour(&mut self, id: u32) -> Option<&mut Neighbour> {
        let i = self.neighbours.binary_search_by_key(&id, |n| n.id).ok()?;
        Some(&mut self.neighbours[i])
    }

    /// Moves a neighbour's link to `to`, keeping the count of those waiting.
    fn set_link_state(&mut self, id: u32, to: LinkState) -> Option<LinkState> {
        let n = self.neighbour(id)?;
        let from = std::mem::replace(&mut n.link, to);
        match (from == LinkState::Waiting, to == LinkState::Waiting) {
            (true, false) => self.waiting -= 1,
            (false, true) => self.waiting += 1,
            _ => {}
        }
        Some(from)
    }

    /// When [`NodeSession::handle_timeout`] wants to be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_report.filter(|_| self.state != State::Closed)
    }

    fn push(&mut self, a: Action) {
        self.actions.push_back(a);
    }

    fn close(&mut self, end: SessionEnd) {
        if self.state != State::Closed {
            self.state = State::Closed;
            self.push(Action::Close(end));
        }
    }

    pub fn handle_message(&mut self, now: Instant, msg: ControllerToNode) {
        if self.state == State::Closed {
            return;
        }
        match msg {
            ControllerToNode::Welcome {
                neighbours,
                overlay_addr,
                overlay_prefix_len,
                dataplane,
                mtu,
                metrics_interval_ms,
                ..
            } => {
                if self.state != State::AwaitingWelcome {
                    return self.close(SessionEnd::Protocol("welcomed twice".into()));
                }
                self.state = State::Wiring;
                if self.cfg.fail {
                    let reason = "failure injected (--fail-node)".to_owned();
                    self.push(Action::Send(NodeToController::Failed {
                        reason: reason.clone(),
                    }));
                    return self.close(SessionEnd::Failed(reason));
                }
                if dataplane && self.cfg.tun_device {
                    self.dataplane = true;
                    self.report_every = Duration::from_millis(u64::from(
                        metrics_interval_ms.max(proto::monitor::MIN_METRICS_INTERVAL_MS),
                    ));
                    self.next_report = Some(now + self.report_every);
                    self.push(Action::StartDataplane {
                        overlay_addr,
                        prefix_len: overlay_prefix_len,
                        mtu,
                    });
                }
                let me = self.cfg.node_id;
                let mut accept = false;
                self.neighbours = neighbours
                    .iter()
                    .map(|n| Neighbour {
                        id: n.id,
                        transport: n.transport,
                        params: n.egress,
                        link: LinkState::Waiting,
                    })
                    .collect();
                self.neighbours.sort_by_key(|n| n.id);
                self.neighbours.dedup_by_key(|n| n.id);
                self.waiting = self.neighbours.len();
                for n in &neighbours {
                    if dials(n.transport) {
                        // The higher id dials when the controller says; the lower one accepts.
                        accept |= n.id > me;
                    } else {
                        self.actions.push_back(Action::Connect {
                            peer: n.id,
                            transport: n.transport,
                            addr: None,
                        });
                    }
                }
                if accept {
                    self.push(Action::Accept);
                }
                self.check_ready();
            }
            ControllerToNode::Dial { peer, addr } => match self.neighbour(peer) {
                Some(n) => {
                    let transport = n.transport;
                    self.push(Action::Connect {
                        peer,
                        transport,
                        addr: Some(addr),
                    });
                }
                None => tracing::warn!(
                    "node {}: told to dial {peer}, which is not a neighbour",
                    self.cfg.node_id
                ),
            },
            ControllerToNode::Routes {
                routes,
                pinned,
                version,
            } => {
                if self.dataplane {
                    self.push(Action::SetRoutes { routes, pinned });
                    // Actions run in order: the confirmation leaves once the table is set.
                    self.push(Action::Send(NodeToController::RoutesApplied { version }));
                }
            }
            ControllerToNode::SetLink { peer, change } => {
                let dataplane = self.dataplane;
                if let Some(n) = self.neighbour(peer) {
                    n.params = change.apply(n.params);
                    if dataplane && n.link == LinkState::Up {
                        self.push(Action::ChangeLink { peer, change });
                    }
                }
            }
            ControllerToNode::PeerFailed { peer } => {
                if self
                    .neighbour(peer)
                    .is_some_and(|n| n.link == LinkState::Waiting)
                {
                    self.set_link_state(peer, LinkState::Gone);
                }
                self.check_ready();
            }
            ControllerToNode::TopologyReady => {
                tracing::debug!("node {}: topology ready", self.cfg.node_id);
            }
            ControllerToNode::Rejected { reason } => self.close(SessionEnd::Rejected(reason)),
            ControllerToNode::AcceptFlows { port } => self.push(Action::AcceptFlows { port }),
            ControllerToNode::Groups { set, removed } => {
                if self.dataplane {
                    self.push(Action::SetGroups { set, removed });
                }
            }
            ControllerToNode::StartFlow { flow } => {
                if self.dataplane {
                    self.push(Action::StartFlow(flow));
                } else {
                    let id = flow.id;
                    self.handle_flow_event(FlowEvent::Failed {
                        id,
                        reason: "the node has no TUN device".into(),
                    });
                }
            }
        }
    }

    /// A program in the node joined (or left) `group`: its kernel said so on the TUN device.
    pub fn handle_membership(&mut self, group: Ipv4Addr, joined: bool) {
        if self.state == State::Closed || self.joined.contains(&group) == joined {
            return;
        }
        if joined {
            self.joined.push(group);
        } else {
            self.joined.retain(|g| *g != group);
        }
        self.push(Action::Send(NodeToController::GroupMember {
            group,
            joined,
        }));
    }

    /// A link to `peer` came up.
    pub fn handle_link_up(&mut self, peer: u32) {
        if self.state == State::Closed {
            return;
        }
        let Some(params) = self
            .neighbour(peer)
            .filter(|n| n.link == LinkState::Waiting)
            .map(|n| n.params)
        else {
            self.push(Action::Discard { peer });
            return;
        };
        self.set_link_state(peer, LinkState::Up);
        self.push(Action::Attach { peer, params });
        self.push(Action::Send(NodeToController::LinkUp { peer }));
        self.check_ready();
    }

    /// The link to `peer` went down (its connection closed).
    pub fn handle_link_down(&mut self, peer: u32) {
        if self.state == State::Closed
            || self.neighbour(peer).is_none_or(|n| n.link != LinkState::Up)
        {
            return;
        }
        self.set_link_state(peer, LinkState::Gone);
        self.push(Action::Detach { peer });
        self.push(Action::Send(NodeToController::LinkDown { peer }));
    }

    /// The kernel link to `peer` could not be set as asked (its shape, its neighbour or its
    /// routes): the node fails rather than carry it otherwise.
    pub fn handle_kernel_link_failed(&mut self, peer: u32, reason: String) {
        let reason = format!("cannot set up its kernel link to {peer}: {reason}");
        self.push(Action::Send(NodeToController::Failed {
            reason: reason.clone(),
        }));
        self.close(SessionEnd::Failed(reason));
    }

    /// The node's TUN device could not be made.
    pub fn handle_dataplane_failed(&mut self, reason: String) {
        let reason = format!("cannot create its TUN device: {reason}");
        self.push(Action::Send(NodeToController::Failed {
            reason: reason.clone(),
        }));
        self.close(SessionEnd::Failed(reason));
    }

    /// The controller's session ended (closed, or the connection broke).
    pub fn handle_controller_gone(&mut self) {
        self.close(SessionEnd::ControllerGone);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(at) = self.next_report
            && now >= at
            && self.state != State::Closed
        {
            self.next_report = Some(now + self.report_every);
            self.push(Action::ReadCounters);
        }
    }

    /// What was read after [`Action::ReadCounters`] (at Unix time `time_ns`): reported when
    /// the counters changed or there is anything per flow.
    pub fn handle_counters(
        &mut self,
        counters: Vec<LinkCounters>,
        flows: Vec<FlowBytes>,
        app_flows: Vec<AppFlowEvent>,
        time_ns: u64,
    ) {
        if self.state == State::Closed
            || (counters == self.reported && flows.is_empty() && app_flows.is_empty())
        {
            return;
        }
        self.reported = counters.clone();
        self.push(Action::Send(NodeToController::LinkStats {
            links: counters,
            flows,
            app_flows,
            time_ns,
        }));
    }

    fn check_ready(&mut self) {
        if self.state == State::Wiring && self.waiting == 0 {
            self.state = State::Ready;
            self.push(Action::Send(NodeToController::Ready));
            self.push(Action::StopAccepting);
        }
    }
}

/// What happens to a node's flows, as its glue reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum FlowEvent {
    /// The node takes flows now.
    Listening,
    /// The node can't take flows.
    NotListening {
        reason: String,
    },
    Started {
        id: u64,
        local_port: u16,
        start_ns: u64,
    },
    Sent {
        id: u64,
        bytes: u64,
        end_ns: u64,
        tcp: proto::TcpStats,
    },
    Received {
        id: u64,
        bytes: u64,
        first_ns: u64,
        last_ns: u64,
    },
    Failed {
        id: u64,
        reason: String,
    },
}

impl NodeSession {
    /// A flow event: reported to the controller.
    pub fn handle_flow_event(&mut self, event: FlowEvent) {
        if self.state == State::Closed {
            return;
        }
        let msg = match event {
            FlowEvent::Listening => NodeToController::FlowsAccepted,
            FlowEvent::NotListening { reason } => NodeToController::FlowsRefused { reason },
            FlowEvent::Started {
                id,
                local_port,
                start_ns,
            } => NodeToController::FlowStarted {
                id,
                local_port,
                start_ns,
            },
            FlowEvent::Sent {
                id,
                bytes,
                end_ns,
                tcp,
            } => NodeToController::FlowSent {
                id,
                bytes,
                end_ns,
                tcp,
            },
            FlowEvent::Received {
                id,
                bytes,
                first_ns,
                last_ns,
            } => NodeToController::FlowReceived {
                id,
                bytes,
                first_ns,
                last_ns,
            },
            FlowEvent::Failed { id, reason } => NodeToController::FlowFailed { id, reason },
        };
        self.push(Action::Send(msg));
    }
}

/// Whether a transport's links are opened by one side when the controller says (rather than
/// by both sides at once, as in-process links are paired).
fn dials(t: Transport) -> bool {
    !matches!(t, Transport::Local | Transport::Kernel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::Neighbour;

    fn cfg(id: u32) -> SessionConfig {
        SessionConfig {
            node_id: id,
            underlay_addr: Ipv4Addr::new(172, 16, 8, 1 + id as u8),
            link_port: Some(8080),
            tun_device: true,
            fail: false,
        }
    }

    fn drain(s: &mut NodeSession) -> Vec<Action> {
        std::iter::from_fn(|| s.poll_action()).collect()
    }

    fn welcome(neighbours: &[(u32, Transport)], dataplane: bool) -> ControllerToNode {
        ControllerToNode::Welcome {
            node_id: 2,
            overlay_addr: Ipv4Addr::new(10, 0, 0, 2),
            overlay_prefix_len: 16,
            neighbours: neighbours
                .iter()
                .map(|&(id, transport)| Neighbour {
                    id,
                    transport,
                    egress: LinkParams::default(),
                })
                .collect(),
            dataplane,
            metrics_interval_ms: 1000,
            max_mode: false,
            mtu: 1500,
        }
    }

    fn sent(actions: &[Action]) -> Vec<NodeToController> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn hello_then_welcome_then_links_then_ready() {
        let t0 = Instant::now();
        let mut s = NodeSession::new(cfg(2));
        assert!(matches!(
            &drain(&mut s)[..],
            [Action::Send(NodeToController::Hello {
                node_id: 2,
                link_port: 8080,
                ..
            })]
        ));
        assert_eq!(s.state(), State::AwaitingWelcome);
        // Neighbour 1 is local (both sides connect); 3 is over TCP and dials us (higher id).
        s.handle_message(
            t0,
            welcome(&[(1, Transport::Local), (3, Transport::Tcp)], true),
        );
        let a = drain(&mut s);
        assert!(matches!(a[0], Action::StartDataplane { mtu: 1500, .. }));
        assert!(a.contains(&Action::Connect {
            peer: 1,
            transport: Transport::Local,
            addr: None
        }));
        assert!(a.contains(&Action::Accept));
        assert_eq!(s.state(), State::Wiring);
        s.handle_link_up(1);
        let a = drain(&mut s);
        assert!(matches!(a[0], Action::Attach { peer: 1, .. }));
        assert_eq!(sent(&a), vec![NodeToController::LinkUp { peer: 1 }]);
        // A link nobody asked for is closed, and changes nothing.
        s.handle_link_up(9);
        assert_eq!(drain(&mut s), vec![Action::Discard { peer: 9 }]);
        s.handle_link_up(3);
        let a = drain(&mut s);
        assert_eq!(
            sent(&a),
            vec![
                NodeToController::LinkUp { peer: 3 },
                NodeToController::Ready
            ]
        );
        assert_eq!(a.last(), Some(&Action::StopAccepting));
        assert_eq!(s.state(), State::Ready);
        s.handle_message(t0, ControllerToNode::TopologyReady);
        assert!(drain(&mut s).is_empty());
    }

    #[test]
    fn the_higher_id_dials_when_told_and_a_failed_peer_is_not_waited_for() {
        let t0 = Instant::now();
        let mut s = NodeSession::new(cfg(5));
        drain(&mut s);
        s.handle_message(
            t0,
            welcome(&[(3, Transport::Tcp), (4, Transport::Tcp)], false),
        );
        // Both peers are lower: nothing to accept, nothing to start without a dataplane.
        assert!(drain(&mut s).is_empty());
        let addr = SocketAddrV4::new(Ipv4Addr::new(172, 16, 8, 4), 8080);
        s.handle_message(t0, ControllerToNode::Dial { peer: 3, addr });
        assert_eq!(
            drain(&mut s),
            vec![Action::Connect {
                peer: 3,
                transport: Transport::Tcp,
                addr: Some(addr)
            }]
        );
        s.handle_link_up(3);
        drain(&mut s);
        s.handle_message(t0, ControllerToNode::PeerFailed { peer: 4 });
        assert_eq!(sent(&drain(&mut s)), vec![NodeToController::Ready]);
    }

    #[test]
    fn link_changes_reach_links_that_are_up_and_later_ones_start_changed() {
        let t0 = Instant::now();
        let mut s = NodeSession::new(cfg(2));
        s.handle_message(
            t0,
            welcome(&[(1, Transport::Local), (3, Transport::Local)], true),
        );
        s.handle_link_up(1);
        drain(&mut s);
        let slower = LinkChange::from_short("delay=20ms").unwrap();
        s.handle_message(
            t0,
            ControllerToNode::SetLink {
                peer: 1,
                change: slower,
            },
        );
        s.handle_message(
            t0,
            ControllerToNode::SetLink {
                peer: 3,
                change: slower,
            },
        );
        assert_eq!(
            drain(&mut s),
            vec![Action::ChangeLink {
                peer: 1,
                change: slower
            }]
        );
        s.handle_link_up(3);
        let a = drain(&mut s);
        assert_eq!(
            a[0],
            Action::Attach {
                peer: 3,
                params: slower.apply(LinkParams::default())
            }
        );
        // A link that goes down is detached and reported; the node stays ready.
        s.handle_link_down(3);
        assert_eq!(
            drain(&mut s),
            vec![
                Action::Detach { peer: 3 },
                Action::Send(NodeToController::LinkDown { peer: 3 })
            ]
        );
        assert_eq!(s.state(), State::Ready);
        let routes = vec![Route {
            first: 1,
            last: 3,
            next_hops: vec![1],
        }];
        s.handle_message(
            t0,
            ControllerToNode::Routes {
                routes: routes.clone(),
                pinned: vec![],
                version: 7,
            },
        );
        // The table first, then the confirmation of its version.
        assert_eq!(
            drain(&mut s),
            vec![
                Action::SetRoutes {
                    routes,
                    pinned: vec![]
                },
                Action::Send(NodeToController::RoutesApplied { version: 7 })
            ]
        );
    }

    #[test]
    fn group_entries_are_set_and_memberships_reported_once_per_change() {
        let t0 = Instant::now();
        let mut s = NodeSession::new(cfg(2));
        s.handle_message(t0, welcome(&[(1, Transport::Local)], true));
        drain(&mut s);
        let g = Ipv4Addr::new(239, 255, 0, 3);
        let entry = proto::GroupRoute {
            group: g,
            source: 1,
            member: false,
            trees: vec![],
        };
        s.handle_message(
            t0,
            ControllerToNode::Groups {
                set: vec![entry.clone()],
                removed: vec![],
            },
        );
        assert_eq!(
            drain(&mut s),
            vec![Action::SetGroups {
                set: vec![entry],
                removed: vec![]
            }]
        );
        // The kernel reports a join twice, then the leave twice.
        for joined in [true, true, false, false] {
            s.handle_membership(g, joined);
        }
        assert_eq!(
            drain(&mut s),
            vec![
                Action::Send(NodeToController::GroupMember {
                    group: g,
                    joined: true
                }),
                Action::Send(NodeToController::GroupMember {
                    group: g,
                    joined: false
                }),
            ]
        );
    }

    #[test]
    fn counters_are_read_every_second_and_sent_when_they_change() {
        let t0 = Instant::now();
        let mut s = NodeSession::new(cfg(2));
        assert_eq!(s.poll_timeout(), None, "no dataplane, no counters");
        s.handle_message(t0, welcome(&[(1, Transport::Local)], true));
        drain(&mut s);
        assert_eq!(s.poll_timeout(), Some(t0 + STATS_EVERY));
        s.handle_timeout(t0 + Duration::from_millis(500));
        assert!(drain(&mut s).is_empty(), "not due yet");
        let t1 = t0 + STATS_EVERY;
        s.handle_timeout(t1);
        assert_eq!(drain(&mut s), vec![Action::ReadCounters]);
        assert_eq!(s.poll_timeout(), Some(t1 + STATS_EVERY));
        let c = vec![LinkCounters {
            peer: 1,
            queue_packets: 3,
            ..Default::default()
        }];
        s.handle_counters(c.clone(), vec![], vec![], 7);
        assert_eq!(
            sent(&drain(&mut s)),
            vec![NodeToController::LinkStats {
                links: c.clone(),
                flows: vec![],
                app_flows: vec![],
                time_ns: 7
            }]
        );
        s.handle_counters(c.clone(), vec![], vec![], 8);
        assert!(drain(&mut s).is_empty(), "unchanged counters are not sent");
        // Traffic of a flow is, whatever the counters.
        let flow = FlowBytes {
            peer: 1,
            key: proto::monitor::FlowKey {
                src: Ipv4Addr::new(10, 0, 0, 2),
                dst: Ipv4Addr::new(10, 0, 0, 1),
                protocol: 6,
                sport: 40000,
                dport: 5201,
            },
            bytes: 1500,
            packets: 1,
        };
        s.handle_counters(c, vec![flow], vec![], 9);
        assert_eq!(drain(&mut s).len(), 1);
    }

    #[test]
    fn the_experiment_sets_how_often_counters_are_read() {
        let t0 = Instant::now();
        let mut s = NodeSession::new(cfg(2));
        let mut w = welcome(&[(1, Transport::Local)], true);
        if let ControllerToNode::Welcome {
            metrics_interval_ms,
            ..
        } = &mut w
        {
            *metrics_interval_ms = 250;
        }
        s.handle_message(t0, w);
        drain(&mut s);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_millis(250)));
    }

    #[test]
    fn failures_and_endings_close_the_session_once() {
        let t0 = Instant::now();
        let mut s = NodeSession::new(SessionConfig {
            fail: true,
            ..cfg(2)
        });
        drain(&mut s);
        s.handle_message(t0, welcome(&[(1, Transport::Local)], true));
        let a = drain(&mut s);
        assert!(matches!(
            &a[..],
            [
                Action::Send(NodeToController::Failed { .. }),
                Action::Close(SessionEnd::Failed(_))
            ]
        ));
        s.handle_controller_gone();
        s.handle_link_up(1);
        assert!(drain(&mut s).is_empty(), "nothing after the end");

        let mut s = NodeSession::new(cfg(2));
        s.handle_message(t0, welcome(&[(1, Transport::Local)], true));
        drain(&mut s);
        s.handle_dataplane_failed("no /dev/net/tun".into());
        let a = drain(&mut s);
        assert!(matches!(a[1], Action::Close(SessionEnd::Failed(ref r)) if r.contains("TUN")));

        let mut s = NodeSession::new(cfg(2));
        s.handle_message(
            t0,
            ControllerToNode::Rejected {
                reason: "node 2 is connected already".into(),
            },
        );
        assert!(matches!(
            drain(&mut s).last(),
            Some(Action::Close(SessionEnd::Rejected(_)))
        ));

        let mut s = NodeSession::new(cfg(2));
        s.handle_controller_gone();
        assert_eq!(
            drain(&mut s).last(),
            Some(&Action::Close(SessionEnd::ControllerGone))
        );
        assert_eq!(s.state(), State::Closed);
    }
}
