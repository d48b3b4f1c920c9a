//! Views of the few headers the forwarder reads, over a buffer it does not copy: IPv4
//! ([`Ipv4Packet`]), the first four bytes of TCP and UDP (ports, for the flow hash), and the
//! ICMP errors it sends ([`icmp_error`]).
//!
//! Panic rules: [`Ipv4Packet::new_checked`] checks the version, that the header length is at
//! least 20 bytes and that the buffer holds the whole header. After that every accessor is in
//! bounds and none panics; the payload is whatever follows the header in the buffer (a TSO
//! segment's buffer can be longer than one packet). Nothing here trusts the total-length field.

use std::net::Ipv4Addr;

pub const ICMP: u8 = 1;
pub const IGMP: u8 = 2;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;

/// Why a buffer is not an IPv4 packet the forwarder can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("shorter than an IPv4 header")]
    Truncated,
    #[error("not IPv4")]
    NotIpv4,
    #[error("header length field below 20 bytes or beyond the buffer")]
    BadHeaderLength,
}

/// An IPv4 packet in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

mod field {
    use std::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
    pub const MIN_HEADER: usize = 20;
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// A view of `buffer`, checked so that no accessor can go out of bounds.
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let b = buffer.as_ref();
        if b.len() < field::MIN_HEADER {
            return Err(Malformed::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(Malformed::NotIpv4);
        }
        let header_len = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        if header_len < field::MIN_HEADER || b.len() < header_len {
            return Err(Malformed::BadHeaderLength);
        }
        Ok(Ipv4Packet { buffer })
    }

    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn header_len(&self) -> usize {
        usize::from(self.bytes()[field::VER_IHL] & 0x0f) * 4
    }

    /// The DiffServ code point (the upper six bits of the TOS byte): a flow's weight under
    /// weighted round robin.
    pub fn dscp(&self) -> u8 {
        self.bytes()[1] >> 2
    }

    /// The weight of this packet's flow under weighted round robin: its DSCP, at least 1.
    pub fn weight(&self) -> u32 {
        u32::from(self.dscp()).max(1)
    }

    pub fn ttl(&self) -> u8 {
        self.bytes()[field::TTL]
    }

    pub fn protocol(&self) -> u8 {
        self.bytes()[field::PROTOCOL]
    }

    pub fn src_addr(&self) -> Ipv4Addr {
        let b = &self.bytes()[field::SRC];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = &self.bytes()[field::DST];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// The header and nothing after it.
    pub fn header(&self) -> &[u8] {
        &self.bytes()[..self.header_len()]
    }

    /// What follows the header in the buffer.
    pub fn payload(&self) -> &[u8] {
        &self.bytes()[self.header_len()..]
    }

    /// Source and destination ports of TCP and UDP, when the buffer holds them.
    pub fn ports(&self) -> Option<(u16, u16)> {
        let p = self.payload();
        (matches!(self.protocol(), TCP | UDP) && p.len() >= 4).then(|| {
            (
                u16::from_be_bytes([p[0], p[1]]),
                u16::from_be_bytes([p[2], p[3]]),
            )
        })
    }

    /// The ICMP type, for ICMP packets that hold one.
    pub fn icmp_type(&self) -> Option<u8> {
        (self.protocol() == ICMP)
            .then(|| self.payload().first().copied())
            .flatten()
    }

    /// A hash of the flow (addresses, protocol, ports): the same at every hop, so a flow
    /// keeps one path through equal-cost routes.
    pub fn flow_hash(&self) -> u64 {
        topology::routing::flow_hash(
            self.src_addr(),
            self.dst_addr(),
            self.protocol(),
            self.ports(),
        )
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Decrements the TTL, fixing the header checksum incrementally (RFC 1624). A TTL of 0
    /// stays 0.
    pub fn decrement_ttl(&mut self) {
        let b = self.buffer.as_mut();
        if b[field::TTL] == 0 {
            return;
        }
        b[field::TTL] -= 1;
        // The TTL is the high byte of the 16-bit word at offset 8: the word drops by 0x0100.
        let sum = u32::from(u16::from_be_bytes([b[10], b[11]])) + 0x0100;
        let sum = (sum & 0xffff) + (sum >> 16);
        b[field::CHECKSUM].copy_from_slice(&(sum as u16).to_be_bytes());
    }

    /// Gives back a decrement (a packet handed to the node's kernel, which decrements it
    /// again as it forwards); the header checksum is computed afresh.
    pub fn increment_ttl(&mut self) {
        let header_len = self.header_len();
        let b = self.buffer.as_mut();
        b[field::TTL] = b[field::TTL].saturating_add(1);
        b[field::CHECKSUM].copy_from_slice(&[0, 0]);
        let sum = checksum(&b[..header_len]);
        b[field::CHECKSUM].copy_from_slice(&sum.to_be_bytes());
    }
}

/// The group memberships an IGMP report (the payload of an IGMP packet) states: `(group,
/// joined)` for each group it names. A node's kernel sends these on its TUN device when a
/// program joins or leaves a group on it: version 2 reports and leaves (RFC 2236) and
/// version 3 reports (RFC 3376), where a record of mode exclude (any source) or with sources
/// to take joins and an include record with no sources leaves. Queries, and anything cut
/// short, state nothing.
pub fn igmp_memberships(igmp: &[u8]) -> Vec<(Ipv4Addr, bool)> {
    let addr = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]);
    let mut out = Vec::new();
    match igmp.first() {
        // v1 and v2 membership reports, v2 leave
        Some(0x12 | 0x16) if igmp.len() >= 8 => out.push((addr(&igmp[4..8]), true)),
        Some(0x17) if igmp.len() >= 8 => out.push((addr(&igmp[4..8]), false)),
        Some(0x22) if igmp.len() >= 8 => {
            let records = u16::from_be_bytes([igmp[6], igmp[7]]);
            let mut at = 8;
            for _ in 0..records {
                let Some(r) = igmp.get(at..at + 8) else { break };
                let (kind, aux_words) = (r[0], usize::from(r[1]));
                let sources = usize::from(u16::from_be_bytes([r[2], r[3]]));
                let joined = match kind {
                    // MODE_IS_EXCLUDE, CHANGE_TO_EXCLUDE: every source but some
                    2 | 4 => true,
                    // MODE_IS_INCLUDE, CHANGE_TO_INCLUDE, ALLOW_NEW: these sources, or none
                    1 | 3 | 5 => sources > 0,
                    // BLOCK_OLD: sources given up
                    6 => false,
                    _ => {
                        at += 8 + sources * 4 + aux_words * 4;
                        continue;
                    }
                };
                out.push((addr(&r[4..8]), joined));
                at += 8 + sources * 4 + aux_words * 4;
            }
        }
        _ => {}
    }
    out
}

/// The Internet checksum of `data`.
pub fn checksum(data: &[u8]) -> u16 {
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
/// must not get one: ICMP errors themselves (RFC 1122).
pub fn icmp_error<T: AsRef<[u8]>>(
    from: Ipv4Addr,
    original: &Ipv4Packet<T>,
    kind: IcmpError,
) -> Option<Vec<u8>> {
    // Echo requests and replies may be answered; other ICMP messages are errors or queries.
    if original.protocol() == ICMP && !matches!(original.icmp_type(), Some(0 | 8)) {
        return None;
    }
    let whole = original.bytes();
    let quote = &whole[..(original.header_len() + 8).min(whole.len())];
    let (icmp_type, code) = match kind {
        IcmpError::TimeExceeded => (11u8, 0u8),
        IcmpError::HostUnreachable => (3, 1),
    };
    let total = 20 + 8 + quote.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[field::TTL] = 64;
    p[field::PROTOCOL] = ICMP;
    p[field::SRC].copy_from_slice(&from.octets());
    p[field::DST].copy_from_slice(&original.src_addr().octets());
    let c = checksum(&p[..20]);
    p[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    p[20] = icmp_type;
    p[21] = code;
    p[28..].copy_from_slice(quote);
    let c = checksum(&p[20..]);
    p[22..24].copy_from_slice(&c.to_be_bytes());
    Some(p)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An IPv4 packet from 10.0.0.`src` to 10.0.0.`dst` with 8 bytes of transport header.
    pub fn packet(src: u8, dst: u8, ttl: u8, protocol: u8, ports: (u16, u16)) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&28u16.to_be_bytes());
        p[8] = ttl;
        p[9] = protocol;
        p[12..16].copy_from_slice(&[10, 0, 0, src]);
        p[16..20].copy_from_slice(&[10, 0, 0, dst]);
        let c = checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p[20..22].copy_from_slice(&ports.0.to_be_bytes());
        p[22..24].copy_from_slice(&ports.1.to_be_bytes());
        p
    }

    #[test]
    fn igmp_reports_say_who_joins_and_who_leaves() {
        let g1 = Ipv4Addr::new(239, 255, 0, 1);
        let g2 = Ipv4Addr::new(239, 255, 0, 2);
        // Version 3: join g1 (to exclude {}), leave g2 (to include {}), join g1 from one
        // source (allow {10.0.0.1}), a record of an unknown kind skipped with its sources.
        let mut v3 = vec![0x22, 0, 0, 0, 0, 0, 0, 4];
        v3.extend([4, 0, 0, 0, 239, 255, 0, 1]);
        v3.extend([3, 0, 0, 0, 239, 255, 0, 2]);
        v3.extend([5, 0, 0, 1, 239, 255, 0, 1, 10, 0, 0, 1]);
        v3.extend([9, 1, 0, 1, 239, 255, 0, 9, 10, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(
            igmp_memberships(&v3),
            vec![(g1, true), (g2, false), (g1, true)]
        );
        // Version 2: a report joins, a leave leaves; a query states nothing.
        assert_eq!(
            igmp_memberships(&[0x16, 0, 0, 0, 239, 255, 0, 2]),
            vec![(g2, true)]
        );
        assert_eq!(
            igmp_memberships(&[0x17, 0, 0, 0, 239, 255, 0, 2]),
            vec![(g2, false)]
        );
        assert!(igmp_memberships(&[0x11, 0, 0, 0, 0, 0, 0, 0]).is_empty());
        // Cut short anywhere: what was whole, and no panic.
        for n in 0..v3.len() {
            let got = igmp_memberships(&v3[..n]);
            assert!(got.len() <= 3);
        }
        let mut lying = v3.clone();
        lying[7] = 200;
        assert_eq!(igmp_memberships(&lying).len(), 3);
    }

    #[test]
    fn reads_fields_and_refuses_garbage_without_panicking() {
        let p = packet(1, 4, 64, UDP, (0x1234, 80));
        let v = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert_eq!(
            (v.src_addr(), v.dst_addr(), v.ttl(), v.protocol()),
            (
                Ipv4Addr::new(10, 0, 0, 1),
                Ipv4Addr::new(10, 0, 0, 4),
                64,
                UDP
            )
        );
        assert_eq!(v.ports(), Some((0x1234, 80)));
        assert_eq!(
            Ipv4Packet::new_checked(&p[..10]).unwrap_err(),
            Malformed::Truncated
        );
        let mut v6 = p.clone();
        v6[0] = 0x60;
        assert_eq!(
            Ipv4Packet::new_checked(&v6[..]).unwrap_err(),
            Malformed::NotIpv4
        );
        // A header length beyond the buffer, and one below the minimum.
        for ihl in [0x4f, 0x44] {
            let mut bad = p.clone();
            bad[0] = ihl;
            assert_eq!(
                Ipv4Packet::new_checked(&bad[..]).unwrap_err(),
                Malformed::BadHeaderLength
            );
        }
        // Every prefix of a packet is either refused or readable in full.
        for n in 0..p.len() {
            if let Ok(v) = Ipv4Packet::new_checked(&p[..n]) {
                let _ = (v.ports(), v.flow_hash(), v.icmp_type(), v.payload());
            }
        }
        // No ports without a transport header in the buffer.
        assert_eq!(Ipv4Packet::new_checked(&p[..22]).unwrap().ports(), None);
    }

    #[test]
    fn ttl_decrement_keeps_the_checksum_valid() {
        let mut p = Ipv4Packet::new_checked(packet(1, 4, 64, TCP, (1, 2))).unwrap();
        for ttl in (0..64).rev() {
            p.decrement_ttl();
            assert_eq!(p.ttl(), ttl);
            assert_eq!(checksum(p.header()), 0, "header checksum must verify");
        }
        p.decrement_ttl();
        assert_eq!(p.ttl(), 0);
        for ttl in 1..=64 {
            p.increment_ttl();
            assert_eq!(p.ttl(), ttl);
            assert_eq!(checksum(p.header()), 0, "header checksum must verify");
        }
        assert_eq!(p.into_inner(), packet(1, 4, 64, TCP, (1, 2)));
    }

    #[test]
    fn flow_hash_depends_on_ports() {
        let a = packet(1, 4, 64, TCP, (1000, 80));
        let b = packet(1, 4, 64, TCP, (1001, 80));
        let hash = |p: &[u8]| Ipv4Packet::new_checked(p).unwrap().flow_hash();
        assert_eq!(hash(&a), hash(&a.clone()));
        assert_ne!(hash(&a), hash(&b));
    }

    #[test]
    fn icmp_errors_are_well_formed_and_never_about_errors() {
        let p = packet(1, 4, 1, UDP, (1, 2));
        let view = Ipv4Packet::new_checked(&p[..]).unwrap();
        let e = icmp_error(Ipv4Addr::new(10, 0, 0, 2), &view, IcmpError::TimeExceeded).unwrap();
        let i = Ipv4Packet::new_checked(&e[..]).unwrap();
        assert_eq!(
            (i.src_addr(), i.dst_addr(), i.protocol()),
            (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1), ICMP)
        );
        assert_eq!(checksum(&e[..20]), 0);
        assert_eq!(checksum(&e[20..]), 0);
        assert_eq!((e[20], e[21]), (11, 0));
        assert_eq!(&e[28..], &p[..28], "quotes the header and 8 bytes");
        // An ICMP error about an ICMP error is never sent.
        assert_eq!(
            icmp_error(Ipv4Addr::new(10, 0, 0, 3), &i, IcmpError::HostUnreachable),
            None
        );
    }
}
