//! Max mode's routes: which of a node's routes its kernel carries out itself.
//!
//! A max-mode node's kernel forwards over its kernel links (veth pairs to other max-mode
//! nodes). A destination whose next hops include kernel links gets a kernel route over
//! those (spread by flow when there are several); every other destination keeps the overlay
//! route into the node's TUN device, where the user-space forwarder takes it. So traffic
//! between two kernel links never leaves the kernel, and a packet the user-space forwarder
//! routes to a kernel link is handed to the kernel, whose route leads it there.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use hostnet::kernel::{KernelRoute, Queue, Shape, cidr_blocks};
use proto::LinkParams;

/// Bytes of an Ethernet header: the veth's frames carry one, and the token bucket counts it.
const ETHERNET_HEADER: u32 = 14;

/// A kernel link direction's token bucket filter for `params` (None: unshaped). Without a
/// burst of its own the bucket holds a millisecond at the rate (the kernel's timers are not
/// finer than that); it always holds at least one full frame, which the kernel needs.
pub fn kernel_shape(params: &LinkParams, mtu: u16) -> Option<Shape> {
    let rate = params.rate?;
    let bytes_per_sec = rate.bytes_per_sec().max(1);
    let frame = u32::from(mtu) + ETHERNET_HEADER;
    let burst = params
        .burst
        .unwrap_or((bytes_per_sec / 1000).min(u64::from(u32::MAX)) as u32)
        .max(frame);
    let queue = match params.queue {
        linkem::QueueLimit::Packets(n) => Queue::Packets(n),
        linkem::QueueLimit::Bytes(n) => Queue::Bytes(n),
    };
    Some(Shape {
        bytes_per_sec,
        burst,
        queue,
    })
}

/// The kernel routes of node `me` (overlay address `my_addr`, node n at `my_addr - me + n`)
/// for its forwarding table `routes`, given the neighbours it reaches over kernel links.
pub fn kernel_routes(
    routes: &[proto::Route],
    me: u32,
    my_addr: Ipv4Addr,
    kernel_peers: &BTreeSet<u32>,
) -> Vec<KernelRoute> {
    let base = u32::from(my_addr).wrapping_sub(me);
    let addr = |n: u32| Ipv4Addr::from(base.wrapping_add(n));
    let mut out = Vec::new();
    for r in routes {
        let via: Vec<(u32, Ipv4Addr)> = r
            .next_hops
            .iter()
            .filter(|p| kernel_peers.contains(p))
            .map(|&p| (p, addr(p)))
            .collect();
        if via.is_empty() || r.first > r.last {
            continue;
        }
        // The node's own address is the kernel's local route already.
        let ranges = if (r.first..=r.last).contains(&me) {
            [(r.first, me.wrapping_sub(1)), (me + 1, r.last)]
        } else {
            [(r.first, r.last), (1, 0)]
        };
        for (first, last) in ranges {
            if first > last {
                continue;
            }
            for (dest, prefix_len) in cidr_blocks(addr(first), addr(last)) {
                out.push(KernelRoute {
                    dest,
                    prefix_len,
                    via: via.clone(),
                });
            }
        }
    }
    out
}

/// A kernel link's counters as the emulator's: what the kernel sent was delivered, what its
/// queue dropped was dropped there (the kernel does not count the bytes it dropped).
pub fn link_counters(k: &hostnet::kernel::KernelCounters) -> proto::LinkCounters {
    proto::LinkCounters {
        peer: k.peer,
        counters: linkem::Counters {
            arrived_packets: k.packets + k.dropped + k.queued,
            arrived_bytes: k.ip_bytes,
            delivered_packets: k.packets,
            delivered_bytes: k.ip_bytes,
            dropped_queue: k.dropped,
            ..Default::default()
        },
        queue_packets: k.queued,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(first: u32, last: u32, next_hops: &[u32]) -> proto::Route {
        proto::Route {
            first,
            last,
            next_hops: next_hops.to_vec(),
        }
    }

    #[test]
    fn destinations_behind_kernel_links_get_kernel_routes_and_the_rest_stay_in_user_space() {
        let me_addr = Ipv4Addr::new(10, 0, 0, 3);
        let kernel: BTreeSet<u32> = [2, 4].into();
        let routes = [
            route(1, 2, &[2]),    // behind the kernel link to 2
            route(4, 7, &[4, 9]), // a kernel link and a user-space one: the kernel's share
            route(8, 8, &[9]),    // user space only: no kernel route
            route(10, 12, &[2, 4]),
        ];
        let got = kernel_routes(&routes, 3, me_addr, &kernel);
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let via2 = vec![(2, a("10.0.0.2"))];
        let via4 = vec![(4, a("10.0.0.4"))];
        let both = vec![(2, a("10.0.0.2")), (4, a("10.0.0.4"))];
        let r = |d: &str, len, via: &Vec<(u32, Ipv4Addr)>| KernelRoute {
            dest: a(d),
            prefix_len: len,
            via: via.clone(),
        };
        assert_eq!(
            got,
            vec![
                r("10.0.0.1", 32, &via2),
                r("10.0.0.2", 32, &via2),
                r("10.0.0.4", 30, &via4),
                r("10.0.0.10", 31, &both),
                r("10.0.0.12", 32, &both),
            ]
        );
    }

    #[test]
    fn a_shape_holds_the_rate_a_millisecond_of_burst_and_the_queue() {
        let p = |s: &str| {
            linkem::LinkChange::from_short(s)
                .unwrap()
                .apply(LinkParams::default())
        };
        assert_eq!(kernel_shape(&p("queue=50"), 1500), None);
        assert_eq!(
            kernel_shape(&p("rate=1gbit,queue=50"), 1500),
            Some(Shape {
                bytes_per_sec: 125_000_000,
                burst: 125_000,
                queue: Queue::Packets(50)
            })
        );
        // A slow link's bucket still holds a frame; a burst of the user's is kept.
        let slow = kernel_shape(&p("rate=1mbit,queue_bytes=30000"), 1500).unwrap();
        assert_eq!((slow.burst, slow.queue), (1514, Queue::Bytes(30_000)));
        let own = kernel_shape(&p("rate=1mbit,burst=64000"), 9000).unwrap();
        assert_eq!(own.burst, 64_000);
    }

    #[test]
    fn a_range_over_the_node_itself_leaves_its_own_address_out() {
        let kernel: BTreeSet<u32> = [5].into();
        let got = kernel_routes(&[route(1, 8, &[5])], 4, Ipv4Addr::new(10, 0, 0, 4), &kernel);
        let covered: Vec<u32> = got
            .iter()
            .flat_map(|r| {
                let start = u32::from(r.dest) - u32::from(Ipv4Addr::new(10, 0, 0, 0));
                start..start + (1u32 << (32 - r.prefix_len))
            })
            .collect();
        assert_eq!(covered, vec![1, 2, 3, 5, 6, 7, 8]);
    }
}
