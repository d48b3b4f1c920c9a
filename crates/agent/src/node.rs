//! One node's control session and links, as a task on the agent's runtime.
//!
//! The control connection is made from inside the node's namespace to the controller at the
//! node's gateway, over the underlay. After the controller's welcome the node brings up one
//! link per neighbour (an in-process channel for neighbours on the same agent, a TCP connection
//! over the underlay otherwise, the higher node id dialling), reports each link up, and says
//! ready when every link is up or its peer has failed.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use proto::{ControllerToNode, NodeToController, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::dataplane::{Dataplane, LinkIo};
use crate::frame::Frame;
use crate::hub::{Hub, LocalEnd};
use crate::pacer::Pacer;
use crate::sockets::SocketFactory;

/// What a node task needs to know about its node.
#[derive(Debug, Clone)]
pub struct NodeCtx {
    pub node_id: u32,
    pub underlay_addr: Ipv4Addr,
    pub gateway: Ipv4Addr,
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
    pub hub: Hub,
    pub controller_port: u16,
    /// Bounds concurrent control handshakes: thousands of SYNs at once overflow the
    /// controller's accept queue and cost a one-second retransmit.
    pub handshakes: Semaphore,
    pub pacer: Pacer,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("node {node}: cannot reach the controller at {addr}: {source}")]
    Connect {
        node: u32,
        addr: SocketAddrV4,
        #[source]
        source: std::io::Error,
    },
    #[error("node {node}: control session: {message}")]
    Control { node: u32, message: String },
    #[error("node {node}: refused by the controller: {reason}")]
    Rejected { node: u32, reason: String },
    #[error("node {node}: {reason}")]
    Failed { node: u32, reason: String },
}

/// A link event from the node's link tasks.
enum LinkEvent {
    Up(u32, LinkIo),
    Down(u32),
}

impl From<LocalEnd> for LinkIo {
    fn from(end: LocalEnd) -> Self {
        LinkIo {
            tx: end.tx,
            rx: end.rx,
        }
    }
}

const WS_BUFFER: usize = 4096;

pub async fn run_node(ctx: NodeCtx, shared: Arc<Shared>) -> Result<(), NodeError> {
    let node = ctx.node_id;
    let ctl = SocketAddrV4::new(ctx.gateway, shared.controller_port);
    let control_err = |e: &dyn std::fmt::Display| NodeError::Control {
        node,
        message: e.to_string(),
    };

    let permit = shared.handshakes.acquire().await.expect("never closed");
    // The listener exists before the hello, so a peer told to dial always finds it.
    let mut listener = match ctx.link_port {
        Some(port) => Some(
            shared
                .factory
                .listen(
                    ctx.netns.clone(),
                    SocketAddrV4::new(ctx.underlay_addr, port),
                )
                .await
                .map_err(|e| NodeError::Failed {
                    node,
                    reason: format!(
                        "cannot listen for links on {}:{port}: {e}",
                        ctx.underlay_addr
                    ),
                })?,
        ),
        None => None,
    };
    let stream = shared
        .factory
        .connect(ctx.netns.clone(), ctl)
        .await
        .map_err(|source| NodeError::Connect {
            node,
            addr: ctl,
            source,
        })?;
    let config = WebSocketConfig::default()
        .read_buffer_size(WS_BUFFER)
        .write_buffer_size(0);
    let url = format!("ws://{ctl}{}", proto::NODE_PATH);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .map_err(|e| control_err(&e))?;
    let (mut sink, mut incoming) = ws.split();
    let send = |m: NodeToController| Message::Binary(proto::encode(&m).expect("encodes").into());
    sink.send(send(NodeToController::Hello {
        version: proto::VERSION,
        node_id: node,
        underlay_addr: ctx.underlay_addr,
        link_port: ctx.link_port.unwrap_or(0),
    }))
    .await
    .map_err(|e| control_err(&e))?;
    drop(permit);

    let (events_tx, mut events) = mpsc::unbounded_channel::<LinkEvent>();
    let mut pending: HashSet<u32> = HashSet::new();
    // Links held open while there is no dataplane to carry them.
    let mut links: Vec<(u32, LinkIo)> = Vec::new();
    let mut params: std::collections::HashMap<u32, proto::LinkParams> = Default::default();
    let mut dataplane: Option<Arc<Dataplane>> = None;
    // Tasks that must end with the node.
    let mut link_tasks = Vec::new();
    let mut _tun_task = None;
    let mut welcomed = false;
    let mut ready_sent = false;
    let mut accept_task = None;
    let mut stats_tick = tokio::time::interval(STATS_EVERY);
    stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stats_sent: Vec<proto::LinkCounters> = Vec::new();

    loop {
        tokio::select! {
            _ = stats_tick.tick(), if dataplane.is_some() => {
                let now = dataplane.as_ref().map(|dp| dp.link_counters()).unwrap_or_default();
                if now != stats_sent {
                    sink.send(send(NodeToController::LinkStats { links: now.clone() }))
                        .await
                        .map_err(|e| control_err(&e))?;
                    stats_sent = now;
                }
            }
            msg = incoming.next() => {
                let msg = match msg {
                    Some(Ok(Message::Binary(bytes))) => proto::decode::<ControllerToNode>(&bytes)
                        .map_err(|e| control_err(&e))?,
                    Some(Ok(Message::Close(_))) | None => {
                        return Err(control_err(&"the controller closed the session"));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(control_err(&e)),
                };
                match msg {
                    ControllerToNode::Welcome { neighbours, overlay_addr, overlay_prefix_len, dataplane: wants_dataplane, mtu, .. } => {
                        welcomed = true;
                        params = neighbours.iter().map(|n| (n.id, n.egress)).collect();
                        if wants_dataplane && ctx.tun_device && !ctx.fail {
                            let tun = shared
                                .factory
                                .tun(ctx.netns.clone(), overlay_addr, overlay_prefix_len, mtu)
                                .await
                                .map_err(|e| NodeError::Failed { node, reason: format!("cannot create its TUN device: {e}") })?;
                            let dp = Dataplane::new(node, overlay_addr, overlay_prefix_len, tun, shared.pacer.clone());
                            _tun_task = Some(dp.start());
                            dataplane = Some(dp);
                        }
                        if ctx.fail {
                            let reason = "failure injected (--fail-node)".to_owned();
                            let _ = sink.send(send(NodeToController::Failed { reason: reason.clone() })).await;
                            return Err(NodeError::Failed { node, reason });
                        }
                        let tcp_incoming = neighbours
                            .iter()
                            .filter(|n| n.transport == Transport::Tcp && n.id > node)
                            .count();
                        for n in &neighbours {
                            pending.insert(n.id);
                            if n.transport == Transport::Local {
                                let shared = shared.clone();
                                let events = events_tx.clone();
                                let peer = n.id;
                                tokio::spawn(async move {
                                    if let Some(end) = shared.hub.connect(node, peer).await {
                                        let _ = events.send(LinkEvent::Up(peer, end.into()));
                                    }
                                });
                            }
                        }
                        if tcp_incoming > 0 {
                            let Some(l) = listener.take() else {
                                return Err(NodeError::Failed {
                                    node,
                                    reason: "TCP links were assigned but the node has no link listener".into(),
                                });
                            };
                            accept_task = Some(tokio::spawn(accept_links(l, events_tx.clone())));
                        }
                    }
                    ControllerToNode::Dial { peer, addr } => {
                        let factory = shared.factory.clone();
                        let events = events_tx.clone();
                        let netns = ctx.netns.clone();
                        tokio::spawn(async move {
                            match dial_link(&factory, netns, node, addr).await {
                                Ok(stream) => {
                                    let io = tcp_link(stream, peer, events.clone());
                                    let _ = events.send(LinkEvent::Up(peer, io));
                                }
                                Err(e) => tracing::warn!("node {node}: link to {peer} at {addr}: {e}"),
                            }
                        });
                    }
                    ControllerToNode::Routes { routes, pinned } => {
                        if let Some(dp) = &dataplane {
                            dp.set_routes(routes, pinned);
                        }
                    }
                    ControllerToNode::SetLink { peer, change } => {
                        if let Some(p) = params.get_mut(&peer) {
                            *p = change.apply(*p);
                        }
                        if let Some(dp) = &dataplane {
                            dp.set_link(peer, change);
                        }
                    }
                    ControllerToNode::PeerFailed { peer } => {
                        pending.remove(&peer);
                    }
                    ControllerToNode::TopologyReady => {
                        tracing::debug!("node {node}: topology ready");
                    }
                    ControllerToNode::Rejected { reason } => {
                        return Err(NodeError::Rejected { node, reason });
                    }
                }
            }
            Some(event) = events.recv() => {
                match event {
                    LinkEvent::Up(peer, io) => {
                        if pending.remove(&peer) {
                            match &dataplane {
                                Some(dp) => {
                                    let p = params.get(&peer).copied().unwrap_or_default();
                                    let tasks = dp.attach(peer, p, io, u64::from(node) << 32 | u64::from(peer));
                                    link_tasks.extend(tasks);
                                }
                                None => links.push((peer, io)),
                            }
                            sink.send(send(NodeToController::LinkUp { peer })).await.map_err(|e| control_err(&e))?;
                        }
                    }
                    LinkEvent::Down(peer) => {
                        links.retain(|(p, _)| *p != peer);
                        if let Some(dp) = &dataplane {
                            dp.detach(peer);
                        }
                        sink.send(send(NodeToController::LinkDown { peer })).await.map_err(|e| control_err(&e))?;
                    }
                }
            }
        }
        if welcomed && !ready_sent && pending.is_empty() {
            ready_sent = true;
            sink.send(send(NodeToController::Ready))
                .await
                .map_err(|e| control_err(&e))?;
            if let Some(task) = accept_task.take() {
                // Every expected peer has connected.
                task.abort();
            }
        }
    }
}

/// Accepts TCP links: each peer opens with its node id (4 bytes, big endian).
async fn accept_links(listener: tokio::net::TcpListener, events: mpsc::UnboundedSender<LinkEvent>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let events = events.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let Ok(peer) = stream.read_u32().await else {
                return;
            };
            let io = tcp_link(stream, peer, events.clone());
            let _ = events.send(LinkEvent::Up(peer, io));
        });
    }
}

async fn dial_link(
    factory: &SocketFactory,
    netns: hostnet::netns::NsHandle,
    me: u32,
    to: SocketAddrV4,
) -> std::io::Result<tokio::net::TcpStream> {
    let mut stream = factory.connect(netns, to).await?;
    stream.write_u32(me).await?;
    Ok(stream)
}

/// Frames a TCP link (a 4-byte big-endian length, then the packet) onto a pair of channels,
/// and reports it down when the peer closes it.
fn tcp_link(
    stream: tokio::net::TcpStream,
    peer: u32,
    events: mpsc::UnboundedSender<LinkEvent>,
) -> LinkIo {
    let (mut reader, writer) = stream.into_split();
    let (in_tx, in_rx) = mpsc::channel::<Frame>(256);
    let (out_tx, mut out_rx) = mpsc::channel::<Frame>(256);
    tokio::spawn(async move {
        while let Ok(len) = reader.read_u32().await {
            if len as usize > MAX_FRAME {
                break; // not a peer speaking our framing
            }
            let mut buf = vec![0u8; len as usize];
            if reader.read_exact(&mut buf).await.is_err() {
                break;
            }
            let Some(frame) = Frame::from_bytes(buf) else {
                break; // shorter than a frame header: not our framing either
            };
            if in_tx.send(frame).await.is_err() {
                break;
            }
        }
        let _ = events.send(LinkEvent::Down(peer));
    });
    tokio::spawn(async move {
        let mut writer = tokio::io::BufWriter::new(writer);
        while let Some(p) = out_rx.recv().await {
            if writer.write_u32(p.as_bytes().len() as u32).await.is_err()
                || writer.write_all(p.as_bytes()).await.is_err()
            {
                return;
            }
            // Write out what is queued together, then flush once.
            while let Ok(p) = out_rx.try_recv() {
                if writer.write_u32(p.as_bytes().len() as u32).await.is_err()
                    || writer.write_all(p.as_bytes()).await.is_err()
                {
                    return;
                }
            }
            if writer.flush().await.is_err() {
                return;
            }
        }
    });
    LinkIo {
        tx: out_tx,
        rx: in_rx,
    }
}

/// How often a node reports its link counters (when they changed).
const STATS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The largest frame a link carries: a TUN device's largest read (header and 64 KB segment).
const MAX_FRAME: usize = crate::frame::HEADER + 65535;
