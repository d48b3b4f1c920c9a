//! Generated flows, for real: TCP connections made inside the nodes' namespaces, so they cross
//! the TUN devices, the forwarding and the link emulators like any application's traffic.
//!
//! A destination node listens on its overlay address; each flow opens with its id (8 bytes,
//! big endian), then carries its bytes until the sender shuts its side, and the receiver
//! reports what it counted and closes. The sender sets the flow's congestion control
//! (`TCP_CONGESTION`), pacing (`SO_MAX_PACING_RATE`) and weight (the DSCP, which weighted
//! round robin reads), and once the receiver has closed reports the kernel's figures for the
//! connection (`TCP_INFO`).

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dataplane::AbortOnDrop;
use dataplane::sockets::SocketFactory;
use proto::{FlowLen, FlowOrder, TcpStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::session::FlowEvent;

/// `SO_MAX_PACING_RATE` (the same number on x86 and ARM; libc does not export it).
const SO_MAX_PACING_RATE: libc::c_int = 47;
/// What a sender writes at a time.
const CHUNK: usize = 64 * 1024;
static ZEROS: [u8; CHUNK] = [0; CHUNK];

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Takes flows on `addr` inside the node's namespace, TCP and lossless (UDP); each one
/// received is reported.
pub async fn listen(
    factory: &SocketFactory,
    netns: hostnet::netns::NsHandle,
    addr: SocketAddrV4,
    events: mpsc::UnboundedSender<FlowEvent>,
) -> io::Result<[AbortOnDrop; 2]> {
    let lossless = crate::lossless::listen(factory, netns.clone(), addr, events.clone()).await?;
    let listener = factory.listen(netns, addr).await?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let events = events.clone();
            tokio::spawn(async move {
                if let Some(event) = receive(stream).await {
                    let _ = events.send(event);
                }
            });
        }
    });
    Ok([AbortOnDrop(task.abort_handle()), lossless])
}

/// Counts one flow's bytes until its sender closes.
async fn receive(mut stream: tokio::net::TcpStream) -> Option<FlowEvent> {
    let id = stream.read_u64().await.ok()?;
    let mut buf = vec![0u8; CHUNK];
    let mut bytes = 0u64;
    let mut first_ns = None;
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                first_ns.get_or_insert_with(unix_ns);
                bytes += n as u64;
            }
            Err(e) => {
                return Some(FlowEvent::Failed {
                    id,
                    reason: format!("receiving: {e}"),
                });
            }
        }
    }
    let last_ns = unix_ns();
    drop(stream);
    Some(FlowEvent::Received {
        id,
        bytes,
        first_ns: first_ns.unwrap_or(last_ns),
        last_ns,
    })
}

/// Starts a flow from the node in `netns`; its events are reported as they happen.
pub fn start(
    factory: SocketFactory,
    netns: hostnet::netns::NsHandle,
    order: FlowOrder,
    events: mpsc::UnboundedSender<FlowEvent>,
) -> AbortOnDrop {
    let task = tokio::spawn(async move {
        let id = order.id;
        let sent = match order.spec.transport {
            proto::FlowTransport::Tcp => send(&factory, netns, order, &events).await,
            proto::FlowTransport::LosslessUnicast => {
                crate::lossless::send(&factory, netns, order, &events).await
            }
        };
        if let Err(e) = sent {
            let _ = events.send(FlowEvent::Failed {
                id,
                reason: e.to_string(),
            });
        }
    });
    AbortOnDrop(task.abort_handle())
}

async fn send(
    factory: &SocketFactory,
    netns: hostnet::netns::NsHandle,
    order: FlowOrder,
    events: &mpsc::UnboundedSender<FlowEvent>,
) -> io::Result<()> {
    let spec = order.spec.clone();
    let socket = factory
        .run_in(netns, move || {
            let s = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            s.set_nonblocking(true)?;
            s.set_tcp_nodelay(true)?;
            if let Some(cc) = &spec.cc {
                s.set_tcp_congestion(cc.as_bytes()).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "congestion control {cc:?} is not available ({e}); this kernel has: {}",
                            std::fs::read_to_string(
                                "/proc/sys/net/ipv4/tcp_available_congestion_control"
                            )
                            .unwrap_or_default()
                            .trim()
                        ),
                    )
                })?;
            }
            if let Some(w) = spec.flow_weight {
                s.set_tos_v4(w << 2)?;
            }
            if let Some(rate) = spec.flow_rate {
                set_pacing_rate(&s, rate)?;
            }
            Ok(s)
        })
        .await?;
    let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
    let start_ns = unix_ns();
    let dst = SocketAddr::V4(SocketAddrV4::new(order.dst_addr, order.port));
    let mut stream = socket.connect(dst).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("connecting to node {} at {dst}: {e}", order.dst),
        )
    })?;
    let local_port = stream.local_addr()?.port();
    let _ = events.send(FlowEvent::Started {
        id: order.id,
        local_port,
        start_ns,
    });
    stream.write_u64(order.id).await?;
    let mut sent = 0u64;
    match order.spec.flow_len {
        FlowLen::Bytes(total) => {
            while sent < total {
                let n = (total - sent).min(CHUNK as u64) as usize;
                stream.write_all(&ZEROS[..n]).await?;
                sent += n as u64;
            }
        }
        FlowLen::Duration(secs) => {
            let until = Instant::now() + Duration::from_secs_f64(secs);
            while Instant::now() < until {
                stream.write_all(&ZEROS).await?;
                sent += CHUNK as u64;
            }
        }
    }
    stream.shutdown().await?;
    // The receiver closes once it has read everything.
    let mut rest = [0u8; 64];
    while stream.read(&mut rest).await? > 0 {}
    let end_ns = unix_ns();
    let tcp = tcp_stats(&stream).unwrap_or_default();
    let _ = events.send(FlowEvent::Sent {
        id: order.id,
        bytes: sent,
        end_ns,
        tcp,
    });
    Ok(())
}

fn set_pacing_rate(s: &socket2::Socket, bytes_per_sec: u64) -> io::Result<()> {
    let rate = bytes_per_sec.min(u64::from(u32::MAX)) as u32;
    // SAFETY: setsockopt reads `size_of::<u32>()` bytes from a valid pointer to `rate`, on a
    // socket this function's caller owns.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_MAX_PACING_RATE,
            (&rate as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What the kernel says of a connection: retransmissions, smoothed RTT, congestion window.
fn tcp_stats(stream: &tokio::net::TcpStream) -> io::Result<TcpStats> {
    // SAFETY: tcp_info is plain old data; all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which is that large, and
    // updates `len`; the fd belongs to `stream`, alive for the call.
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpStats {
        retransmits: u64::from(info.tcpi_total_retrans),
        srtt_us: info.tcpi_rtt,
        cwnd: info.tcpi_snd_cwnd,
    })
}
