//! One node as a task on the agent's runtime: the glue that carries out what its
//! [`NodeSession`] decides.
//!
//! The node's control session travels inside the agent's connection to the controller (see
//! [`crate::line`]): nothing per node but its TUN device and its links is held open. Links are
//! made by the agent's transports (an in-process channel for neighbours on the same agent, a
//! TCP connection over the underlay otherwise) and carried by the node's [`Dataplane`].

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use dataplane::pacer::Pacer;
use dataplane::sockets::SocketFactory;
use dataplane::transport::{Endpoint, LinkEvent, LinkIo, Transports};
use dataplane::{AbortOnDrop, Dataplane};
use hostnet::rtnl::Rtnl;
use tokio::sync::mpsc;

use crate::session::{Action, FlowEvent, NodeSession, SessionConfig, SessionEnd};

/// What a node task needs to know about its node.
#[derive(Debug, Clone)]
pub struct NodeCtx {
    pub node_id: u32,
    pub underlay_addr: Ipv4Addr,
    pub netns: hostnet::netns::NsHandle,
    /// Port of the node's link listener, when it accepts TCP links.
    pub link_port: Option<u16>,
    /// Fault injection: the node fails right after its welcome.
    pub fail: bool,
    /// The node may have a TUN device (the seeds' `enable_local_interface`).
    pub tun_device: bool,
}

/// Shared by every node task of the agent.
pub struct Shared {
    pub factory: SocketFactory,
    pub transports: Transports,
    /// The agent's connection to the controller, which carries every node's session.
    pub line: Arc<crate::line::Line>,
    /// Set when the run ends keeping its nodes: TUN devices are kept as they close.
    pub keep_tuns: Arc<std::sync::atomic::AtomicBool>,
    pub pacer: Pacer,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("node {node}: cannot take links: {source}")]
    Listen {
        node: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("node {node}: {end}")]
    Ended { node: u32, end: SessionEnd },
}

/// A node's links and dataplane, as the glue holds them.
#[derive(Default)]
struct Links {
    /// Links that came up and wait for the session to attach or discard them.
    arrived: HashMap<u32, LinkIo>,
    /// Links held open while there is no dataplane to carry them.
    held: HashMap<u32, LinkIo>,
    /// Each attached link's emulator and reader.
    carried: HashMap<u32, [AbortOnDrop; 2]>,
    dataplane: Option<Arc<Dataplane>>,
    /// The TUN reader: ends with the node.
    tun_reader: Option<AbortOnDrop>,
    /// The node's overlay address, once it has a TUN device.
    overlay: Option<Ipv4Addr>,
    /// Taking flows, and flows being sent: they end with the node.
    flows: Vec<AbortOnDrop>,
    /// The node's TUN MTU, which its kernel links take too.
    mtu: u16,
    /// Max mode: kernel links that came up and wait for the session to attach them.
    kernel_arrived: std::collections::HashSet<u32>,
    /// Kernel links carried, with their parameters.
    kernel: std::collections::BTreeMap<u32, proto::LinkParams>,
    /// The forwarding table last set, and the kernel routes made of it.
    routes: Vec<proto::Route>,
    kernel_routes: Vec<hostnet::kernel::KernelRoute>,
}

impl Links {
    /// Puts the kernel routes that the current table and kernel links call for in the node's
    /// kernel (max mode), after `first` (work on this node's ends of its kernel links) in the
    /// same visit to its namespace; nothing without kernel links.
    async fn update_kernel(
        &mut self,
        ctx: &NodeCtx,
        shared: &Shared,
        first: impl FnOnce(&mut Rtnl<()>) -> std::io::Result<()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Some(my_addr) = self.overlay else {
            return Err(std::io::Error::other("the node has no TUN device"));
        };
        let peers: std::collections::BTreeSet<u32> = self.kernel.keys().copied().collect();
        let new = dataplane::kernel::kernel_routes(&self.routes, ctx.node_id, my_addr, &peers);
        let old = std::mem::replace(&mut self.kernel_routes, new.clone());
        shared
            .factory
            .run_in(ctx.netns.clone(), move || {
                let mut rtnl = Rtnl::open()?;
                first(&mut rtnl)?;
                // Wiring sets a node's table and each of its kernel links in turn: only what
                // changes the kernel's routes is written.
                if new == old {
                    return Ok(());
                }
                hostnet::kernel::apply_routes(&mut rtnl, &old, &new, my_addr)
            })
            .await
    }

    /// Carries the kernel link to `peer`: the node forwards (its first kernel link), its end
    /// gets its MTU, neighbour, shape and state, and the kernel its routes over it.
    async fn attach_kernel_link(
        &mut self,
        ctx: &NodeCtx,
        shared: &Shared,
        peer: u32,
        params: proto::LinkParams,
    ) -> std::io::Result<()> {
        let (Some(my_addr), Some(dp)) = (self.overlay, self.dataplane.clone()) else {
            return Err(std::io::Error::other("the node has no TUN device"));
        };
        let peer_addr = std::net::Ipv4Addr::from(u32::from(my_addr) - ctx.node_id + peer);
        let first_link = self.kernel.is_empty();
        let (mtu, shape) = (self.mtu, dataplane::kernel::kernel_shape(&params, self.mtu));
        self.kernel.insert(peer, params);
        self.update_kernel(ctx, shared, move |rtnl| {
            if first_link {
                hostnet::kernel::enable_forwarding()?;
            }
            hostnet::kernel::configure_end(rtnl, peer, peer_addr, mtu, params.up)?;
            if shape.is_some() {
                hostnet::kernel::shape(rtnl, peer, shape)?;
            }
            Ok(())
        })
        .await?;
        dp.attach_kernel(peer);
        Ok(())
    }
}

pub async fn run_node(ctx: NodeCtx, shared: Arc<Shared>) -> Result<(), NodeError> {
    let node = ctx.node_id;
    let endpoint = Endpoint {
        node_id: node,
        underlay_addr: ctx.underlay_addr,
        netns: ctx.netns.clone(),
    };
    // Acceptors exist before the hello, so a peer told to connect here always finds them.
    let mut acceptors = Vec::new();
    for (_, transport) in shared.transports.all() {
        acceptors.push(
            transport
                .listen(&endpoint)
                .await
                .map_err(|source| NodeError::Listen { node, source })?,
        );
    }
    // Closed when this task ends, also when it is aborted.
    let mut control = shared.line.open(node);

    let mut session = NodeSession::new(SessionConfig {
        node_id: node,
        underlay_addr: ctx.underlay_addr,
        link_port: ctx.link_port,
        tun_device: ctx.tun_device,
        fail: ctx.fail,
    });
    let (events_tx, mut events) = mpsc::unbounded_channel::<LinkEvent>();
    let (flow_tx, mut flow_events) = mpsc::unbounded_channel::<FlowEvent>();
    let (membership_tx, mut memberships) = mpsc::unbounded_channel::<(Ipv4Addr, bool)>();
    let mut links = Links::default();
    let mut accepting: Vec<AbortOnDrop> = Vec::new();
    loop {
        while let Some(action) = session.poll_action() {
            match action {
                Action::Send(msg) => {
                    if !control.send(msg) {
                        session.handle_controller_gone();
                    }
                }
                Action::StartDataplane {
                    overlay_addr,
                    prefix_len,
                    mtu,
                } => {
                    match shared
                        .factory
                        .tun(ctx.netns.clone(), overlay_addr, prefix_len, mtu)
                        .await
                    {
                        Ok(tun) => {
                            let dp = Dataplane::new(
                                node,
                                overlay_addr,
                                prefix_len,
                                tun,
                                shared.pacer.clone(),
                                shared.keep_tuns.clone(),
                            );
                            dp.report_memberships(membership_tx.clone());
                            links.tun_reader = Some(dp.start());
                            links.dataplane = Some(dp);
                            links.overlay = Some(overlay_addr);
                            links.mtu = mtu;
                        }
                        Err(e) => session.handle_dataplane_failed(e.to_string()),
                    }
                }
                Action::Accept => {
                    for a in acceptors.drain(..) {
                        accepting.extend(a.start(node, events_tx.clone()));
                    }
                }
                Action::StopAccepting => accepting.clear(),
                Action::Connect {
                    peer,
                    transport,
                    addr,
                } => match shared.transports.get(transport) {
                    Some(t) => t.connect(&endpoint, peer, addr, events_tx.clone()),
                    None => tracing::warn!(
                        "node {node}: no {transport:?} transport on this agent for the link to {peer}"
                    ),
                },
                Action::Attach { peer, params } if links.kernel_arrived.remove(&peer) => {
                    if let Err(e) = links.attach_kernel_link(&ctx, &shared, peer, params).await {
                        session.handle_kernel_link_failed(peer, e.to_string());
                    }
                }
                Action::Attach { peer, params } => {
                    if let Some(io) = links.arrived.remove(&peer) {
                        match &links.dataplane {
                            Some(dp) => {
                                let seed = u64::from(node) << 32 | u64::from(peer);
                                links
                                    .carried
                                    .insert(peer, dp.attach(peer, params, io, seed));
                            }
                            None => {
                                links.held.insert(peer, io);
                            }
                        }
                    }
                }
                Action::Discard { peer } => {
                    links.arrived.remove(&peer);
                }
                Action::Detach { peer } => {
                    links.held.remove(&peer);
                    links.carried.remove(&peer);
                    if let Some(dp) = &links.dataplane {
                        dp.detach(peer);
                    }
                    if links.kernel.remove(&peer).is_some()
                        && let Err(e) = links.update_kernel(&ctx, &shared, |_| Ok(())).await
                    {
                        tracing::warn!("node {node}: {e}");
                    }
                }
                Action::SetRoutes { routes, pinned } => {
                    if let Some(dp) = &links.dataplane {
                        links.routes = routes.clone();
                        dp.set_routes(routes, pinned);
                    }
                    if !links.kernel.is_empty()
                        && let Err(e) = links.update_kernel(&ctx, &shared, |_| Ok(())).await
                    {
                        tracing::warn!("node {node}: {e}");
                    }
                }
                Action::ChangeLink { peer, change } if links.kernel.contains_key(&peer) => {
                    let before = links.kernel[&peer];
                    let after = change.apply(before);
                    links.kernel.insert(peer, after);
                    let (mtu, up) = (links.mtu, after.up);
                    let shape = dataplane::kernel::kernel_shape(&after, mtu);
                    let reshape = shape != dataplane::kernel::kernel_shape(&before, mtu);
                    let changed = shared
                        .factory
                        .run_in(ctx.netns.clone(), move || {
                            let mut rtnl = Rtnl::open()?;
                            if reshape {
                                hostnet::kernel::shape(&mut rtnl, peer, shape)?;
                            }
                            if up != before.up {
                                hostnet::kernel::set_up(&mut rtnl, peer, up)?;
                            }
                            Ok(())
                        })
                        .await;
                    if let Err(e) = changed {
                        tracing::warn!("node {node}: the kernel link to {peer}: {e}");
                    }
                }
                Action::ChangeLink { peer, change } => {
                    if let Some(dp) = &links.dataplane {
                        dp.set_link(peer, change);
                    }
                }
                Action::ReadCounters => {
                    let time_ns = dataplane::unix_ns();
                    let (mut counters, (flows, apps)) = links
                        .dataplane
                        .as_ref()
                        .map(|dp| (dp.link_counters(), dp.take_flows(time_ns)))
                        .unwrap_or_default();
                    if !links.kernel.is_empty() {
                        match shared
                            .factory
                            .run_in(ctx.netns.clone(), hostnet::kernel::counters)
                            .await
                        {
                            Ok(kernel) => {
                                counters
                                    .extend(kernel.iter().map(dataplane::kernel::link_counters));
                                counters.sort_by_key(|c| c.peer);
                            }
                            Err(e) => tracing::warn!("node {node}: kernel link counters: {e}"),
                        }
                    }
                    session.handle_counters(counters, flows, apps, time_ns);
                }
                Action::AcceptFlows { port } => {
                    let event = match links.overlay {
                        Some(addr) => match crate::flows::listen(
                            &shared.factory,
                            ctx.netns.clone(),
                            SocketAddrV4::new(addr, port),
                            flow_tx.clone(),
                        )
                        .await
                        {
                            Ok(guards) => {
                                links.flows.extend(guards);
                                FlowEvent::Listening
                            }
                            Err(e) => FlowEvent::NotListening {
                                reason: format!("cannot listen on {addr}:{port}: {e}"),
                            },
                        },
                        None => FlowEvent::NotListening {
                            reason: "it has no TUN device".into(),
                        },
                    };
                    session.handle_flow_event(event);
                }
                Action::SetGroups { set, removed } => {
                    if let Some(dp) = &links.dataplane {
                        dp.set_groups(set, &removed);
                    }
                }
                Action::StartFlow(order) => links.flows.push(crate::flows::start(
                    shared.factory.clone(),
                    ctx.netns.clone(),
                    order,
                    flow_tx.clone(),
                )),
                Action::Close(end) => return Err(NodeError::Ended { node, end }),
            }
        }
        let timeout = session.poll_timeout();
        tokio::select! {
            msg = control.recv() => match msg {
                Some(m) => session.handle_message(std::time::Instant::now(), *m),
                None => session.handle_controller_gone(),
            },
            Some(event) = events.recv() => match event {
                LinkEvent::Up(peer, io) => {
                    links.arrived.insert(peer, io);
                    session.handle_link_up(peer);
                }
                LinkEvent::Kernel(peer) => {
                    links.kernel_arrived.insert(peer);
                    session.handle_link_up(peer);
                }
                LinkEvent::Down(peer) => session.handle_link_down(peer),
            },
            Some(event) = flow_events.recv() => session.handle_flow_event(event),
            Some((group, joined)) = memberships.recv() => session.handle_membership(group, joined),
            () = sleep_until(timeout), if timeout.is_some() => {
                session.handle_timeout(std::time::Instant::now());
            }
        }
    }
}

async fn sleep_until(at: Option<std::time::Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}
