//! Lossless flows (`transport = "lossless_unicast"`): UDP sockets in the nodes' namespaces
//! driving the `lossless` crate's sender and receiver, so the datagrams cross the emulated
//! network like any application's. A node takes them on its overlay address at the flow port
//! (UDP, beside the TCP flows' listener); the receiver answers each sender at the address its
//! datagrams come from.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use dataplane::AbortOnDrop;
use dataplane::sockets::SocketFactory;
use proto::{FlowLen, FlowOrder, TcpStats};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::session::FlowEvent;

/// Socket buffers (the kernel caps them at its maximum): a round trip of datagrams at a
/// few hundred Mbit/s.
const SOCKET_BUFFER: usize = 8 << 20;
/// A sender that hears nothing from its receiver for this long gives up.
const SILENCE: Duration = Duration::from_secs(30);
/// A finished flow's receiver still answers late datagrams for this long (the sender may
/// have missed the word that it is done).
const LINGER: Duration = Duration::from_secs(10);

async fn udp_socket(
    factory: &SocketFactory,
    netns: hostnet::netns::NsHandle,
    addr: SocketAddrV4,
) -> io::Result<UdpSocket> {
    UdpSocket::from_std(factory.udp(netns, addr, SOCKET_BUFFER, false).await?)
}

fn unix_ns() -> u64 {
    dataplane::unix_ns()
}

struct Incoming {
    receiver: lossless::Receiver,
    first_ns: u64,
    done_at: Option<Instant>,
}

/// Takes lossless flows on `addr` (UDP) inside the node's namespace; each one received is
/// reported.
pub async fn listen(
    factory: &SocketFactory,
    netns: hostnet::netns::NsHandle,
    addr: SocketAddrV4,
    events: mpsc::UnboundedSender<FlowEvent>,
) -> io::Result<AbortOnDrop> {
    let socket = udp_socket(factory, netns, addr).await?;
    let task = tokio::spawn(async move {
        let mut flows: HashMap<(SocketAddr, u64), Incoming> = HashMap::new();
        let mut buf = vec![0u8; 65_536];
        loop {
            let wake = flows
                .values()
                .filter_map(|f| f.receiver.poll_timeout())
                .min();
            let got = tokio::select! {
                r = socket.recv_from(&mut buf) => r.ok(),
                () = sleep_until(wake) => None,
            };
            let now = Instant::now();
            if let Some((n, from)) = got {
                let datagram = &buf[..n];
                let flow = match lossless::Packet::decode(datagram) {
                    Ok(lossless::Packet::Data { header, .. }) => header.flow,
                    _ => continue,
                };
                let entry = match flows.entry((from, flow)) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        let Some(receiver) = lossless::Receiver::for_datagram(datagram) else {
                            continue;
                        };
                        v.insert(Incoming {
                            receiver,
                            first_ns: unix_ns(),
                            done_at: None,
                        })
                    }
                };
                entry.receiver.handle_datagram(now, datagram);
                if entry.done_at.is_none() && entry.receiver.is_done() {
                    entry.done_at = Some(now);
                    let _ = events.send(received(&entry.receiver, entry.first_ns, unix_ns()));
                }
            }
            for ((peer, _), f) in flows.iter_mut() {
                while let Some(feedback) = f.receiver.poll_transmit(now) {
                    // A full socket buffer is a lost datagram, which the protocol repairs.
                    let _ = socket.try_send_to(&feedback, *peer);
                }
            }
            flows.retain(|_, f| f.done_at.is_none_or(|t| now.duration_since(t) < LINGER));
        }
    });
    Ok(AbortOnDrop(task.abort_handle()))
}

/// Sends one lossless flow and reports it; an error ends it as failed.
pub async fn send(
    factory: &SocketFactory,
    netns: hostnet::netns::NsHandle,
    order: FlowOrder,
    events: &mpsc::UnboundedSender<FlowEvent>,
) -> io::Result<()> {
    let (config, total) = plan(&order).map_err(io::Error::other)?;
    let socket = udp_socket(
        factory,
        netns,
        SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0),
    )
    .await?;
    let dst = SocketAddr::V4(SocketAddrV4::new(order.dst_addr, order.port));
    socket.connect(dst).await?;
    let start_ns = unix_ns();
    let _ = events.send(FlowEvent::Started {
        id: order.id,
        local_port: socket.local_addr()?.port(),
        start_ns,
    });
    let mut sender = lossless::Sender::new(order.id, total, config, Instant::now());
    let mut heard = Instant::now();
    let mut buf = vec![0u8; 65_536];
    while !sender.is_done() {
        let now = Instant::now();
        while let Some(datagram) = sender.poll_transmit(now) {
            // A full socket buffer or an unreachable receiver (for now) is a lost datagram.
            let _ = socket.send(&datagram).await;
        }
        if now.duration_since(heard) > SILENCE {
            return Err(io::Error::other(format!(
                "node {} at {dst} did not answer for {} s",
                order.dst,
                SILENCE.as_secs()
            )));
        }
        // Never sooner than half a millisecond: the timer's granularity, and no spinning.
        let wake = sender.poll_timeout().map(|t| {
            t.clamp(
                now + Duration::from_micros(500),
                now + Duration::from_secs(1),
            )
        });
        tokio::select! {
            r = socket.recv(&mut buf) => {
                if let Ok(n) = r {
                    heard = Instant::now();
                    sender.handle_datagram(heard, &buf[..n]);
                }
            }
            () = sleep_until(wake) => {}
        }
    }
    let _ = events.send(sent(order.id, total, &sender, unix_ns()));
    Ok(())
}

/// What a lossless flow's sender is given by its order: the configuration and the bytes to
/// send; or why the order can't be carried out.
pub fn plan(order: &FlowOrder) -> Result<(lossless::Config, u64), String> {
    let rate = order
        .spec
        .flow_rate
        .ok_or("a lossless flow sends at its rate, and this one has none")?;
    let total = match order.spec.flow_len {
        FlowLen::Bytes(n) => n,
        FlowLen::Duration(secs) => (rate as f64 * secs) as u64,
    }
    .max(1);
    let config = lossless::Config {
        chunk_size: order.lossless.chunk_size,
        fec: order.lossless.fec_symbols_per_block.map(|k| lossless::Fec {
            symbols_per_block: k,
        }),
        bytes_per_sec: rate,
    };
    config.check()?;
    Ok((config, total))
}

/// The source's report of a lossless flow it has finished sending.
pub fn sent(id: u64, total: u64, sender: &lossless::Sender, end_ns: u64) -> FlowEvent {
    let stats = sender.stats();
    FlowEvent::Sent {
        id,
        bytes: total,
        end_ns,
        // What TCP's figures would say: datagrams sent again (or extra repair symbols), the
        // smoothed round trip; no congestion window.
        tcp: TcpStats {
            retransmits: stats.repairs,
            srtt_us: stats.srtt.map_or(0, |d| d.as_micros() as u32),
            cwnd: 0,
        },
    }
}

/// The destination's report of a lossless flow it has received whole (or found corrupt).
pub fn received(receiver: &lossless::Receiver, first_ns: u64, last_ns: u64) -> FlowEvent {
    let stats = receiver.stats();
    if stats.corrupt_blocks > 0 {
        FlowEvent::Failed {
            id: receiver.flow(),
            reason: format!(
                "{} blocks arrived different from what was sent",
                stats.corrupt_blocks
            ),
        }
    } else {
        FlowEvent::Received {
            id: receiver.flow(),
            bytes: stats.bytes,
            first_ns,
            last_ns,
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_chunk_fills_one_1500_byte_packet_and_no_more() {
        let ip_udp = 28;
        assert_eq!(
            usize::from(proto::DEFAULT_LOSSLESS_CHUNK) + lossless::DATA_OVERHEAD + ip_udp,
            1500
        );
    }
}
