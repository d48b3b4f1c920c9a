//! Kernel links between max-mode nodes of one agent: a veth pair between the two namespaces
//! (`hostnet::kernel`). Both ends ask, as for in-process links; the second to ask creates the
//! pair from its own namespace into the first's, and each is told the link is up
//! ([`LinkEvent::Kernel`]). No frame of such a link passes through user space: the node's
//! kernel forwards over it, and what the user-space forwarder routes to it is handed to the
//! kernel through the node's TUN device.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddrV4;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use hostnet::netns::NsHandle;
use tokio::sync::oneshot;

use super::{Acceptor, Endpoint, LinkEvent, LinkEvents, NoAcceptor, Transport};
use crate::sockets::SocketFactory;

/// The first end of each kernel link to ask, waiting for the other: by (lower id, higher id),
/// with its namespace and how to tell it the outcome.
type Waiting = HashMap<(u32, u32), (NsHandle, oneshot::Sender<io::Result<()>>)>;

#[derive(Clone)]
pub struct KernelTransport {
    factory: SocketFactory,
    waiting: Arc<Mutex<Waiting>>,
}

impl KernelTransport {
    pub fn new(factory: SocketFactory) -> KernelTransport {
        KernelTransport {
            factory,
            waiting: Arc::default(),
        }
    }

    /// Resolves once the pair between `me` and `peer` exists and both ends are up.
    async fn pair(&self, me: u32, my_ns: NsHandle, peer: u32) -> io::Result<()> {
        let key = (me.min(peer), me.max(peer));
        let first = {
            let mut waiting = self.waiting.lock().expect("no panics hold it");
            let first = waiting.remove(&key);
            match first {
                Some(first) => Ok(first),
                None => {
                    let (tx, rx) = oneshot::channel();
                    waiting.insert(key, (my_ns.clone(), tx));
                    Err(rx)
                }
            }
        };
        let first = match first {
            Ok(first) => first,
            Err(rx) => {
                return rx
                    .await
                    .map_err(|_| io::Error::other("the peer's side of the link is gone"))?;
            }
        };
        let (peer_ns, tell_peer) = first;
        // Made from this side into the peer's namespace; each node raises and configures its
        // own end when it attaches the link.
        let made = self
            .factory
            .run_in(my_ns, move || {
                let file;
                let fd = match &peer_ns {
                    NsHandle::Fd(fd) => *fd,
                    NsHandle::Path(path) => {
                        file = std::fs::File::open(path)?;
                        file.as_raw_fd()
                    }
                };
                hostnet::kernel::create_pair(me, peer, fd)
            })
            .await;
        let _ = tell_peer.send(match &made {
            Ok(()) => Ok(()),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        });
        made
    }
}

impl Transport for KernelTransport {
    fn listen(&self, _: &Endpoint) -> BoxFuture<'static, io::Result<Box<dyn Acceptor>>> {
        Box::pin(async { Ok(Box::new(NoAcceptor) as Box<dyn Acceptor>) })
    }

    fn connect(&self, node: &Endpoint, peer: u32, _: Option<SocketAddrV4>, events: LinkEvents) {
        let hub = self.clone();
        let me = node.node_id;
        let netns = node.netns.clone();
        tokio::spawn(async move {
            match hub.pair(me, netns, peer).await {
                Ok(()) => {
                    let _ = events.send(LinkEvent::Kernel(peer));
                }
                Err(e) => tracing::warn!("node {me}: the kernel link to {peer} failed: {e}"),
            }
        });
    }
}
