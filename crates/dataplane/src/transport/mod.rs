//! How links come up. A link is a pair of frame channels ([`LinkIo`]) whatever carries it; a
//! [`Transport`] makes them. The emulator sits in front of every transport, so rate, delay and
//! loss are the same over all of them.
//!
//! Calling order for one node: [`Transport::listen`] before the node says hello (so a peer
//! that is told to connect here finds it ready), [`Acceptor::start`] once the node knows its
//! neighbours, and [`Transport::connect`] for each link this side opens (the session says
//! which). Links that come up or go down are reported on the node's [`LinkEvents`].
//!
//! Adding a transport: a file here implementing [`Transport`], an arm in `proto::Transport`
//! (the name the controller uses for it), and a line in [`Transports::new`].

mod kernel;
mod local;
mod quic;
mod tcp;
mod udp;

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use crate::AbortOnDrop;
use crate::frame::Frame;
use crate::sockets::SocketFactory;

pub use kernel::KernelTransport;
pub use local::LocalTransport;
pub use quic::QuicTransport;
pub use tcp::TcpTransport;
pub use udp::UdpTransport;

/// A link's two directions as channels: frames to the peer, frames from it.
pub struct LinkIo {
    pub tx: mpsc::Sender<Frame>,
    pub rx: mpsc::Receiver<Frame>,
}

/// What happens to a node's links.
pub enum LinkEvent {
    Up(u32, LinkIo),
    /// A kernel link to this peer is up: the node's kernel carries it, not a [`LinkIo`].
    Kernel(u32),
    Down(u32),
}

pub type LinkEvents = mpsc::UnboundedSender<LinkEvent>;

/// Where a node is: enough for a transport to listen and connect in its namespace.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub node_id: u32,
    pub underlay_addr: Ipv4Addr,
    pub netns: hostnet::netns::NsHandle,
}

/// A way of carrying links between nodes.
pub trait Transport: Send + Sync + 'static {
    /// Prepares `node` to take links that peers open to it. Resolves before the node says
    /// hello; the acceptor starts taking links when the node is welcomed.
    fn listen(&self, node: &Endpoint) -> BoxFuture<'static, io::Result<Box<dyn Acceptor>>>;

    /// Opens the link from `node` to `peer` (at `addr`, when the controller gave one) and
    /// reports it on `events` once it is up. Failures are logged; the link then stays down.
    fn connect(&self, node: &Endpoint, peer: u32, addr: Option<SocketAddrV4>, events: LinkEvents);
}

/// Takes the links peers open to one node.
pub trait Acceptor: Send {
    /// Starts taking links; they are reported on `events`. Taking stops when the guard is
    /// dropped.
    fn start(self: Box<Self>, node: u32, events: LinkEvents) -> Option<AbortOnDrop>;
}

/// An acceptor for transports whose links are never opened towards a node.
pub struct NoAcceptor;

impl Acceptor for NoAcceptor {
    fn start(self: Box<Self>, _: u32, _: LinkEvents) -> Option<AbortOnDrop> {
        None
    }
}

/// How an agent's links over the network are carried, as the controller says.
#[derive(Debug, Clone)]
pub struct NetworkLinks {
    /// Where nodes take links, on their underlay address (QUIC's is the next port:
    /// [`proto::Transport::port`]).
    pub port: u16,
    /// TCP, UDP or QUIC: each one some link takes.
    pub transports: Vec<proto::Transport>,
    pub quic_congestion: proto::QuicCongestion,
}

/// The transports of one agent, by the name the controller uses.
#[derive(Clone)]
pub struct Transports {
    by_kind: HashMap<proto::Transport, Arc<dyn Transport>>,
}

impl Transports {
    /// The in-process and kernel transports, and those of the links over the network.
    pub fn new(factory: SocketFactory, network: Option<NetworkLinks>) -> io::Result<Transports> {
        let mut by_kind: HashMap<proto::Transport, Arc<dyn Transport>> = HashMap::new();
        by_kind.insert(proto::Transport::Local, Arc::new(LocalTransport::default()));
        by_kind.insert(
            proto::Transport::Kernel,
            Arc::new(KernelTransport::new(factory.clone())),
        );
        if let Some(net) = &network {
            for &kind in &net.transports {
                let port = kind.port(net.port);
                let transport: Arc<dyn Transport> = match kind {
                    proto::Transport::Udp => Arc::new(UdpTransport::new(factory.clone(), port)),
                    proto::Transport::Quic => Arc::new(QuicTransport::new(
                        factory.clone(),
                        port,
                        net.quic_congestion,
                    )?),
                    proto::Transport::Tcp => Arc::new(TcpTransport::new(factory.clone(), port)),
                    proto::Transport::Local | proto::Transport::Kernel => continue,
                };
                by_kind.insert(kind, transport);
            }
        }
        Ok(Transports { by_kind })
    }

    pub fn get(&self, kind: proto::Transport) -> Option<&Arc<dyn Transport>> {
        self.by_kind.get(&kind)
    }

    /// Every transport, for a node to listen on each.
    pub fn all(&self) -> impl Iterator<Item = (&proto::Transport, &Arc<dyn Transport>)> {
        self.by_kind.iter()
    }
}
