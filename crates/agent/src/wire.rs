//! The little of IPv4 and ICMP the forwarder needs, on byte slices.
//!
//! Functions take whole packets as read from a TUN device or a link and check lengths before
//! they index; a packet too short or not IPv4 is `None`/ignored, never a panic.

use std::net::Ipv4Addr;

/// Fields of an IPv4 header the forwarder uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Info {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub protocol: u8,
    pub header_len: usize,
}

pub const ICMP: u8 = 1;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;

pub fn parse(packet: &[u8]) -> Option<Ipv4Info> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(packet[0] & 0x0f) * 4;
    if header_len < 20 || packet.len() < header_len {
        return None;
    }
    Some(Ipv4Info {
        src: Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]),
        dst: Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]),
        ttl: packet[8],
        protocol: packet[9],
        header_len,
    })
}

/// A hash of the flow (addresses, protocol, ports): the same at every hop, so a flow keeps one
/// path through equal-cost routes.
pub fn flow_hash(packet: &[u8], info: &Ipv4Info) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(&info.src.octets());
    eat(&info.dst.octets());
    eat(&[info.protocol]);
    if matches!(info.protocol, TCP | UDP) && packet.len() >= info.header_len + 4 {
        eat(&packet[info.header_len..info.header_len + 4]);
    }
    h
}

/// Decrements the TTL in place, fixing the header checksum incrementally (RFC 1624).
pub fn decrement_ttl(packet: &mut [u8]) {
    packet[8] -= 1;
    // The TTL is the high byte of the 16-bit word at offset 8: the word drops by 0x0100.
    let sum = u32::from(u16::from_be_bytes([packet[10], packet[11]])) + 0x0100;
    let sum = (sum & 0xffff) + (sum >> 16);
    packet[10..12].copy_from_slice(&(sum as u16).to_be_bytes());
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Kinds of ICMP errors the forwarder sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpError {
    /// Type 11 code 0: the TTL ran out here (what traceroute listens for).
    TimeExceeded,
    /// Type 3 code 1: no route to the destination.
    HostUnreachable,
}

/// An ICMP error from `from` about `original`, addressed to its sender. None for packets that
/// must not get one (ICMP errors themselves, or too short to quote).
pub fn icmp_error(from: Ipv4Addr, original: &[u8], kind: IcmpError) -> Option<Vec<u8>> {
    let info = parse(original)?;
    if info.protocol == ICMP {
        // Never answer an ICMP error with another (RFC 1122); echo requests may be answered.
        let icmp_type = *original.get(info.header_len)?;
        if !matches!(icmp_type, 0 | 8) {
            return None;
        }
    }
    let quote = &original[..(info.header_len + 8).min(original.len())];
    let (icmp_type, code) = match kind {
        IcmpError::TimeExceeded => (11u8, 0u8),
        IcmpError::HostUnreachable => (3, 1),
    };
    let total = 20 + 8 + quote.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = ICMP;
    p[12..16].copy_from_slice(&from.octets());
    p[16..20].copy_from_slice(&info.src.octets());
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20] = icmp_type;
    p[21] = code;
    p[28..].copy_from_slice(quote);
    let c = checksum(&p[20..]);
    p[22..24].copy_from_slice(&c.to_be_bytes());
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(ttl: u8, protocol: u8) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&28u16.to_be_bytes());
        p[8] = ttl;
        p[9] = protocol;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 4]);
        let c = checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p[20..24].copy_from_slice(&[0x12, 0x34, 0x00, 0x50]);
        p
    }

    #[test]
    fn parses_and_refuses_garbage() {
        let p = packet(64, UDP);
        let i = parse(&p).unwrap();
        assert_eq!(
            (i.src, i.dst, i.ttl, i.protocol),
            (
                Ipv4Addr::new(10, 0, 0, 1),
                Ipv4Addr::new(10, 0, 0, 4),
                64,
                UDP
            )
        );
        assert_eq!(parse(&p[..10]), None);
        let mut v6 = p.clone();
        v6[0] = 0x60;
        assert_eq!(parse(&v6), None);
    }

    #[test]
    fn ttl_decrement_keeps_the_checksum_valid() {
        let mut p = packet(64, TCP);
        for ttl in (1..64).rev() {
            decrement_ttl(&mut p);
            assert_eq!(p[8], ttl);
            assert_eq!(checksum(&p[..20]), 0, "header checksum must verify");
        }
    }

    #[test]
    fn flow_hash_depends_on_ports() {
        let a = packet(64, TCP);
        let mut b = a.clone();
        b[21] = 0x35;
        assert_eq!(
            flow_hash(&a, &parse(&a).unwrap()),
            flow_hash(&a, &parse(&a).unwrap())
        );
        assert_ne!(
            flow_hash(&a, &parse(&a).unwrap()),
            flow_hash(&b, &parse(&b).unwrap())
        );
    }

    #[test]
    fn icmp_errors_are_well_formed_and_never_about_errors() {
        let p = packet(1, UDP);
        let e = icmp_error(Ipv4Addr::new(10, 0, 0, 2), &p, IcmpError::TimeExceeded).unwrap();
        let i = parse(&e).unwrap();
        assert_eq!(
            (i.src, i.dst, i.protocol),
            (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1), ICMP)
        );
        assert_eq!(checksum(&e[..20]), 0);
        assert_eq!(checksum(&e[20..]), 0);
        assert_eq!((e[20], e[21]), (11, 0));
        assert_eq!(&e[28..], &p[..28], "quotes the header and 8 bytes");
        // An ICMP error about an ICMP error is never sent.
        assert_eq!(
            icmp_error(Ipv4Addr::new(10, 0, 0, 3), &e, IcmpError::HostUnreachable),
            None
        );
    }
}
