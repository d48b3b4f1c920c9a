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
//!
//! Multicast (a destination in 224.0.0.0/4) goes by the group's entry instead
//! ([`topology::multicast`]): an IGMP report from the node's own kernel states its programs'
//! memberships ([`Hop::Membership`]); a packet of a group the node takes part in, from the
//! group's source, is copied to the node's children on the tree its flow takes
//! ([`Hop::Copies`]), and up the TUN device when it arrived from a link and the node is a
//! member. A copy that arrives from any neighbour but the node's parent on that tree is
//! dropped (a stray while trees change: never a second copy), and a multicast TTL that runs out
//! is a silent drop (no ICMP errors about multicast, RFC 1122).

use std::collections::HashMap;
use std::net::Ipv4Addr;

use topology::multicast::GroupEntry;
use topology::routing::RouteTable;

use crate::packet::{IGMP, IcmpError, Ipv4Packet, icmp_error, igmp_memberships};

/// A buffer holding an IPv4 packet, perhaps behind a header of its own (a TUN frame).
pub trait IpBuffer: Sized {
    fn ip(&self) -> &[u8];
    fn ip_mut(&mut self) -> &mut [u8];
    /// A new buffer for a packet the forwarder made (an ICMP error).
    fn from_ip(ip: &[u8]) -> Self;
    /// A copy of the whole buffer (a multicast packet for one more neighbour).
    fn duplicate(&self) -> Self;
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
    fn duplicate(&self) -> Self {
        self.clone()
    }
}

/// Where a packet goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hop<P> {
    /// Up this node's TUN device.
    Tun(P),
    /// Over the link to this neighbour.
    Link(u32, P),
    /// A multicast packet: up the TUN device (a member), and a copy to each of these
    /// neighbours (the node's children on the packet's tree).
    Copies {
        tun: Option<P>,
        links: Vec<(u32, P)>,
    },
    /// An IGMP report from the node's kernel: its programs joined (true) or left these groups.
    Membership(Vec<(Ipv4Addr, bool)>),
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
    /// A multicast packet of a group this node takes no part in, or one no member waits for
    /// behind it.
    NoGroup,
    /// A multicast packet not from its group's source, or from a neighbour that is not this
    /// node's parent on the packet's tree.
    OffTree,
    /// A multicast packet whose TTL ran out.
    MulticastTtl,
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
    groups: HashMap<Ipv4Addr, GroupEntry>,
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
            groups: HashMap::new(),
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

    /// Sets these groups' entries (each replacing the group's previous one) and forgets the
    /// groups `removed`.
    pub fn set_groups(&mut self, set: Vec<GroupEntry>, removed: &[Ipv4Addr]) {
        for g in removed {
            self.groups.remove(g);
        }
        for e in set {
            self.groups.insert(e.group, e);
        }
    }

    /// The entry of a group, if this node takes part in it.
    pub fn group(&self, group: Ipv4Addr) -> Option<&GroupEntry> {
        self.groups.get(&group)
    }

    /// Where `packet` goes: it came from the link to neighbour `from` (else from this node's
    /// TUN device); `has_link(n)` says whether the link to neighbour `n` is up (for unicast it
    /// is asked about the chosen next hop only, so a caller may look the link up there and
    /// keep it; multicast copies are made for every child, whose links the caller looks up).
    pub fn forward<P: IpBuffer>(
        &self,
        mut packet: P,
        from: Option<u32>,
        mut has_link: impl FnMut(u32) -> bool,
    ) -> Hop<P> {
        if Ipv4Packet::new_checked(packet.ip()).is_ok_and(|p| p.dst_addr().is_multicast()) {
            return self.forward_multicast(packet, from);
        }
        let mut from_link = from.is_some();
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

    fn forward_multicast<P: IpBuffer>(&self, mut packet: P, from: Option<u32>) -> Hop<P> {
        let Ok(mut ip) = Ipv4Packet::new_checked(packet.ip_mut()) else {
            return Hop::Drop(DropReason::NotIpv4);
        };
        if from.is_none() && ip.protocol() == IGMP {
            return Hop::Membership(igmp_memberships(ip.payload()));
        }
        let Some(entry) = self.groups.get(&ip.dst_addr()) else {
            return Hop::Drop(DropReason::NoGroup);
        };
        if self.overlay.node_of(ip.src_addr()) != Some(entry.source) {
            return Hop::Drop(DropReason::OffTree);
        }
        let Some(tree) = entry.tree_for(ip.flow_hash()) else {
            return Hop::Drop(DropReason::NoGroup);
        };
        match from {
            Some(peer) => {
                if tree.parent != Some(peer) {
                    return Hop::Drop(DropReason::OffTree);
                }
                if ip.ttl() <= 1 {
                    return Hop::Drop(DropReason::MulticastTtl);
                }
                ip.decrement_ttl();
            }
            // The kernel's default multicast TTL is 1: such a packet would end at the first
            // hop, so it ends here (and the dataplane says why, once).
            None if ip.ttl() <= 1 => return Hop::Drop(DropReason::MulticastTtl),
            None => {}
        }
        let up = from.is_some() && entry.member;
        if !up && tree.children.is_empty() {
            return Hop::Drop(DropReason::NoGroup);
        }
        // The last copy takes the packet itself.
        let mut links = Vec::with_capacity(tree.children.len());
        if let Some((&last, rest)) = tree.children.split_last() {
            for &child in rest {
                links.push((child, packet.duplicate()));
            }
            let tun = up.then(|| packet.duplicate());
            links.push((last, packet));
            return Hop::Copies { tun, links };
        }
        Hop::Copies {
            tun: Some(packet),
            links,
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
        let Hop::Link(1, p) = f.forward(packet(3, 1, 64, TCP, (5, 6)), Some(1), all_up) else {
            panic!("node 2 sends 3 → 1 to node 1");
        };
        assert_eq!(p[8], 63);
        assert_eq!(checksum(&p[..20]), 0);
        // The node's own packets keep their TTL.
        let Hop::Link(1, p) = f.forward(packet(2, 1, 64, TCP, (5, 6)), None, all_up) else {
            panic!()
        };
        assert_eq!(p[8], 64);
    }

    #[test]
    fn packets_for_the_node_go_up_its_tun_only_from_a_link() {
        let f = node2();
        assert!(matches!(
            f.forward(packet(1, 2, 64, UDP, (1, 2)), Some(1), all_up),
            Hop::Tun(_)
        ));
        assert_eq!(
            f.forward(packet(2, 2, 64, UDP, (1, 2)), None, all_up),
            Hop::Drop(DropReason::Looped)
        );
    }

    #[test]
    fn an_expired_ttl_is_answered_towards_the_sender() {
        let f = node2();
        // From 1 via a link with TTL 1: time exceeded from node 2, routed back to node 1.
        let Hop::Link(1, icmp) = f.forward(packet(1, 3, 1, UDP, (1, 2)), Some(1), all_up) else {
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
        let Hop::Link(1, icmp) = f.forward(packet(1, 7, 64, UDP, (1, 2)), Some(1), all_up) else {
            panic!()
        };
        let v = Ipv4Packet::new_checked(&icmp[..]).unwrap();
        assert_eq!((v.src_addr(), v.payload()[0]), (addr(2), 3));
        // Its own packet to 1 with the link to 1 down: the error comes up its own TUN device
        // from the overlay's reserved address.
        let Hop::Tun(icmp) = f.forward(packet(2, 1, 64, UDP, (1, 2)), None, |n| n != 1) else {
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
            f.forward(err, None, all_up),
            Hop::Drop(DropReason::Unroutable)
        );
    }

    #[test]
    fn equal_cost_hops_are_chosen_per_flow_the_same_every_time() {
        let f = node2();
        let hop = |sport| match f.forward(packet(1, 3, 64, TCP, (sport, 80)), Some(1), all_up) {
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
                f.forward(packet(1, 3, 64, TCP, (sport, 80)), Some(1), all_up),
                Hop::Link(4, _)
            ));
        }
        let others: Vec<u32> = (1000..1064)
            .filter_map(
                |s| match f.forward(packet(2, 3, 64, TCP, (s, 80)), None, all_up) {
                    Hop::Link(n, _) => Some(n),
                    _ => None,
                },
            )
            .collect();
        assert!(others.contains(&3), "other sources use the table");
    }

    const GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 0, 1);

    /// A UDP packet from node `src` to the group.
    fn to_group(src: u8, ttl: u8, sport: u16) -> Vec<u8> {
        let mut p = packet(src, 0, ttl, UDP, (sport, 5000));
        p[16..20].copy_from_slice(&GROUP.octets());
        p[10..12].copy_from_slice(&[0, 0]);
        let c = checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p
    }

    /// The group's entry at a node, with one tree.
    fn entry(member: bool, parent: Option<u32>, children: Vec<u32>) -> GroupEntry {
        GroupEntry {
            group: GROUP,
            source: 1,
            member,
            trees: vec![topology::multicast::TreeHop {
                tree_id: 0,
                weight: 1.0,
                parent,
                children,
            }],
        }
    }

    /// Node 2 on group 239.255.0.1 of source 1: a member, copying to 3 and 4.
    fn member2() -> Forwarder {
        let mut f = node2();
        f.set_groups(vec![entry(true, Some(1), vec![3, 4])], &[]);
        f
    }

    #[test]
    fn a_group_packet_is_copied_to_the_children_and_up_to_a_member_once() {
        let f = member2();
        let Hop::Copies {
            tun: Some(up),
            links,
        } = f.forward(to_group(1, 8, 1000), Some(1), all_up)
        else {
            panic!("a member with two children");
        };
        assert_eq!(links.iter().map(|l| l.0).collect::<Vec<_>>(), vec![3, 4]);
        for p in links.iter().map(|l| &l.1).chain([&up]) {
            assert_eq!(p[8], 7, "one hop less");
            assert_eq!(checksum(&p[..20]), 0);
        }
        // From a neighbour that is not its parent on the tree, from another source, with its
        // TTL run out, or for a group it is not in: dropped, silently.
        assert_eq!(
            f.forward(to_group(1, 8, 1000), Some(3), all_up),
            Hop::Drop(DropReason::OffTree)
        );
        assert_eq!(
            f.forward(to_group(5, 8, 1000), Some(1), all_up),
            Hop::Drop(DropReason::OffTree)
        );
        assert_eq!(
            f.forward(to_group(1, 1, 1000), Some(1), all_up),
            Hop::Drop(DropReason::MulticastTtl)
        );
        let mut other = to_group(1, 8, 1000);
        other[19] = 2;
        assert_eq!(
            f.forward(other, Some(1), all_up),
            Hop::Drop(DropReason::NoGroup)
        );
    }

    #[test]
    fn the_source_sends_to_its_children_only_and_its_kernels_igmp_reports_are_memberships() {
        let mut f = Forwarder::new(1, addr(1), 16);
        f.set_groups(vec![entry(true, None, vec![2])], &[]);
        // Its own kernel loops a member's copy back itself: nothing goes up the TUN device.
        let Hop::Copies { tun: None, links } = f.forward(to_group(1, 8, 1), None, all_up) else {
            panic!()
        };
        // Sent with the kernel's default multicast TTL of 1, it would end at the first hop.
        assert_eq!(
            f.forward(to_group(1, 1, 1), None, all_up),
            Hop::Drop(DropReason::MulticastTtl)
        );
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].1[8], 8, "the node's own packet keeps its TTL");
        // An IGMPv2 report for the group, from the node's kernel (with the router alert option).
        let mut igmp = vec![0x46, 0xc0, 0, 32, 0, 0, 0, 0, 1, IGMP, 0, 0];
        igmp.extend([10, 0, 0, 1, 239, 255, 0, 1, 0x94, 4, 0, 0]);
        igmp.extend([0x16, 0, 0, 0, 239, 255, 0, 1]);
        assert_eq!(
            f.forward(igmp.clone(), None, all_up),
            Hop::Membership(vec![(GROUP, true)])
        );
        // The same from a link is not this node's kernel speaking: no group, dropped.
        assert_eq!(
            f.forward(igmp, Some(2), all_up),
            Hop::Drop(DropReason::OffTree)
        );
        f.set_groups(Vec::new(), &[GROUP]);
        assert_eq!(
            f.forward(to_group(1, 8, 1), None, all_up),
            Hop::Drop(DropReason::NoGroup)
        );
    }

    #[test]
    fn nothing_leaves_the_overlay_and_garbage_is_dropped() {
        let f = node2();
        let mut outside = packet(1, 3, 64, UDP, (1, 2));
        outside[16..20].copy_from_slice(&[192, 168, 0, 3]);
        assert_eq!(
            f.forward(outside, Some(1), all_up),
            Hop::Drop(DropReason::OutsideOverlay)
        );
        assert_eq!(
            f.forward(vec![0x60; 40], None, all_up),
            Hop::Drop(DropReason::NotIpv4)
        );
        assert_eq!(
            f.forward(vec![0x45; 7], None, all_up),
            Hop::Drop(DropReason::NotIpv4)
        );
    }
}
