//! In-process links between nodes of one agent: a pair of bounded channels, handed out when
//! both ends have asked for the link. No socket, no kernel, no fd.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddrV4;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use super::{Acceptor, Endpoint, LinkEvent, LinkEvents, LinkIo, NoAcceptor, Transport};

/// Frames in flight per direction of a local link.
const LOCAL_LINK_DEPTH: usize = 256;

/// The first end of each link to ask, waiting for the other: by (lower id, higher id).
type Waiting = HashMap<(u32, u32), oneshot::Sender<LinkIo>>;

/// Pairs the two ends of each local link: both nodes connect, and each gets its end once the
/// other has asked too.
#[derive(Default, Clone)]
pub struct LocalTransport {
    waiting: Arc<Mutex<Waiting>>,
}

impl LocalTransport {
    /// Resolves with `me`'s end once `peer` has asked too; None when the peer's side is gone.
    pub async fn pair(&self, me: u32, peer: u32) -> Option<LinkIo> {
        let key = (me.min(peer), me.max(peer));
        let rx = {
            let mut waiting = self.waiting.lock().expect("no panics hold it");
            match waiting.remove(&key) {
                Some(first) => {
                    let (a_tx, a_rx) = mpsc::channel(LOCAL_LINK_DEPTH);
                    let (b_tx, b_rx) = mpsc::channel(LOCAL_LINK_DEPTH);
                    let theirs = LinkIo { tx: a_tx, rx: b_rx };
                    let mine = LinkIo { tx: b_tx, rx: a_rx };
                    // If the first side is gone (its node failed), the link is not up.
                    return first.send(theirs).ok().map(|()| mine);
                }
                None => {
                    let (tx, rx) = oneshot::channel();
                    waiting.insert(key, tx);
                    rx
                }
            }
        };
        rx.await.ok()
    }
}

impl Transport for LocalTransport {
    fn listen(&self, _: &Endpoint) -> BoxFuture<'static, io::Result<Box<dyn Acceptor>>> {
        Box::pin(async { Ok(Box::new(NoAcceptor) as Box<dyn Acceptor>) })
    }

    fn connect(&self, node: &Endpoint, peer: u32, _: Option<SocketAddrV4>, events: LinkEvents) {
        let hub = self.clone();
        let me = node.node_id;
        tokio::spawn(async move {
            if let Some(io) = hub.pair(me, peer).await {
                let _ = events.send(LinkEvent::Up(peer, io));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Frame;

    #[tokio::test]
    async fn both_ends_meet_and_carry_frames() {
        let hub = LocalTransport::default();
        let h = hub.clone();
        let first = tokio::spawn(async move { h.pair(1, 2).await });
        tokio::task::yield_now().await;
        let mut second = hub.pair(2, 1).await.unwrap();
        let first = first.await.unwrap().unwrap();
        first.tx.send(Frame::from_ip(b"hello")).await.unwrap();
        assert_eq!(second.rx.recv().await.unwrap().ip(), b"hello");
    }
}
