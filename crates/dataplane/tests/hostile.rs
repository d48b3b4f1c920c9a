//! Hostile link frames: whatever arrives on a TCP link after its length prefix becomes a frame
//! that is measured, cut into packets, metered by flow and forwarded, as the dataplane does
//! with it. Nothing may panic. Fixed seed (see `crates/hostile`).

use std::net::Ipv4Addr;

use dataplane::forward::{Forwarder, Hop};
use dataplane::frame::Frame;
use topology::routing::{RouteEntry, RouteTable};

/// Frames a node sends: a TCP packet, a UDP one, an ICMP echo, and a TSO segment of 4 MSS.
fn seeds() -> Vec<Vec<u8>> {
    let ip = |proto: u8, payload: usize| {
        let total = 20 + if proto == 17 { 8 } else { 20 } + payload;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[8] = 64;
        p[9] = proto;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 3]);
        p[20..24].copy_from_slice(&[0x9c, 0x40, 0x13, 0x89]);
        if proto == 6 {
            p[32] = 0x50;
        }
        p
    };
    let mut seeds: Vec<Vec<u8>> = [ip(6, 100), ip(17, 64), ip(1, 56)]
        .iter()
        .map(|p| Frame::from_ip(p).as_bytes().to_vec())
        .collect();
    // A TCP segment with a virtio-net header asking for 1,448-byte cuts.
    let mut tso = Frame::from_ip(&ip(6, 4 * 1448)).as_bytes().to_vec();
    tso[0] = 1; // needs checksum
    tso[1] = 1; // GSO TCPv4
    tso[2..4].copy_from_slice(&40u16.to_le_bytes()); // header length
    tso[4..6].copy_from_slice(&1448u16.to_le_bytes()); // segment size
    tso[6..8].copy_from_slice(&20u16.to_le_bytes()); // checksum start
    tso[8..10].copy_from_slice(&16u16.to_le_bytes()); // checksum offset
    seeds.push(tso);
    // A datagram to a group of node 1's, and an IGMPv3 report joining it.
    let mut group = ip(17, 64);
    group[16..20].copy_from_slice(&[239, 255, 0, 1]);
    seeds.push(Frame::from_ip(&group).as_bytes().to_vec());
    let mut igmp = ip(17, 8);
    igmp[9] = 2;
    igmp[16..20].copy_from_slice(&[224, 0, 0, 22]);
    igmp[20..36].copy_from_slice(&[0x22, 0, 0, 0, 0, 0, 0, 1, 4, 0, 0, 0, 239, 255, 0, 1]);
    seeds.push(Frame::from_ip(&igmp[..36]).as_bytes().to_vec());
    seeds
}

fn node2() -> Forwarder {
    let mut f = Forwarder::new(2, Ipv4Addr::new(10, 0, 0, 2), 16);
    f.set_table(RouteTable {
        entries: vec![
            RouteEntry {
                first: 1,
                last: 1,
                next_hops: vec![1],
            },
            RouteEntry {
                first: 3,
                last: 255,
                next_hops: vec![3, 4],
            },
        ],
        pinned: Vec::new(),
    });
    f.set_groups(
        vec![proto::GroupRoute {
            group: Ipv4Addr::new(239, 255, 0, 1),
            source: 1,
            member: true,
            trees: vec![proto::TreeHop {
                tree_id: 0,
                weight: 1.0,
                parent: Some(1),
                children: vec![3, 4],
            }],
        }],
        &[],
    );
    f
}

#[test]
fn link_frames_can_hold_anything() {
    let inputs = (hostile::mutated(seeds(), 8), hostile::proptest::bool::ANY);
    hostile::check("link frames", inputs, 4000, |(bytes, from_link)| {
        let Some(frame) = Frame::from_bytes(bytes.clone()) else {
            return false;
        };
        let _ = frame.wire_len();
        let _ = frame.coalescable();
        let _ = dataplane::monitor::flow_key(frame.ip());
        let f = node2();
        let packets = if frame.is_segment() {
            frame.segment()
        } else {
            vec![frame]
        };
        for p in packets {
            let _ = dataplane::monitor::flow_key(p.ip());
            match f.forward(p, from_link.then_some(1), |_| true) {
                Hop::Link(_, p) | Hop::Tun(p) => {
                    let _ = p.wire_len();
                }
                Hop::Copies { tun, links } => {
                    for p in tun.into_iter().chain(links.into_iter().map(|l| l.1)) {
                        let _ = p.wire_len();
                    }
                }
                _ => {}
            }
        }
        true
    });
}
