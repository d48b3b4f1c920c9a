//! Programs in nodes asking a controller on another host (the seeds' `wait_for_topology_ready`
//! asks for its status; node sessions themselves travel inside the agent's session).
//!
//! Programs in nodes reach the controller at their gateway (the bridge's address) and its
//! port. When the controller runs on this host it listens there itself; when it runs
//! elsewhere, the agent listens in its place and relays `GET /api/status` to the controller's
//! real address, and nothing else: code inside a node can read the status but neither change
//! nor stop the experiment through the relay (the relay's connection comes from this host, so
//! the controller could not tell it from an operator's). Each node address gets a few
//! connections at a time, and one that sends no request soon is closed. No route or NAT takes
//! node traffic off the host: the agent's own connection does.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Connections one node address may hold at once.
const PER_PEER: usize = 8;
/// How long a node has to send its request.
const REQUEST_WITHIN: Duration = Duration::from_secs(10);
/// The longest request head relayed.
const MAX_HEAD: usize = 8 << 10;

const REFUSAL: &str = "programs in nodes may read /api/status and nothing else here\n";

/// Listens at `gateway:port` and relays status requests to `controller`. None when the
/// address is taken: the controller itself listens on this host.
pub fn start(
    gateway: Ipv4Addr,
    port: u16,
    controller: SocketAddr,
    tls: Option<tls::Trust>,
) -> io::Result<Option<tokio::task::JoinHandle<()>>> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    // The bridge may not have its address yet: plumbing runs after this.
    socket.set_freebind_v4(true)?;
    socket.set_nonblocking(true)?;
    match socket.bind(&SocketAddrV4::new(gateway, port).into()) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Ok(None),
        Err(e) => return Err(e),
    }
    socket.listen(4096)?;
    let listener = TcpListener::from_std(socket.into())?;
    tracing::info!(
        "the controller is at {controller}: relaying status requests of nodes from {gateway}:{port}"
    );
    let open: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    Ok(Some(tokio::spawn(async move {
        loop {
            let (node, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or similar: wait rather than spin.
                    tracing::warn!("relay: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(place) = Place::take(&open, peer.ip()) else {
                continue;
            };
            let tls = tls.clone();
            tokio::spawn(async move {
                let _place = place;
                if let Err(e) = relay_one(node, controller, tls.as_ref()).await {
                    tracing::debug!("relay for {peer}: {e}");
                }
            });
        }
    })))
}

/// One of a node address's few connections; given back when dropped.
struct Place {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    peer: IpAddr,
}

impl Place {
    fn take(open: &Arc<Mutex<HashMap<IpAddr, usize>>>, peer: IpAddr) -> Option<Place> {
        let mut counts = open.lock().expect("no panics hold it");
        let n = counts.entry(peer).or_default();
        if *n >= PER_PEER {
            return None;
        }
        *n += 1;
        Some(Place {
            open: open.clone(),
            peer,
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut counts = self.open.lock().expect("no panics hold it");
        if let Some(n) = counts.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.peer);
            }
        }
    }
}

async fn relay_one(
    mut node: TcpStream,
    controller: SocketAddr,
    tls: Option<&tls::Trust>,
) -> io::Result<()> {
    let _ = node.set_nodelay(true);
    let Ok(head) = tokio::time::timeout(REQUEST_WITHIN, read_head(&mut node)).await else {
        return Ok(());
    };
    let Some(request) = status_request(&head?) else {
        let refused = format!(
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{REFUSAL}",
            REFUSAL.len()
        );
        return node.write_all(refused.as_bytes()).await;
    };
    let upstream = TcpStream::connect(controller).await?;
    let _ = upstream.set_nodelay(true);
    // Nodes speak plain HTTP to their gateway; the hop between hosts is TLS when the agent's is.
    let mut upstream = tls::Stream::open(tls, &controller.ip().to_string(), upstream).await?;
    upstream.write_all(&request).await?;
    // One request, one answer: the controller closes after it (`Connection: close`), and
    // nothing more the node sends is read.
    tokio::io::copy(&mut upstream, &mut node).await?;
    Ok(())
}

/// Reads up to the end of the request head (or `MAX_HEAD` bytes, or the end of the stream).
async fn read_head(node: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while head.len() < MAX_HEAD && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = node.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    Ok(head)
}

/// The request to send upstream when `head` is a status request without a body, ending the
/// connection after its answer; None for anything else.
fn status_request(head: &[u8]) -> Option<Vec<u8>> {
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    // Nothing may follow the head: a body or a second request is not relayed.
    if end + 4 != head.len() {
        return None;
    }
    let text = std::str::from_utf8(&head[..end]).ok()?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target, version) = (first.next()?, first.next()?, first.next()?);
    if first.next().is_some()
        || method != "GET"
        || !(target == "/api/status" || target.starts_with("/api/status?"))
        || !(version == "HTTP/1.1" || version == "HTTP/1.0")
    {
        return None;
    }
    let mut out = format!("GET /api/status {version}\r\n");
    for line in lines {
        let (name, _) = line.split_once(':')?;
        let name = name.trim().to_ascii_lowercase();
        match name.as_str() {
            "content-length" | "transfer-encoding" | "upgrade" | "authorization" => return None,
            "connection" | "keep-alive" => {}
            _ => {
                out.push_str(line);
                out.push_str("\r\n");
            }
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    Some(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_status_request_without_a_body_is_relayed_and_it_closes_after_its_answer() {
        let relayed = status_request(
            b"GET /api/status HTTP/1.1\r\nHost: 172.20.0.1:3000\r\nConnection: keep-alive\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            relayed,
            b"GET /api/status HTTP/1.1\r\nHost: 172.20.0.1:3000\r\nConnection: close\r\n\r\n"
        );
        assert!(status_request(b"GET /api/status?x=1 HTTP/1.0\r\n\r\n").is_some());
        for refused in [
            &b"POST /api/down HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET /api/nodes HTTP/1.1\r\n\r\n",
            b"GET /api/statusx HTTP/1.1\r\n\r\n",
            b"GET /agent HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            b"GET /api/status HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            b"GET /api/status HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            b"GET /api/status HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            // A second request behind the first (pipelined) is not smuggled through.
            b"GET /api/status HTTP/1.1\r\n\r\nPOST /api/down HTTP/1.1\r\n\r\n",
            b"GET /api/status HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET /api/status HTTP/1.1\r\n",
            b"GET /api/status HTTP/2 extra\r\n\r\n",
            b"\xff\xfe\r\n\r\n",
        ] {
            assert!(
                status_request(refused).is_none(),
                "{}",
                String::from_utf8_lossy(refused)
            );
        }
    }

    #[test]
    fn a_node_address_gets_a_few_places_back_when_it_closes() {
        let open: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
        let a: IpAddr = [172, 20, 0, 2].into();
        let held: Vec<_> = (0..PER_PEER)
            .map(|_| Place::take(&open, a).unwrap())
            .collect();
        assert!(Place::take(&open, a).is_none());
        assert!(Place::take(&open, [172, 20, 0, 3].into()).is_some());
        drop(held);
        assert!(open.lock().unwrap().is_empty());
        assert!(Place::take(&open, a).is_some());
    }
}
