//! Links as persistent TCP connections over the underlay (the seeds' `protocol = "tcp"`, and
//! every link between nodes of different hosts). The node that is told to dial opens the
//! connection and sends its node id (4 bytes, big endian); then each frame travels as a 4-byte
//! big-endian length and the frame (virtio-net header and packet).

use std::io;
use std::net::SocketAddrV4;

use futures_util::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{Acceptor, Endpoint, LinkEvent, LinkEvents, LinkIo, Transport};
use crate::AbortOnDrop;
use crate::frame::{self, Frame};
use crate::sockets::SocketFactory;

/// The largest frame a link carries: a TUN device's largest read (header and 64 KB segment).
const MAX_FRAME: usize = frame::HEADER + 65535;
/// Frames queued per direction between the emulator and the socket.
const DEPTH: usize = 256;

pub struct TcpTransport {
    factory: SocketFactory,
    port: u16,
}

impl TcpTransport {
    /// Nodes listen for links on `port` of their underlay address.
    pub fn new(factory: SocketFactory, port: u16) -> Self {
        TcpTransport { factory, port }
    }
}

struct TcpAcceptor(TcpListener);

impl Transport for TcpTransport {
    fn listen(&self, node: &Endpoint) -> BoxFuture<'static, io::Result<Box<dyn Acceptor>>> {
        let factory = self.factory.clone();
        let addr = SocketAddrV4::new(node.underlay_addr, self.port);
        let netns = node.netns.clone();
        Box::pin(async move {
            let listener = factory.listen(netns, addr).await.map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen for links on {addr}: {e}"))
            })?;
            Ok(Box::new(TcpAcceptor(listener)) as Box<dyn Acceptor>)
        })
    }

    fn connect(&self, node: &Endpoint, peer: u32, addr: Option<SocketAddrV4>, events: LinkEvents) {
        let factory = self.factory.clone();
        let netns = node.netns.clone();
        let me = node.node_id;
        let Some(addr) = addr else {
            tracing::warn!("node {me}: a TCP link to {peer} needs its address");
            return;
        };
        tokio::spawn(async move {
            let dialled = async {
                let mut stream = factory.connect(netns, addr).await?;
                stream.write_u32(me).await?;
                io::Result::Ok(stream)
            };
            match dialled.await {
                Ok(stream) => {
                    let io = frame_link(stream, peer, events.clone());
                    let _ = events.send(LinkEvent::Up(peer, io));
                }
                Err(e) => tracing::warn!("node {me}: link to {peer} at {addr}: {e}"),
            }
        });
    }
}

impl Acceptor for TcpAcceptor {
    fn start(self: Box<Self>, _node: u32, events: LinkEvents) -> Option<AbortOnDrop> {
        let listener = self.0;
        let task = tokio::spawn(async move {
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
                    let io = frame_link(stream, peer, events.clone());
                    let _ = events.send(LinkEvent::Up(peer, io));
                });
            }
        });
        Some(AbortOnDrop(task.abort_handle()))
    }
}

/// Frames a TCP link onto a pair of channels, and reports it down when the peer closes it.
fn frame_link(stream: TcpStream, peer: u32, events: LinkEvents) -> LinkIo {
    let (reader, writer) = stream.into_split();
    frame_streams(reader, writer, peer, events, ())
}

/// Frames a link carried by a byte stream each way (a TCP connection's halves, a QUIC
/// stream's) onto a pair of channels: a 4-byte big-endian length, then the frame. The link
/// is reported down when the incoming stream ends; `keep` (a connection handle) lives as
/// long as the link does.
pub(super) fn frame_streams<R, W, K>(
    mut reader: R,
    writer: W,
    peer: u32,
    events: LinkEvents,
    keep: K,
) -> LinkIo
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
    K: Send + 'static,
{
    let (in_tx, in_rx) = mpsc::channel::<Frame>(DEPTH);
    let (out_tx, mut out_rx) = mpsc::channel::<Frame>(DEPTH);
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
        drop(keep);
    });
    tokio::spawn(async move {
        let mut writer = tokio::io::BufWriter::new(writer);
        while let Some(p) = out_rx.recv().await {
            if write_frame(&mut writer, &p).await.is_err() {
                return;
            }
            // Write out what is queued together, then flush once.
            while let Ok(p) = out_rx.try_recv() {
                if write_frame(&mut writer, &p).await.is_err() {
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

async fn write_frame<W: tokio::io::AsyncWrite + Unpin>(
    writer: &mut tokio::io::BufWriter<W>,
    frame: &Frame,
) -> io::Result<()> {
    writer.write_u32(frame.as_bytes().len() as u32).await?;
    writer.write_all(frame.as_bytes()).await
}
