//! Links as UDP datagrams over the underlay (`protocol = "udp"`). Each node has one socket on
//! its underlay address and the link port, shared by all of its links; datagrams are told apart
//! by their source address. The node told to dial says hello (an 8-byte datagram naming it)
//! until the peer answers; the peer learns the dialler's address from the hello. A frame
//! (virtio-net header and packet, at least 12 bytes) travels as one datagram; one too large for
//! a datagram (a TSO segment near 64 KB) is cut into its packets first.
//!
//! There is no connection: a link is up once both ends have heard from each other, and UDP
//! says nothing when a peer goes away (the controller's sessions do). A datagram the kernel
//! drops (a full socket buffer) is lost as on a wire; the emulator in front decides the rest.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::{Acceptor, Endpoint, LinkEvent, LinkEvents, LinkIo, Transport};
use crate::AbortOnDrop;
use crate::frame::{self, Frame};
use crate::sockets::SocketFactory;

/// The largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;
/// Frames queued per direction between the emulator and the socket.
const DEPTH: usize = 256;
/// Socket buffers: room for bursts of large frames.
const SOCKET_BUFFER: usize = 4 << 20;
/// How often, and how long, a dialler says hello before giving up.
const HELLO_EVERY: Duration = Duration::from_millis(50);
const HELLO_TRIES: usize = 200;

const HELLO: [u8; 4] = *b"nmUh";
const HELLO_BACK: [u8; 4] = *b"nmUb";

/// A control datagram: magic and node id.
fn control(magic: [u8; 4], node: u32) -> [u8; 8] {
    let mut d = [0u8; 8];
    d[..4].copy_from_slice(&magic);
    d[4..].copy_from_slice(&node.to_be_bytes());
    d
}

/// What a received datagram is.
#[derive(Debug, PartialEq)]
enum Datagram<'a> {
    Hello(u32),
    HelloBack(u32),
    Frame(&'a [u8]),
    Other,
}

fn classify(d: &[u8]) -> Datagram<'_> {
    if d.len() == 8 {
        let node = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
        return match [d[0], d[1], d[2], d[3]] {
            HELLO => Datagram::Hello(node),
            HELLO_BACK => Datagram::HelloBack(node),
            _ => Datagram::Other,
        };
    }
    if d.len() >= frame::HEADER {
        Datagram::Frame(d)
    } else {
        Datagram::Other
    }
}

pub struct UdpTransport {
    factory: SocketFactory,
    port: u16,
    /// Each node's socket, made when it listens; kept while the agent runs.
    nodes: Arc<Mutex<HashMap<u32, NodeSocket>>>,
}

impl UdpTransport {
    /// Nodes take their links' datagrams on `port` of their underlay address.
    pub fn new(factory: SocketFactory, port: u16) -> Self {
        UdpTransport {
            factory,
            port,
            nodes: Arc::default(),
        }
    }
}

/// One node's socket, the links on it, and the task that reads it (stopped with it).
struct NodeSocket {
    socket: Arc<UdpSocket>,
    state: Arc<Mutex<State>>,
    _reader: AbortOnDrop,
}

#[derive(Default)]
struct State {
    /// Where each link's frames go, by the peer's address.
    links: HashMap<SocketAddr, mpsc::Sender<Frame>>,
    /// Links this node dialled that have not been answered: the peer's id, by address.
    dialled: HashMap<SocketAddr, u32>,
    /// The node's link events, once it accepts or dials.
    events: Option<LinkEvents>,
}

impl Transport for UdpTransport {
    fn listen(&self, node: &Endpoint) -> BoxFuture<'static, io::Result<Box<dyn Acceptor>>> {
        let factory = self.factory.clone();
        let addr = SocketAddrV4::new(node.underlay_addr, self.port);
        let netns = node.netns.clone();
        let me = node.node_id;
        let nodes = self.nodes.clone();
        Box::pin(async move {
            let socket = factory
                .udp(netns, addr, SOCKET_BUFFER, true)
                .await
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot take links' datagrams on {addr}: {e}"),
                    )
                })?;
            let socket = Arc::new(UdpSocket::from_std(socket)?);
            let state: Arc<Mutex<State>> = Arc::default();
            let reader = tokio::spawn(read_datagrams(me, socket.clone(), state.clone()));
            nodes.lock().expect("no panics hold it").insert(
                me,
                NodeSocket {
                    socket,
                    state: state.clone(),
                    _reader: AbortOnDrop(reader.abort_handle()),
                },
            );
            Ok(Box::new(UdpAcceptor { state }) as Box<dyn Acceptor>)
        })
    }

    fn connect(&self, node: &Endpoint, peer: u32, addr: Option<SocketAddrV4>, events: LinkEvents) {
        let me = node.node_id;
        let Some(addr) = addr else {
            tracing::warn!("node {me}: a UDP link to {peer} needs its address");
            return;
        };
        let (socket, state) = match self.nodes.lock().expect("no panics hold it").get(&me) {
            Some(n) => (n.socket.clone(), n.state.clone()),
            None => {
                tracing::warn!("node {me}: no UDP socket for the link to {peer}");
                return;
            }
        };
        let to = SocketAddr::V4(addr);
        {
            let mut s = state.lock().expect("no panics hold it");
            s.events.get_or_insert(events);
            s.dialled.insert(to, peer);
        }
        tokio::spawn(async move {
            let hello = control(HELLO, me);
            for _ in 0..HELLO_TRIES {
                let answered = !state
                    .lock()
                    .expect("no panics hold it")
                    .dialled
                    .contains_key(&to);
                if answered {
                    return;
                }
                let _ = socket.send_to(&hello, to).await;
                tokio::time::sleep(HELLO_EVERY).await;
            }
            tracing::warn!("node {me}: the UDP link to {peer} at {to} was never answered");
        });
    }
}

struct UdpAcceptor {
    state: Arc<Mutex<State>>,
}

impl Acceptor for UdpAcceptor {
    /// The socket's reader runs from `listen` on (a dialler's links arrive on it too); this
    /// only tells it where this node's links go.
    fn start(self: Box<Self>, _node: u32, events: LinkEvents) -> Option<AbortOnDrop> {
        self.state
            .lock()
            .expect("no panics hold it")
            .events
            .get_or_insert(events);
        None
    }
}

/// Reads the node's socket: frames to their link, hellos open links (and are answered),
/// answers to this node's hellos open the links it dialled.
async fn read_datagrams(me: u32, socket: Arc<UdpSocket>, state: Arc<Mutex<State>>) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("node {me}: UDP links: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        match classify(&buf[..n]) {
            Datagram::Frame(bytes) => {
                let link = state
                    .lock()
                    .expect("no panics hold it")
                    .links
                    .get(&from)
                    .cloned();
                if let (Some(link), Some(frame)) = (link, Frame::from_bytes(bytes.to_vec())) {
                    // Waiting here leaves datagrams in the socket buffer: the kernel drops
                    // past it, as a wire would.
                    let _ = link.send(frame).await;
                }
            }
            Datagram::Hello(peer) => {
                let opened = {
                    let mut s = state.lock().expect("no panics hold it");
                    match s.events.clone() {
                        // Not accepting yet: the dialler says hello again.
                        None => continue,
                        Some(events) => {
                            if s.links.contains_key(&from) {
                                true
                            } else {
                                open_link(&mut s, &socket, from, peer, &events);
                                true
                            }
                        }
                    }
                };
                if opened {
                    let _ = socket.send_to(&control(HELLO_BACK, me), from).await;
                }
            }
            Datagram::HelloBack(peer) => {
                let mut s = state.lock().expect("no panics hold it");
                if s.dialled.get(&from) == Some(&peer) {
                    s.dialled.remove(&from);
                    if let Some(events) = s.events.clone() {
                        open_link(&mut s, &socket, from, peer, &events);
                    }
                }
            }
            Datagram::Other => {}
        }
    }
}

/// A link to `peer` at `to`: its frames in through the node's reader, out through a task that
/// sends them as datagrams.
fn open_link(
    s: &mut State,
    socket: &Arc<UdpSocket>,
    to: SocketAddr,
    peer: u32,
    events: &LinkEvents,
) {
    let (in_tx, in_rx) = mpsc::channel::<Frame>(DEPTH);
    let (out_tx, mut out_rx) = mpsc::channel::<Frame>(DEPTH);
    s.links.insert(to, in_tx);
    let socket = socket.clone();
    tokio::spawn(async move {
        while let Some(f) = out_rx.recv().await {
            send_frame(&socket, to, f).await;
        }
    });
    let _ = events.send(LinkEvent::Up(
        peer,
        LinkIo {
            tx: out_tx,
            rx: in_rx,
        },
    ));
}

/// One datagram per frame; a segment too large for one goes as its packets.
async fn send_frame(socket: &UdpSocket, to: SocketAddr, f: Frame) {
    if f.as_bytes().len() <= MAX_DATAGRAM {
        let _ = socket.send_to(f.as_bytes(), to).await;
        return;
    }
    for packet in f.segment() {
        let _ = socket.send_to(packet.as_bytes(), to).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_datagrams_and_frames_are_told_apart() {
        assert_eq!(classify(&control(HELLO, 7)), Datagram::Hello(7));
        assert_eq!(
            classify(&control(HELLO_BACK, 70_000)),
            Datagram::HelloBack(70_000)
        );
        assert_eq!(classify(b"nmXX\0\0\0\x01"), Datagram::Other);
        assert_eq!(classify(&[0u8; 5]), Datagram::Other);
        let frame = Frame::from_ip(&[0x45; 20]);
        assert_eq!(
            classify(frame.as_bytes()),
            Datagram::Frame(frame.as_bytes())
        );
    }
}
