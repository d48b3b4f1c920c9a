//! Forwarding tables: for every node, the next hops towards every destination on a shortest
//! path by hop count, all of them where several are equally short (ECMP).
//!
//! One breadth-first search per destination gives every node's distance to it; a node's next
//! hops towards it are its neighbours one step closer. Tables are stored as ranges of
//! destinations that share next hops, so a ring's table is a handful of entries however large
//! the ring.

use std::collections::VecDeque;

use crate::Topology;

/// Destinations `first..=last` are reached through `next_hops` (ascending, never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    pub first: u32,
    pub last: u32,
    pub next_hops: Vec<u32>,
}

/// A node's forwarding table, sorted by destination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    pub entries: Vec<RouteEntry>,
}

impl RouteTable {
    /// Next hops towards `dst`, if it is reachable.
    pub fn lookup(&self, dst: u32) -> Option<&[u32]> {
        let i = self.entries.partition_point(|e| e.last < dst);
        let e = self.entries.get(i)?;
        (e.first <= dst).then_some(e.next_hops.as_slice())
    }

    /// The next hop for a flow: the same flow hash picks the same hop at every node.
    pub fn next_hop(&self, dst: u32, flow_hash: u64) -> Option<u32> {
        let hops = self.lookup(dst)?;
        Some(hops[(flow_hash % hops.len() as u64) as usize])
    }

    fn push(&mut self, dst: u32, hops: &[u32]) {
        if let Some(last) = self.entries.last_mut()
            && last.last + 1 == dst
            && last.next_hops == hops
        {
            last.last = dst;
            return;
        }
        self.entries.push(RouteEntry {
            first: dst,
            last: dst,
            next_hops: hops.to_vec(),
        });
    }
}

/// Every node's table (`tables[id - 1]`), by hop count with equal-cost multipath.
pub fn shortest_path_tables(topology: &Topology) -> Vec<RouteTable> {
    let n = topology.n_nodes() as usize;
    let adjacency = topology.adjacency();
    let mut tables = vec![RouteTable::default(); n];
    let mut dist = vec![u32::MAX; n];
    let mut queue = VecDeque::new();
    let mut hops = Vec::new();
    for dst in 1..=n as u32 {
        dist.fill(u32::MAX);
        dist[dst as usize - 1] = 0;
        queue.clear();
        queue.push_back(dst);
        while let Some(v) = queue.pop_front() {
            let d = dist[v as usize - 1];
            for &w in &adjacency[v as usize - 1] {
                if dist[w as usize - 1] == u32::MAX {
                    dist[w as usize - 1] = d + 1;
                    queue.push_back(w);
                }
            }
        }
        for src in 1..=n as u32 {
            let d = dist[src as usize - 1];
            if src == dst || d == u32::MAX {
                continue;
            }
            hops.clear();
            hops.extend(
                adjacency[src as usize - 1]
                    .iter()
                    .copied()
                    .filter(|&w| dist[w as usize - 1] == d - 1),
            );
            tables[src as usize - 1].push(dst, &hops);
        }
    }
    tables
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Preset;

    #[test]
    fn a_line_routes_both_ways() {
        let t = Preset::Line { n: 4 }.build().unwrap();
        let tables = shortest_path_tables(&t);
        assert_eq!(tables[0].lookup(4), Some(&[2][..]));
        assert_eq!(tables[1].lookup(1), Some(&[1][..]));
        assert_eq!(tables[1].lookup(4), Some(&[3][..]));
        assert_eq!(tables[0].lookup(1), None, "no route to itself");
        // Node 2's table: 1 via 1, 3..=4 via 3.
        assert_eq!(tables[1].entries.len(), 2);
    }

    #[test]
    fn an_even_ring_has_two_equal_paths_to_the_opposite_node() {
        let t = Preset::Ring { n: 6 }.build().unwrap();
        let tables = shortest_path_tables(&t);
        assert_eq!(tables[0].lookup(4), Some(&[2, 6][..]));
        assert_eq!(tables[0].lookup(3), Some(&[2][..]));
        assert_eq!(tables[0].lookup(5), Some(&[6][..]));
        // The flow hash picks one of them, the same one for the same hash.
        let a = tables[0].next_hop(4, 10).unwrap();
        assert_eq!(tables[0].next_hop(4, 10), Some(a));
        assert_ne!(tables[0].next_hop(4, 10), tables[0].next_hop(4, 11));
    }

    #[test]
    fn tables_are_compact_and_paths_are_shortest() {
        let t = Preset::Ring { n: 1000 }.build().unwrap();
        let tables = shortest_path_tables(&t);
        assert!(
            tables.iter().all(|tb| tb.entries.len() <= 4),
            "ring tables stay small"
        );
        let t = Preset::FatTree { k: 4 }.build().unwrap();
        let tables = shortest_path_tables(&t);
        // Following next hops from any host reaches any other host in at most 6 hops.
        for src in 21..=36u32 {
            for dst in 21..=36u32 {
                if src == dst {
                    continue;
                }
                let (mut at, mut hops) = (src, 0);
                while at != dst {
                    at = tables[at as usize - 1]
                        .next_hop(dst, u64::from(src * 37 + dst))
                        .unwrap();
                    hops += 1;
                    assert!(hops <= 6, "{src} -> {dst} loops");
                }
            }
        }
    }

    #[test]
    fn unreachable_destinations_have_no_route() {
        let t = Topology::new("two islands", 4, [(1, 2), (3, 4)]).unwrap();
        let tables = shortest_path_tables(&t);
        assert_eq!(tables[0].lookup(2), Some(&[2][..]));
        assert_eq!(tables[0].lookup(3), None);
    }
}
