//! Sockets inside node namespaces, made by one thread that enters each namespace in turn.
//!
//! A socket belongs to the network namespace of the thread that calls `socket()`, for its whole
//! life; connecting, binding and I/O can then happen anywhere. So one thread does `setns` +
//! `socket()` (a few microseconds) on request and hands the socket to tokio: no thread or
//! process per node, no `ip netns exec`.

use std::io;
use std::net::{SocketAddr, SocketAddrV4};

use hostnet::netns::NsHandle;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::sync::{mpsc, oneshot};

enum Kind {
    /// An unconnected TCP socket, to connect from tokio.
    Stream,
    /// A TCP listener bound to this address.
    Listener(SocketAddrV4),
}

struct Request {
    netns: NsHandle,
    kind: Kind,
    reply: oneshot::Sender<io::Result<Socket>>,
}

/// Creates sockets in node namespaces. Cheap to clone.
#[derive(Clone)]
pub struct SocketFactory {
    tx: mpsc::UnboundedSender<Request>,
}

impl SocketFactory {
    /// Starts the factory thread. It ends when every clone is dropped.
    pub fn start() -> io::Result<Self> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Request>();
        std::thread::Builder::new()
            .name("nm-sockets".into())
            .spawn(move || {
                while let Some(req) = rx.blocking_recv() {
                    let _ = req.reply.send(make(req.netns, req.kind));
                }
            })?;
        Ok(SocketFactory { tx })
    }

    async fn ask(&self, netns: NsHandle, kind: Kind) -> io::Result<Socket> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { netns, kind, reply })
            .map_err(|_| io::Error::other("socket factory stopped"))?;
        rx.await
            .map_err(|_| io::Error::other("socket factory stopped"))?
    }

    /// Connects a TCP stream from inside the namespace `netns`.
    pub async fn connect(
        &self,
        netns: NsHandle,
        to: SocketAddrV4,
    ) -> io::Result<tokio::net::TcpStream> {
        let socket = self.ask(netns, Kind::Stream).await?;
        let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
        let stream = socket.connect(SocketAddr::V4(to)).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// A listener inside `netns`, bound to `addr`.
    pub async fn listen(
        &self,
        netns: NsHandle,
        addr: SocketAddrV4,
    ) -> io::Result<tokio::net::TcpListener> {
        let socket = self.ask(netns, Kind::Listener(addr)).await?;
        tokio::net::TcpListener::from_std(socket.into())
    }
}

fn make(netns: NsHandle, kind: Kind) -> io::Result<Socket> {
    netns.enter()?;
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    if let Kind::Listener(addr) = kind {
        socket.set_reuse_address(true)?;
        socket.bind(&SockAddr::from(addr))?;
        socket.listen(1024)?;
    }
    Ok(socket)
}
