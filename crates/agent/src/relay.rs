//! Programs in nodes asking a controller on another host (the seeds' `wait_for_topology_ready`
//! asks for its status; node sessions themselves travel inside the agent's session).
//!
//! Programs in nodes reach the controller at their gateway (the bridge's address) and its
//! port. When the controller runs on this host it listens there itself; when it runs
//! elsewhere, the agent listens in its place and relays each connection to the controller's
//! real address. No route or NAT takes node traffic off the host: the agent's own connection
//! does.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};

/// Listens at `gateway:port` and relays every connection to `controller`. None when the
/// address is taken: the controller itself listens on this host.
pub fn start(
    gateway: Ipv4Addr,
    port: u16,
    controller: SocketAddr,
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
        "the controller is at {controller}: relaying what nodes ask of it from {gateway}:{port}"
    );
    Ok(Some(tokio::spawn(async move {
        loop {
            let Ok((mut node, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = node.set_nodelay(true);
                match TcpStream::connect(controller).await {
                    Ok(mut upstream) => {
                        let _ = upstream.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut node, &mut upstream).await;
                    }
                    Err(e) => tracing::warn!("relay to the controller at {controller}: {e}"),
                }
            });
        }
    })))
}
