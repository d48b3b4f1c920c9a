//! The listener that nodes reach: code inside an emulated node can dial it, so it is bounded.
//! Each peer address gets a few connections at a time (a node needs one session, and a status
//! poll now and then), and a connection that says nothing for a while is closed, so that one
//! node can't hold the controller's descriptors.
//!
//! The controller's main listener may be reachable from nodes too (`nextmini controller` on
//! 0.0.0.0, a head's experiment on its host): there, connections from the nodes' underlay
//! ([`NodeNets`], learnt from the agents that register) are bounded the same way, and the
//! server answers them the status only.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Connections one peer address may hold at once.
pub const PER_PEER: usize = 8;
/// How long a new connection may stay silent before it is closed.
pub const SILENT_FOR: Duration = Duration::from_secs(10);

/// Open connections per peer address: a pure count, checked and tested on its own.
#[derive(Debug, Default)]
pub struct PeerCounts {
    open: HashMap<IpAddr, usize>,
}

impl PeerCounts {
    /// Takes a place for `peer`, or None when it holds `limit` already.
    pub fn admit(&mut self, peer: IpAddr, limit: usize) -> Option<()> {
        let n = self.open.entry(peer).or_default();
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(())
    }

    pub fn release(&mut self, peer: IpAddr) {
        if let Some(n) = self.open.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                self.open.remove(&peer);
            }
        }
    }

    pub fn open(&self, peer: IpAddr) -> usize {
        self.open.get(&peer).copied().unwrap_or(0)
    }
}

/// The nodes' underlay networks (each agent's route towards its bridges): a peer in one of
/// them is a program inside a node. Shared by the listener and the server, grown as agents
/// register.
#[derive(Debug, Clone, Default)]
pub struct NodeNets(Arc<std::sync::RwLock<Vec<(u32, u32)>>>);

impl NodeNets {
    /// Adds `net/len` (an agent's underlay route).
    pub fn add(&self, net: std::net::Ipv4Addr, len: u8) {
        let mask = if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len.min(32)))
        };
        let entry = (u32::from(net) & mask, mask);
        let mut nets = self.0.write().expect("no panics hold it");
        if !nets.contains(&entry) {
            nets.push(entry);
        }
    }

    /// Whether `peer` is inside a node's underlay.
    pub fn contains(&self, peer: IpAddr) -> bool {
        let IpAddr::V4(v4) = peer.to_canonical() else {
            return false;
        };
        let a = u32::from(v4);
        self.0
            .read()
            .expect("no panics hold it")
            .iter()
            .any(|&(net, mask)| a & mask == net)
    }
}

/// Who is on the other end of a connection the main listener took.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, BoundedListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, BoundedListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

impl
    axum::extract::connect_info::Connected<
        axum::serve::IncomingStream<'_, TlsListener<BoundedListener>>,
    > for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener<BoundedListener>>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

/// TLS in front of another listener (`--tls`): each connection's handshake runs on its own
/// task (at most [`HANDSHAKE_WITHIN`]), so a slow or silent client holds up nobody else.
pub struct TlsListener<L: axum::serve::Listener> {
    inner: L,
    acceptor: tls::TlsAcceptor,
    done_tx: tokio::sync::mpsc::Sender<(tls::ServerStream<L::Io>, L::Addr)>,
    done_rx: tokio::sync::mpsc::Receiver<(tls::ServerStream<L::Io>, L::Addr)>,
}

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_WITHIN: Duration = Duration::from_secs(10);

impl<L: axum::serve::Listener> TlsListener<L> {
    pub fn new(inner: L, acceptor: tls::TlsAcceptor) -> Self {
        let (done_tx, done_rx) = tokio::sync::mpsc::channel(64);
        TlsListener {
            inner,
            acceptor,
            done_tx,
            done_rx,
        }
    }
}

impl<L> axum::serve::Listener for TlsListener<L>
where
    L: axum::serve::Listener,
    L::Io: Unpin,
{
    type Io = tls::ServerStream<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                (io, addr) = self.inner.accept() => {
                    let acceptor = self.acceptor.clone();
                    let done = self.done_tx.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_WITHIN, acceptor.accept(io)).await {
                            Ok(Ok(stream)) => {
                                let _ = done.send((stream, addr)).await;
                            }
                            Ok(Err(e)) => tracing::debug!("TLS handshake: {e}"),
                            Err(_) => tracing::debug!("TLS handshake not done in time"),
                        }
                    });
                }
                Some(done) = self.done_rx.recv() => return done,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

pub struct BoundedListener {
    inner: TcpListener,
    counts: Arc<Mutex<PeerCounts>>,
    per_peer: usize,
    silent_for: Duration,
    /// Only peers in these networks are bounded (None: every peer).
    only: Option<NodeNets>,
}

impl BoundedListener {
    /// Every peer is bounded: a listener only nodes reach.
    pub fn new(inner: TcpListener) -> Self {
        BoundedListener {
            inner,
            counts: Arc::default(),
            per_peer: PER_PEER,
            silent_for: SILENT_FOR,
            only: None,
        }
    }

    /// Only peers inside `nodes` are bounded: the controller's main listener.
    pub fn nodes_among(inner: TcpListener, nodes: NodeNets) -> Self {
        BoundedListener {
            only: Some(nodes),
            ..BoundedListener::new(inner)
        }
    }
}

impl axum::serve::Listener for BoundedListener {
    type Io = BoundedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (BoundedStream, SocketAddr) {
        loop {
            let (stream, peer) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or similar: wait rather than spin.
                    tracing::warn!("node listener: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            if self.only.as_ref().is_some_and(|n| !n.contains(peer.ip())) {
                return (
                    BoundedStream {
                        inner: stream,
                        peer: peer.ip(),
                        counts: None,
                        silence: None,
                    },
                    peer,
                );
            }
            let admitted = self
                .counts
                .lock()
                .expect("no panics hold it")
                .admit(peer.ip(), self.per_peer);
            if admitted.is_none() {
                tracing::debug!("{peer} holds {} connections already: closed", self.per_peer);
                drop(stream);
                continue;
            }
            return (
                BoundedStream {
                    inner: stream,
                    peer: peer.ip(),
                    counts: Some(self.counts.clone()),
                    silence: Some(Box::pin(tokio::time::sleep(self.silent_for))),
                },
                peer,
            );
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A node's connection: gives its place back when closed; fails a read if nothing arrived
/// within the silence allowed. (Another peer's on the main listener: neither.)
pub struct BoundedStream {
    inner: TcpStream,
    peer: IpAddr,
    counts: Option<Arc<Mutex<PeerCounts>>>,
    /// Until the first byte: when the connection counts as idle.
    silence: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Drop for BoundedStream {
    fn drop(&mut self) {
        if let Some(Ok(mut c)) = self.counts.as_ref().map(|c| c.lock()) {
            c.release(self.peer);
        }
    }
}

impl AsyncRead for BoundedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        match polled {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                self.silence = None;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let silent_too_long = self
                    .silence
                    .as_mut()
                    .is_some_and(|silence| silence.as_mut().poll(cx).is_ready());
                if silent_too_long {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "silent connection closed",
                    )))
                } else {
                    Poll::Pending
                }
            }
            other => other,
        }
    }
}

impl AsyncWrite for BoundedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_peer_gets_its_own_few_places_back_when_it_closes() {
        let mut c = PeerCounts::default();
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..3 {
            assert!(c.admit(a, 3).is_some());
        }
        assert!(c.admit(a, 3).is_none());
        assert!(c.admit(b, 3).is_some());
        c.release(a);
        assert_eq!(c.open(a), 2);
        assert!(c.admit(a, 3).is_some());
        for _ in 0..3 {
            c.release(a);
        }
        c.release(b);
        assert!(c.open.is_empty());
    }

    #[test]
    fn node_nets_hold_the_agents_underlays_and_nothing_else() {
        let nets = NodeNets::default();
        let ip = |a: [u8; 4]| IpAddr::from(a);
        assert!(!nets.contains(ip([172, 20, 0, 5])));
        nets.add([172, 20, 0, 0].into(), 22);
        nets.add([172, 20, 0, 0].into(), 22);
        assert_eq!(nets.0.read().unwrap().len(), 1);
        assert!(nets.contains(ip([172, 20, 0, 5])));
        assert!(nets.contains(ip([172, 20, 3, 255])));
        assert!(!nets.contains(ip([172, 20, 4, 0])));
        assert!(!nets.contains(ip([127, 0, 0, 1])));
        // An IPv4 peer on a dual-stack socket is the same peer.
        assert!(nets.contains(IpAddr::from(
            std::net::Ipv4Addr::new(172, 20, 1, 1).to_ipv6_mapped()
        )));
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_and_a_talking_one_is_not() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let mut listener = BoundedListener {
            inner,
            counts: Arc::default(),
            per_peer: 2,
            silent_for: Duration::from_millis(200),
            only: None,
        };
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut talking = TcpStream::connect(addr).await.unwrap();
        let over = TcpStream::connect(addr).await.unwrap();
        let (mut s1, _) = axum::serve::Listener::accept(&mut listener).await;
        let (mut s2, _) = axum::serve::Listener::accept(&mut listener).await;
        // A third from the same address is closed at accept, and accept waits on.
        let third = tokio::time::timeout(
            Duration::from_millis(100),
            axum::serve::Listener::accept(&mut listener),
        )
        .await;
        assert!(third.is_err());
        let mut over = over;
        let mut byte = [0u8; 1];
        assert_eq!(over.read(&mut byte).await.unwrap(), 0);
        // The talking one stays; the silent one fails its read once the silence is over.
        talking.write_all(b"x").await.unwrap();
        s2.read_exact(&mut byte).await.unwrap();
        let e = s1.read(&mut byte).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let quiet = tokio::time::timeout(Duration::from_millis(300), s2.read(&mut byte)).await;
        assert!(quiet.is_err(), "a connection that spoke is not timed out");
        drop(s1);
        assert_eq!(listener.counts.lock().unwrap().open(addr.ip()), 1);
        let _ = silent.write_all(b"late").await;
    }
}
