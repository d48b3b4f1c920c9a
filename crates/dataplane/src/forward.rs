//! The forwarding decision, as a pure function: a node's address, its forwarding table and a
//! packet in; where the packet goes out. No I/O, no clock; the glue in [`crate::Dataplane`]
//! reads packets from the TUN device and links and sends them where [`Forwarder::forward`]
//! says, and the simulator tier does the same with simulated links.
//!
//! The rules, in order:
//! 1. Anything that is not IPv4, or not addressed inside the overlay, is dropped: emulated
//!    traffic never leaves the emulated network.
//! 2. A packet for this node goes up its TUN device when it came from a link (the kernel
//!    delivers a node's packets to itself without us).
//! 3. A packet in transit has its TTL decremented; one that arrives with TTL 1 or less is
//!    answered with ICMP time exceeded (so traceroute shows the emulated path).
//! 4. The next hop is a route pinned for this source and destination, else the shortest-path
//!    table's; among equal-cost next hops the flow hash picks one, the same at every hop.
//! 5. No next hop, or none with a link up, is answered with ICMP host unreachable: from this
//!    node for packets in transit, and for the node's own packets from the overlay's reserved
//!    last address (the kernel drops errors that claim its own address as their source).
//!
//! An ICMP error is itself routed: to the TUN device when it is for this node, else onwards.

use std::net::Ipv4Addr;

use topology::routing::RouteTable;

use crate::packet::{IcmpError, Ipv4Packet, icmp_error};

/// A buffer holding an IPv4 packet, perhaps behind a header of its own (a TUN frame).
pub trait IpBuffer: Sized {
    fn ip(&self) -> &[u8];
    fn ip_mut(&mut self) -> &mut [u8];
    /// A new buffer for a packet the forwarder made (an ICMP error).
    fn from_ip(ip: &[u8]) -> Self;
}

impl IpBuffer for Vec<u8> {
    fn ip(&self) -> &[u8] {
        self
    }
    fn ip_mut(&mut self) -> &mut [u8] {
        self
    }
    fn from_ip(ip: &[u8]) -> Self {
        ip.to_vec()
    }
}

/// Where a packet goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hop<P> {
    /// Up this node's TUN device.
    Tun(P),
    /// Over the link to this neighbour.
    Link(u32, P),
    Drop(DropReason),
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Not an IPv4 packet (the kernel's IPv6 chatter on a TUN device), or malformed.
    NotIpv4,
    /// Addressed outside the overlay.
    OutsideOverlay,
    /// This node's own packet to itself (the kernel delivers those).
    Looped,
    /// No way on, and no ICMP error may be sent about it.
    Unroutable,
}

/// The overlay's addresses: node `n` is `base + n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overlay {
    base: u32,
    mask: u32,
}

impl Overlay {
    /// The overlay that holds `addr`, node `id`'s address, with this prefix length.
    pub fn of(id: u32, addr: Ipv4Addr, prefix_len: u8) -> Overlay {
        let mask = if prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix_len.min(32)))
        };
        Overlay {
            base: u32::from(addr).wrapping_sub(id) & mask,
            mask,
        }
    }

    /// The node an address belongs to, if it is inside the overlay (and not its base).
    pub fn node_of(&self, addr: Ipv4Addr) -> Option<u32> {
        let a = u32::from(addr);
        (a & self.mask == self.base && a != self.base).then(|| a - self.base)
    }

    /// The overlay's last usable address (10.0.255.254 in a /16), which no node has unless
    /// the overlay is full: errors about a node's own packets come from it.
    pub fn network_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from((self.base | !self.mask).wrapping_sub(1))
    }
}

/// One node's forwarding state.
#[derive(Debug, Clone)]
pub struct Forwarder {
    me: u32,
    my_addr: Ipv4Addr,
    overlay: Overlay,
    table: RouteTable,
}

/// One step of the decision.
enum Step {
    Tun,
    Link(u32),
    Reply(Vec<u8>),
    Drop(DropReason),
}

impl Forwarder {
    pub fn new(me: u32, my_addr: Ipv4Addr, prefix_len: u8) -> Forwarder {
        Forwarder {
            me,
            my_addr,
            overlay: Overlay::of(me, my_addr, prefix_len),
            table: RouteTable::default(),
        }
    }

    pub fn node(&self) -> u32 {
        self.me
    }

    pub fn overlay(&self) -> Overlay {
        self.overlay
    }

    /// Replaces the forwarding table.
    pub fn set_table(&mut self, table: RouteTable) {
        self.table = table;
    }

    pub fn table(&self) -> &RouteTable {
        &self.table
    }

    /// Where `packet` goes: it came from a link (else from this node's TUN device);
    /// `has_link(n)` says whether the link to neighbour `n` is up (it is asked about the
    /// chosen next hop only, so a caller may look the link up there and keep it).
    pub fn forward<P: IpBuffer>(
        &self,
        mut packet: P,
        mut from_link: bool,
        mut has_link: impl FnMut(u32) -> bool,
    ) -> Hop<P> {
        loop {
            match self.step(packet.ip_mut(), from_link, &mut has_link) {
                Step::Tun => return Hop::Tun(packet),
                Step::Link(n) => return Hop::Link(n, packet),
                Step::Drop(why) => return Hop::Drop(why),
                Step::Reply(icmp) => {
                    let for_me = Ipv4Packet::new_checked(&icmp[..])
                        .is_ok_and(|p| p.dst_addr() == self.my_addr);
                    packet = P::from_ip(&icmp);
                    if for_me {
                        return Hop::Tun(packet);
                    }
                    // Routed from here like a packet of ours (no TTL decrement). An error is
                    // never answered with another, so this ends.
                    from_link = false;
                }
            }
        }
    }

    fn step(&self, ip: &mut [u8], from_link: bool, has_link: &mut impl FnMut(u32) -> bool) -> Step {
        let Ok(mut packet) = Ipv4Packet::new_checked(ip) else {
            return Step::Drop(DropReason::NotIpv4);
        };
        let Some(dst) = self.overlay.node_of(packet.dst_addr()) else {
            return Step::Drop(DropReason::OutsideOverlay);
        };
        if dst == self.me {
            return if from_link {
                Step::Tun
            } else {
                Step::Drop(DropReason::Looped)
            };
        }
        if from_link {
            if packet.ttl() <= 1 {
                return reply(self.my_addr, &packet, IcmpError::TimeExceeded);
            }
            packet.decrement_ttl();
        }
        let src = self.overlay.node_of(packet.src_addr()).unwrap_or(0);
        match self.table.next_hop_from(src, dst, packet.flow_hash()) {
            Some(hop) if has_link(hop) => Step::Link(hop),
            _ => {
                let from = if from_link {
                    self.my_addr
                } else {
                    self.overlay.network_addr()
                };
                reply(from, &packet, IcmpError::HostUnreachable)
            }
        }
    }
}

fn reply(from: Ipv4Addr, packet: &Ipv4Packet<&mut [u8]>, kind: IcmpError) -> Step {
    match icmp_error(from, packet, kind) {
        Some(icmp) => Step::Reply(icmp),
        None => Step::Drop(DropReason::Unroutable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::tests::packet;
    use crate::packet::{ICMP, TCP, UDP, checksum};
    use topology::routing::{PinnedEntry, RouteEntry};

    fn addr(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, n)
    }

    /// Node 2 of a line 1-2-3 plus a detour 2-4-3: to 1 via 1; to 3 via 3 or 4 (ECMP).
    fn node2() -> Forwarder {
        let mut f = Forwarder::new(2, addr(2), 16);
        f.set_table(RouteTable {
            entries: vec![
                RouteEntry {
                    first: 1,
                    last: 1,
                    next_hops: vec![1],
                },
                RouteEntry {
                    first: 3,
                    last: 3,
                    next_hops: vec![3, 4],
                },
            ],
            pinned: Vec::new(),
        });
        f
    }

    fn all_up(_: u32) -> bool {
        true
    }

    #[test]
    fn transit_packets_go_on_with_one_less_ttl_and_a_valid_checksum() {
        let f = node2();
        let Hop::Link(1, p) = f.forward(packet(3, 1, 64, TCP, (5, 6)), true, all_up) else {
            panic!("node 2 sends 3 → 1 to node 1");
        };
        assert_eq!(p[8], 63);
        assert_eq!(checksum(&p[..20]), 0);
        // The node's own packets keep their TTL.
        let Hop::Link(1, p) = f.forward(packet(2, 1, 64, TCP, (5, 6)), false, all_up) else {
            panic!()
        };
        assert_eq!(p[8], 64);
    }

    #[test]
    fn packets_for_the_node_go_up_its_tun_only_from_a_link() {
        let f = node2();
        assert!(matches!(
            f.forward(packet(1, 2, 64, UDP, (1, 2)), true, all_up),
            Hop::Tun(_)
        ));
        assert_eq!(
            f.forward(packet(2, 2, 64, UDP, (1, 2)), false, all_up),
            Hop::Drop(DropReason::Looped)
        );
    }

    #[test]
    fn an_expired_ttl_is_answered_towards_the_sender() {
        let f = node2();
        // From 1 via a link with TTL 1: time exceeded from node 2, routed back to node 1.
        let Hop::Link(1, icmp) = f.forward(packet(1, 3, 1, UDP, (1, 2)), true, all_up) else {
            panic!("the error goes back towards node 1");
        };
        let v = Ipv4Packet::new_checked(&icmp[..]).unwrap();
        assert_eq!(
            (v.src_addr(), v.dst_addr(), v.protocol()),
            (addr(2), addr(1), ICMP)
        );
        assert_eq!(v.payload()[0], 11);
    }

    #[test]
    fn no_way_on_is_host_unreachable_from_the_right_address() {
        let f = node2();
        // In transit to 7 (no route): node 2 answers in its own name, towards node 1.
        let Hop::Link(1, icmp) = f.forward(packet(1, 7, 64, UDP, (1, 2)), true, all_up) else {
            panic!()
        };
        let v = Ipv4Packet::new_checked(&icmp[..]).unwrap();
        assert_eq!((v.src_addr(), v.payload()[0]), (addr(2), 3));
        // Its own packet to 1 with the link to 1 down: the error comes up its own TUN device
        // from the overlay's reserved address.
        let Hop::Tun(icmp) = f.forward(packet(2, 1, 64, UDP, (1, 2)), false, |n| n != 1) else {
            panic!()
        };
        let v = Ipv4Packet::new_checked(&icmp[..]).unwrap();
        assert_eq!(
            (v.src_addr(), v.dst_addr()),
            (Ipv4Addr::new(10, 0, 255, 254), addr(2))
        );
        // An ICMP error with no way on is dropped, never answered.
        let mut err = icmp.clone();
        err[16..20].copy_from_slice(&[10, 0, 0, 7]);
        assert_eq!(
            f.forward(err, false, all_up),
            Hop::Drop(DropReason::Unroutable)
        );
    }

    #[test]
    fn equal_cost_hops_are_chosen_per_flow_the_same_every_time() {
        let f = node2();
        let hop = |sport| match f.forward(packet(1, 3, 64, TCP, (sport, 80)), true, all_up) {
            Hop::Link(n, _) => n,
            other => panic!("{other:?}"),
        };
        let chosen: Vec<u32> = (1000..1064).map(hop).collect();
        assert_eq!(chosen, (1000..1064).map(hop).collect::<Vec<_>>());
        assert!(chosen.contains(&3) && chosen.contains(&4), "{chosen:?}");
    }

    #[test]
    fn a_pinned_route_wins_for_its_source_only() {
        let mut f = node2();
        let mut table = f.table().clone();
        table.pinned.push(PinnedEntry {
            flow: None,
            src: 1,
            dst: 3,
            next_hops: vec![4],
        });
        f.set_table(table);
        for sport in 1000..1032 {
            assert!(matches!(
                f.forward(packet(1, 3, 64, TCP, (sport, 80)), true, all_up),
                Hop::Link(4, _)
            ));
        }
        let others: Vec<u32> = (1000..1064)
            .filter_map(
                |s| match f.forward(packet(2, 3, 64, TCP, (s, 80)), false, all_up) {
                    Hop::Link(n, _) => Some(n),
                    _ => None,
                },
            )
            .collect();
        assert!(others.contains(&3), "other sources use the table");
    }

    #[test]
    fn nothing_leaves_the_overlay_and_garbage_is_dropped() {
        let f = node2();
        let mut outside = packet(1, 3, 64, UDP, (1, 2));
        outside[16..20].copy_from_slice(&[192, 168, 0, 3]);
        assert_eq!(
            f.forward(outside, true, all_up),
            Hop::Drop(DropReason::OutsideOverlay)
        );
        assert_eq!(
            f.forward(vec![0x60; 40], false, all_up),
            Hop::Drop(DropReason::NotIpv4)
        );
        assert_eq!(
            f.forward(vec![0x45; 7], false, all_up),
            Hop::Drop(DropReason::NotIpv4)
        );
    }
}
