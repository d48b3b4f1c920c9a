//! The packets the simulated host stacks send: ICMP echoes, TCP-numbered stream segments and
//! UDP datagrams (lossless flows).

use std::net::Ipv4Addr;

use dataplane::packet::{ICMP, TCP, UDP, checksum};

/// An IPv4 packet with a valid header checksum.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, protocol: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_tos(src, dst, ttl, 0, protocol, payload)
}

/// The same, with a TOS byte (its upper six bits are the DSCP).
pub fn ipv4_tos(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    tos: u8,
    protocol: u8,
    payload: &[u8],
) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[1] = tos;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = ttl;
    p[9] = protocol;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..].copy_from_slice(payload);
    p
}

/// An ICMP echo request (`kind` 8) or reply (0).
pub fn echo(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, kind: u8, ident: u16, seq: u16) -> Vec<u8> {
    let mut icmp = vec![0u8; 8];
    icmp[0] = kind;
    icmp[4..6].copy_from_slice(&ident.to_be_bytes());
    icmp[6..8].copy_from_slice(&seq.to_be_bytes());
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4(src, dst, ttl, ICMP, &icmp)
}

/// Bytes of the TCP header a stream segment carries (no options).
pub const TCP_HEADER: usize = 20;
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;

/// A TCP segment of `size` bytes in all (IP header included) with `tos` and `flags`, carrying
/// `head` first: the ports, flags and a window, so that the dataplane sees a TCP flow's
/// 5-tuple open and close (the simulator's streams stand for the TCP connections of
/// generated flows; their sequence numbers are not kept).
#[allow(clippy::too_many_arguments)]
pub fn tcp_with(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ports: (u16, u16),
    tos: u8,
    flags: u8,
    head: &[u8],
    size: usize,
) -> Vec<u8> {
    let len = size.max(20 + TCP_HEADER + head.len()) - 20;
    let mut t = vec![0u8; len];
    t[0..2].copy_from_slice(&ports.0.to_be_bytes());
    t[2..4].copy_from_slice(&ports.1.to_be_bytes());
    t[12] = (TCP_HEADER as u8 / 4) << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    t[TCP_HEADER..TCP_HEADER + head.len()].copy_from_slice(head);
    ipv4_tos(src, dst, 64, tos, TCP, &t)
}

/// A UDP datagram carrying `data` (no checksum: optional over IPv4, and nothing on the
/// simulated path corrupts a packet).
pub fn udp(src: Ipv4Addr, dst: Ipv4Addr, ports: (u16, u16), data: &[u8]) -> Vec<u8> {
    let mut u = vec![0u8; 8 + data.len()];
    u[0..2].copy_from_slice(&ports.0.to_be_bytes());
    u[2..4].copy_from_slice(&ports.1.to_be_bytes());
    let len = u.len() as u16;
    u[4..6].copy_from_slice(&len.to_be_bytes());
    u[8..].copy_from_slice(data);
    ipv4(src, dst, 64, UDP, &u)
}
