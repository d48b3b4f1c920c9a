//! Forwarding tables: for every node, the next hops towards every destination on a shortest
//! path, all of them where several are equally short (ECMP), plus routes pinned by the user.
//!
//! A path's length is the sum of its links' weights, ties broken by hop count; with every
//! weight zero (the `hops` metric) it is the hop count alone, with weights in nanoseconds of
//! delay it is the path's one-way delay. One search per destination (breadth-first for hops,
//! Dijkstra for weights) gives every node's distance to it; a node's next hops towards it are
//! its neighbours on a shortest path. Tables are stored as ranges of destinations that share
//! next hops, so a ring's table is a handful of entries however large the ring.
//!
//! [`Router`] keeps the tables of a live network: a link going down, coming up or changing
//! weight recomputes only the destinations whose shortest paths used it before or use it
//! after, and reports the nodes whose tables changed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use crate::Topology;

/// Destinations `first..=last` are reached through `next_hops` (ascending, never empty).
/// The controller sends these as they are (`proto::Route`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RouteEntry {
    pub first: u32,
    pub last: u32,
    pub next_hops: Vec<u32>,
}

/// Traffic from `src` to `dst` leaves through `next_hops`, whatever the shortest path says;
/// with `flow`, only the flow of that [`flow_hash`]. The controller sends these as they are
/// (`proto::PinnedRoute`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PinnedEntry {
    pub src: u32,
    pub dst: u32,
    #[serde(default)]
    pub flow: Option<u64>,
    pub next_hops: Vec<u32>,
}

impl PinnedEntry {
    fn key(&self) -> (u32, u32, Option<u64>) {
        (self.src, self.dst, self.flow)
    }
}

/// A flow's hash (FNV-1a over addresses, protocol and, for TCP and UDP, ports): the same at
/// every hop, so a flow keeps one path through equal-cost routes, and a route can be pinned
/// for one flow.
pub fn flow_hash(
    src: std::net::Ipv4Addr,
    dst: std::net::Ipv4Addr,
    protocol: u8,
    ports: Option<(u16, u16)>,
) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(&src.octets());
    eat(&dst.octets());
    eat(&[protocol]);
    if let Some((s, d)) = ports {
        eat(&s.to_be_bytes());
        eat(&d.to_be_bytes());
    }
    h
}

/// A node's forwarding table, sorted by destination; pinned entries sorted by (src, dst,
/// flow), a route for every flow of a pair before those for one flow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    pub entries: Vec<RouteEntry>,
    pub pinned: Vec<PinnedEntry>,
}

impl RouteTable {
    /// Next hops towards `dst` by the shortest-path table, if it is reachable.
    pub fn lookup(&self, dst: u32) -> Option<&[u32]> {
        let i = self.entries.partition_point(|e| e.last < dst);
        let e = self.entries.get(i)?;
        (e.first <= dst).then_some(e.next_hops.as_slice())
    }

    /// Next hops for the flow `flow_hash` from `src` to `dst`: a route pinned for the flow,
    /// else one pinned for the pair, else the table.
    pub fn lookup_from(&self, src: u32, dst: u32, flow_hash: u64) -> Option<&[u32]> {
        if self.pinned.is_empty() {
            return self.lookup(dst);
        }
        let find = |flow| {
            self.pinned
                .binary_search_by(|p| p.key().cmp(&(src, dst, flow)))
                .ok()
                .map(|i| self.pinned[i].next_hops.as_slice())
        };
        find(Some(flow_hash))
            .or_else(|| find(None))
            .or_else(|| self.lookup(dst))
    }

    /// The next hop for a flow: the same flow hash picks the same hop at every node.
    pub fn next_hop(&self, dst: u32, flow_hash: u64) -> Option<u32> {
        pick(self.lookup(dst)?, flow_hash)
    }

    /// The next hop for a flow from `src`, pinned routes first.
    pub fn next_hop_from(&self, src: u32, dst: u32, flow_hash: u64) -> Option<u32> {
        pick(self.lookup_from(src, dst, flow_hash)?, flow_hash)
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

    /// Sets the next hops towards one destination (none: unreachable), splitting and merging
    /// ranges; returns whether anything changed.
    fn set(&mut self, dst: u32, hops: &[u32]) -> bool {
        if self.lookup(dst).unwrap_or(&[]) == hops {
            return false;
        }
        let i = self.entries.partition_point(|e| e.last < dst);
        // Take `dst` out of the range that holds it, if any.
        if let Some(e) = self.entries.get(i).filter(|e| e.first <= dst).cloned() {
            let mut replacement = Vec::with_capacity(2);
            if e.first < dst {
                replacement.push(RouteEntry {
                    first: e.first,
                    last: dst - 1,
                    next_hops: e.next_hops.clone(),
                });
            }
            if dst < e.last {
                replacement.push(RouteEntry {
                    first: dst + 1,
                    last: e.last,
                    next_hops: e.next_hops,
                });
            }
            self.entries.splice(i..=i, replacement);
        }
        if hops.is_empty() {
            return true;
        }
        let i = self.entries.partition_point(|e| e.last < dst);
        let joins_left = i > 0 && {
            let l = &self.entries[i - 1];
            l.last + 1 == dst && l.next_hops == hops
        };
        let joins_right = self
            .entries
            .get(i)
            .is_some_and(|r| r.first == dst + 1 && r.next_hops == hops);
        match (joins_left, joins_right) {
            (true, true) => {
                let right = self.entries.remove(i);
                self.entries[i - 1].last = right.last;
            }
            (true, false) => self.entries[i - 1].last = dst,
            (false, true) => self.entries[i].first = dst,
            (false, false) => self.entries.insert(
                i,
                RouteEntry {
                    first: dst,
                    last: dst,
                    next_hops: hops.to_vec(),
                },
            ),
        }
        true
    }
}

fn pick(hops: &[u32], flow_hash: u64) -> Option<u32> {
    (!hops.is_empty()).then(|| hops[(flow_hash % hops.len() as u64) as usize])
}

/// What a shortest path minimises.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Metric {
    /// Hop count.
    #[default]
    Hops,
    /// One-way delay (the links' configured delays), then hop count.
    Delay,
}

/// A path's length: weight first, hop count to break ties (so zero-weight links never make
/// loops).
type Dist = (u64, u32);
const FAR: Dist = (u64::MAX, u32::MAX);

fn extend(d: Dist, weight: u64) -> Dist {
    (d.0.saturating_add(weight), d.1.saturating_add(1))
}

/// A route given by the user: either a path (`[1, 2, 3]`: from 1 to 3 through 2) or the edges
/// of a directed acyclic graph from one source to one sink (traffic splits per flow where the
/// graph branches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExplicitRoute {
    pub src: u32,
    pub dst: u32,
    /// Directed edges of the route.
    pub edges: Vec<(u32, u32)>,
    /// Only for the flow of this [`flow_hash`] (else every flow from `src` to `dst`).
    pub flow: Option<u64>,
}

impl ExplicitRoute {
    pub fn path(nodes: &[u32]) -> Result<ExplicitRoute, String> {
        if nodes.len() < 2 {
            return Err("a route path needs at least two nodes".into());
        }
        for (i, n) in nodes.iter().enumerate() {
            if nodes[..i].contains(n) {
                return Err(format!("node {n} appears twice in the path"));
            }
        }
        Self::dag(nodes.windows(2).map(|w| (w[0], w[1])).collect())
    }

    /// Edges of a DAG with exactly one source (no in-edges) and one sink (no out-edges).
    pub fn dag(edges: Vec<(u32, u32)>) -> Result<ExplicitRoute, String> {
        if edges.is_empty() {
            return Err("a route needs at least one edge".into());
        }
        let mut nodes: Vec<u32> = edges.iter().flat_map(|&(a, b)| [a, b]).collect();
        nodes.sort_unstable();
        nodes.dedup();
        let sources: Vec<u32> = nodes
            .iter()
            .copied()
            .filter(|n| !edges.iter().any(|e| e.1 == *n))
            .collect();
        let sinks: Vec<u32> = nodes
            .iter()
            .copied()
            .filter(|n| !edges.iter().any(|e| e.0 == *n))
            .collect();
        if let Some(&(a, _)) = edges.iter().find(|(a, b)| a == b) {
            return Err(format!("edge {a}->{a} is a loop"));
        }
        match (sources.as_slice(), sinks.as_slice()) {
            ([], _) | (_, []) => Err("the route's edges form a cycle".into()),
            ([src], [dst]) => {
                // With one source and one sink, a cycle would still leave nodes unreachable
                // from the source or unable to reach the sink; check acyclicity by Kahn.
                let mut indegree: Vec<(u32, usize)> = nodes
                    .iter()
                    .map(|&n| (n, edges.iter().filter(|e| e.1 == n).count()))
                    .collect();
                let mut ready = vec![*src];
                let mut seen = 0;
                while let Some(n) = ready.pop() {
                    seen += 1;
                    for &(_, b) in edges.iter().filter(|e| e.0 == n) {
                        let d = indegree.iter_mut().find(|(m, _)| *m == b).expect("a node");
                        d.1 -= 1;
                        if d.1 == 0 {
                            ready.push(b);
                        }
                    }
                }
                if seen != nodes.len() {
                    return Err("the route's edges form a cycle".into());
                }
                let mut edges = edges;
                edges.sort_unstable();
                edges.dedup();
                Ok(ExplicitRoute {
                    src: *src,
                    dst: *dst,
                    edges,
                    flow: None,
                })
            }
            ([_], sinks) => Err(format!(
                "the route ends at several nodes ({sinks:?}): a route has one destination; for several, make a multicast group and give it this tree ([[groups]] trees, `nextmini group trees`)"
            )),
            (sources, _) => Err(format!(
                "the route starts at several nodes ({sources:?}); give one route per source"
            )),
        }
    }
}

/// Every node's table (`tables[id - 1]`), by hop count with equal-cost multipath.
pub fn shortest_path_tables(topology: &Topology) -> Vec<RouteTable> {
    Router::new(topology, Metric::Hops, |_, _| Some(0), Vec::new()).tables
}

/// The forwarding tables of a network whose links come and go.
pub struct Router {
    /// Outgoing live directions per node: (neighbour, weight).
    out: Vec<Vec<(u32, u64)>>,
    /// The reverse: incoming live directions per node: (neighbour, weight of neighbour→node).
    into: Vec<Vec<(u32, u64)>>,
    /// Whether every weight is zero, so breadth-first search gives the distances.
    unweighted: bool,
    metric: Metric,
    explicit: Vec<ExplicitRoute>,
    tables: Vec<RouteTable>,
}

impl Router {
    /// Tables for `topology` where `weight(a, b)` is the weight of the direction a→b, or None
    /// when that direction is down (a link carries traffic when both directions are up).
    /// Under [`Metric::Hops`] weights are ignored.
    pub fn new(
        topology: &Topology,
        metric: Metric,
        weight: impl Fn(u32, u32) -> Option<u64>,
        explicit: Vec<ExplicitRoute>,
    ) -> Router {
        let n = topology.n_nodes() as usize;
        let mut r = Router {
            out: vec![Vec::new(); n],
            into: vec![Vec::new(); n],
            unweighted: true,
            metric,
            explicit,
            tables: vec![RouteTable::default(); n],
        };
        for &(a, b) in topology.edges() {
            if let (Some(ab), Some(ba)) = (weight(a, b), weight(b, a)) {
                r.insert(a, b, ab, ba);
            }
        }
        r.recompute_all();
        r.pin();
        r
    }

    pub fn tables(&self) -> &[RouteTable] {
        &self.tables
    }

    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// The routes pinned by the user, live or waiting for a link to come back.
    pub fn explicit(&self) -> &[ExplicitRoute] {
        &self.explicit
    }

    /// Pins `route` (replacing the route of the same source, destination and flow). Returns
    /// the nodes whose tables changed, ascending: none when it was pinned already.
    pub fn set_explicit(&mut self, route: ExplicitRoute) -> Vec<u32> {
        let key = (route.src, route.dst, route.flow);
        match self
            .explicit
            .iter_mut()
            .find(|r| (r.src, r.dst, r.flow) == key)
        {
            Some(r) if *r == route => return Vec::new(),
            Some(r) => *r = route,
            None => self.explicit.push(route),
        }
        self.repin()
    }

    /// Unpins the routes that `keep` refuses. Returns the nodes whose tables changed.
    pub fn clear_explicit(&mut self, keep: impl Fn(&ExplicitRoute) -> bool) -> Vec<u32> {
        let before = self.explicit.len();
        self.explicit.retain(|r| keep(r));
        if self.explicit.len() == before {
            return Vec::new();
        }
        self.repin()
    }

    fn repin(&mut self) -> Vec<u32> {
        self.pin()
            .into_iter()
            .zip(1..)
            .filter_map(|(changed, id)| changed.then_some(id))
            .collect()
    }

    /// The path traffic of `flow_hash` takes from `src` to `dst` by the tables (pinned routes
    /// included), as nodes; None when it does not arrive (no route, or a loop).
    pub fn path(&self, src: u32, dst: u32, flow_hash: u64) -> Option<Vec<u32>> {
        let mut path = vec![src];
        let mut at = src;
        while at != dst {
            let next = self
                .tables
                .get(at as usize - 1)?
                .next_hop_from(src, dst, flow_hash)?;
            if path.contains(&next) {
                return None;
            }
            path.push(next);
            at = next;
        }
        Some(path)
    }

    /// Every link direction traffic from `src` to `dst` may take (all equal-cost branches;
    /// routes pinned for single flows aside: [`Router::path`] shows those), ascending.
    pub fn edges(&self, src: u32, dst: u32) -> Vec<(u32, u32)> {
        let mut edges = Vec::new();
        let mut seen = vec![false; self.tables.len()];
        let mut stack = vec![src];
        while let Some(at) = stack.pop() {
            if at == dst || std::mem::replace(&mut seen[at as usize - 1], true) {
                continue;
            }
            let table = &self.tables[at as usize - 1];
            let pinned = table
                .pinned
                .iter()
                .find(|p| (p.src, p.dst, p.flow) == (src, dst, None));
            let hops = match pinned {
                Some(p) => &p.next_hops[..],
                None => table.lookup(dst).unwrap_or(&[]),
            };
            for &h in hops {
                edges.push((at, h));
                stack.push(h);
            }
        }
        edges.sort_unstable();
        edges.dedup();
        edges
    }

    fn weight_of(&self, w: u64) -> u64 {
        match self.metric {
            Metric::Hops => 0,
            Metric::Delay => w,
        }
    }

    fn insert(&mut self, a: u32, b: u32, ab: u64, ba: u64) {
        let (ab, ba) = (self.weight_of(ab), self.weight_of(ba));
        if ab != 0 || ba != 0 {
            self.unweighted = false;
        }
        self.out[a as usize - 1].push((b, ab));
        self.into[b as usize - 1].push((a, ab));
        self.out[b as usize - 1].push((a, ba));
        self.into[a as usize - 1].push((b, ba));
    }

    fn remove(&mut self, a: u32, b: u32) {
        self.out[a as usize - 1].retain(|e| e.0 != b);
        self.into[b as usize - 1].retain(|e| e.0 != a);
        self.out[b as usize - 1].retain(|e| e.0 != a);
        self.into[a as usize - 1].retain(|e| e.0 != b);
    }

    fn live_weight(&self, a: u32, b: u32) -> Option<u64> {
        self.out[a as usize - 1]
            .iter()
            .find(|e| e.0 == b)
            .map(|e| e.1)
    }

    /// The link a–b now has these weights (None: down). Returns the nodes whose tables
    /// changed, ascending.
    pub fn set_link(&mut self, a: u32, b: u32, ab: Option<u64>, ba: Option<u64>) -> Vec<u32> {
        let new = ab
            .zip(ba)
            .map(|(x, y)| (self.weight_of(x), self.weight_of(y)));
        let old = self.live_weight(a, b).zip(self.live_weight(b, a));
        if new == old {
            return Vec::new();
        }
        // Destinations whose shortest paths use the link now...
        let n = self.tables.len() as u32;
        let mut affected: Vec<bool> = (1..=n)
            .map(|d| {
                self.tables[a as usize - 1]
                    .lookup(d)
                    .is_some_and(|h| h.contains(&b))
                    || self.tables[b as usize - 1]
                        .lookup(d)
                        .is_some_and(|h| h.contains(&a))
            })
            .collect();
        self.remove(a, b);
        if let Some((x, y)) = new {
            self.insert(a, b, x, y);
            // ...and those whose shortest paths use it after the change.
            let from_a = self.distances_from(a);
            let from_b = self.distances_from(b);
            for d in 0..n as usize {
                if extend(from_b[d], x) == from_a[d] || extend(from_a[d], y) == from_b[d] {
                    affected[d] = true;
                }
            }
        }
        let mut changed = vec![false; n as usize];
        let count = affected.iter().filter(|x| **x).count();
        if count * 4 > n as usize {
            // Most destinations: a fresh computation is as cheap and keeps ranges tidy.
            let before = std::mem::take(&mut self.tables);
            self.tables = vec![RouteTable::default(); n as usize];
            self.recompute_all();
            for (i, (old, new)) in before.iter().zip(&mut self.tables).enumerate() {
                new.pinned = old.pinned.clone();
                changed[i] = old.entries != new.entries;
            }
        } else {
            let mut dist = vec![FAR; n as usize];
            let mut hops = Vec::new();
            for d in (1..=n).filter(|d| affected[*d as usize - 1]) {
                self.distances_to(d, &mut dist);
                for src in 1..=n {
                    self.next_hops(src, d, &dist, &mut hops);
                    if self.tables[src as usize - 1].set(d, &hops) {
                        changed[src as usize - 1] = true;
                    }
                }
            }
        }
        for (i, c) in self.pin().into_iter().enumerate() {
            changed[i] |= c;
        }
        (1..=n).filter(|i| changed[*i as usize - 1]).collect()
    }

    fn recompute_all(&mut self) {
        let n = self.tables.len() as u32;
        let mut dist = vec![FAR; n as usize];
        let mut hops = Vec::new();
        for dst in 1..=n {
            self.distances_to(dst, &mut dist);
            for src in 1..=n {
                self.next_hops(src, dst, &dist, &mut hops);
                if !hops.is_empty() {
                    self.tables[src as usize - 1].push(dst, &hops);
                }
            }
        }
    }

    /// `src`'s neighbours on a shortest path to the destination whose distances are `dist`.
    fn next_hops(&self, src: u32, dst: u32, dist: &[Dist], hops: &mut Vec<u32>) {
        hops.clear();
        let d = dist[src as usize - 1];
        if src == dst || d == FAR {
            return;
        }
        hops.extend(
            self.out[src as usize - 1]
                .iter()
                .filter(|&&(w, weight)| extend(dist[w as usize - 1], weight) == d)
                .map(|e| e.0),
        );
        hops.sort_unstable();
    }

    /// Every node's distance to `dst` (over incoming directions, so asymmetric weights count
    /// the way traffic goes).
    fn distances_to(&self, dst: u32, dist: &mut [Dist]) {
        search(&self.into, self.unweighted, dst, dist);
    }

    /// Distances from `src` to every node.
    fn distances_from(&self, src: u32) -> Vec<Dist> {
        let mut dist = vec![FAR; self.tables.len()];
        search(&self.out, self.unweighted, src, &mut dist);
        dist
    }

    /// Installs the explicit routes whose every edge is live (a route over a down link gives
    /// way to the shortest paths until the link is back). Returns which tables changed.
    fn pin(&mut self) -> Vec<bool> {
        let mut pinned: Vec<Vec<PinnedEntry>> = vec![Vec::new(); self.tables.len()];
        for route in &self.explicit {
            if !route
                .edges
                .iter()
                .all(|&(a, b)| self.live_weight(a, b).is_some())
            {
                continue;
            }
            for &(a, b) in &route.edges {
                let list = &mut pinned[a as usize - 1];
                match list
                    .iter_mut()
                    .find(|p| p.key() == (route.src, route.dst, route.flow))
                {
                    Some(p) => p.next_hops.push(b),
                    None => list.push(PinnedEntry {
                        src: route.src,
                        dst: route.dst,
                        flow: route.flow,
                        next_hops: vec![b],
                    }),
                }
            }
        }
        pinned
            .into_iter()
            .zip(&mut self.tables)
            .map(|(mut list, table)| {
                for p in &mut list {
                    p.next_hops.sort_unstable();
                    p.next_hops.dedup();
                }
                list.sort_by_key(PinnedEntry::key);
                let changed = table.pinned != list;
                table.pinned = list;
                changed
            })
            .collect()
    }
}

/// Single-source shortest distances over `adjacency` (breadth-first when unweighted).
fn search(adjacency: &[Vec<(u32, u64)>], unweighted: bool, from: u32, dist: &mut [Dist]) {
    dist.fill(FAR);
    dist[from as usize - 1] = (0, 0);
    if unweighted {
        let mut queue = VecDeque::from([from]);
        while let Some(v) = queue.pop_front() {
            let d = extend(dist[v as usize - 1], 0);
            for &(w, _) in &adjacency[v as usize - 1] {
                if dist[w as usize - 1] == FAR {
                    dist[w as usize - 1] = d;
                    queue.push_back(w);
                }
            }
        }
        return;
    }
    let mut heap = BinaryHeap::from([Reverse(((0u64, 0u32), from))]);
    while let Some(Reverse((d, v))) = heap.pop() {
        if d > dist[v as usize - 1] {
            continue;
        }
        for &(w, weight) in &adjacency[v as usize - 1] {
            let nd = extend(d, weight);
            if nd < dist[w as usize - 1] {
                dist[w as usize - 1] = nd;
                heap.push(Reverse((nd, w)));
            }
        }
    }
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

    /// A square 1-2-3-4-1 whose side 1-2 is slow: by hops 1 reaches 2 directly, by delay it
    /// goes round the other three sides.
    fn square_delays(a: u32, b: u32) -> Option<u64> {
        Some(if (a.min(b), a.max(b)) == (1, 2) {
            10_000_000
        } else {
            1_000_000
        })
    }

    #[test]
    fn the_delay_metric_takes_the_faster_way_and_hops_the_shorter() {
        let t = Topology::new("square", 4, [(1, 2), (2, 3), (3, 4), (1, 4)]).unwrap();
        let by_hops = Router::new(&t, Metric::Hops, square_delays, Vec::new());
        assert_eq!(by_hops.tables()[0].lookup(2), Some(&[2][..]));
        let by_delay = Router::new(&t, Metric::Delay, square_delays, Vec::new());
        assert_eq!(by_delay.tables()[0].lookup(2), Some(&[4][..]));
        assert_eq!(by_delay.tables()[3].lookup(2), Some(&[3][..]));
        // Equal delays tie-break on hops: zero-delay links never loop.
        let zero = Router::new(&t, Metric::Delay, |_, _| Some(0), Vec::new());
        assert_eq!(zero.tables()[0].lookup(2), Some(&[2][..]));
        assert_eq!(zero.tables()[0].lookup(3), Some(&[2, 4][..]));
    }

    #[test]
    fn asymmetric_delays_route_each_way_by_its_own_direction() {
        // 1→2 is slow but 2→1 is fast: 1 goes round, 2 comes straight back.
        let t = Topology::new("square", 4, [(1, 2), (2, 3), (3, 4), (1, 4)]).unwrap();
        let w = |a: u32, b: u32| {
            Some(if (a, b) == (1, 2) {
                10_000_000
            } else {
                1_000_000
            })
        };
        let r = Router::new(&t, Metric::Delay, w, Vec::new());
        assert_eq!(r.tables()[0].lookup(2), Some(&[4][..]));
        assert_eq!(r.tables()[1].lookup(1), Some(&[1][..]));
    }

    #[test]
    fn explicit_routes_are_checked() {
        assert!(ExplicitRoute::path(&[1]).is_err());
        assert!(
            ExplicitRoute::path(&[1, 2, 1])
                .unwrap_err()
                .contains("twice")
        );
        let cycle = ExplicitRoute::dag(vec![(1, 2), (2, 3), (3, 2), (3, 4)]).unwrap_err();
        assert!(cycle.contains("cycle"), "{cycle}");
        let multicast = ExplicitRoute::dag(vec![(1, 2), (1, 3)]).unwrap_err();
        assert!(multicast.contains("multicast"), "{multicast}");
        let two_sources = ExplicitRoute::dag(vec![(1, 3), (2, 3)]).unwrap_err();
        assert!(two_sources.contains("several"), "{two_sources}");
        let diamond = ExplicitRoute::dag(vec![(1, 2), (2, 4), (1, 3), (3, 4)]).unwrap();
        assert_eq!((diamond.src, diamond.dst), (1, 4));
    }

    #[test]
    fn a_pinned_path_holds_for_its_source_only_and_yields_when_a_link_is_down() {
        // Ring of 6: 1 reaches 3 through 2; pin 1 → 3 the long way, 1-6-5-4-3.
        let t = Preset::Ring { n: 6 }.build().unwrap();
        let pin = ExplicitRoute::path(&[1, 6, 5, 4, 3]).unwrap();
        let mut r = Router::new(&t, Metric::Hops, |_, _| Some(0), vec![pin]);
        let follow = |r: &Router, src: u32, dst: u32| {
            let mut at = src;
            let mut path = vec![at];
            while at != dst {
                at = r.tables()[at as usize - 1]
                    .next_hop_from(src, dst, 7)
                    .unwrap();
                path.push(at);
            }
            path
        };
        assert_eq!(follow(&r, 1, 3), vec![1, 6, 5, 4, 3]);
        // Other sources through the same nodes keep their shortest paths.
        assert_eq!(follow(&r, 5, 3), vec![5, 4, 3]);
        assert_eq!(follow(&r, 6, 3), vec![6, 5, 4, 3]);
        assert_eq!(follow(&r, 2, 3), vec![2, 3]);
        // A link of the pinned path goes down: shortest paths again; back up: pinned again.
        let changed = r.set_link(5, 4, None, None);
        assert!(changed.contains(&1) && changed.contains(&6));
        assert_eq!(follow(&r, 1, 3), vec![1, 2, 3]);
        r.set_link(5, 4, Some(0), Some(0));
        assert_eq!(follow(&r, 1, 3), vec![1, 6, 5, 4, 3]);
    }

    #[test]
    fn a_pinned_dag_splits_where_it_branches() {
        let t = Topology::new("diamond", 4, [(1, 2), (2, 4), (1, 3), (3, 4)]).unwrap();
        let dag = ExplicitRoute::dag(vec![(1, 2), (2, 4), (1, 3), (3, 4)]).unwrap();
        let r = Router::new(&t, Metric::Hops, |_, _| Some(0), vec![dag]);
        assert_eq!(r.tables()[0].lookup_from(1, 4, 0), Some(&[2, 3][..]));
        assert_eq!(r.tables()[1].lookup_from(1, 4, 0), Some(&[4][..]));
    }

    #[test]
    fn range_tables_split_and_merge() {
        let mut t = RouteTable::default();
        for d in 1..=10 {
            t.push(d, &[2]);
        }
        assert!(t.set(5, &[3]));
        assert_eq!(t.entries.len(), 3);
        assert_eq!(t.lookup(5), Some(&[3][..]));
        assert_eq!((t.lookup(4), t.lookup(6)), (Some(&[2][..]), Some(&[2][..])));
        assert!(!t.set(5, &[3]), "no change");
        assert!(t.set(5, &[2]));
        assert_eq!(t.entries.len(), 1, "merged back");
        assert!(t.set(1, &[]));
        assert_eq!((t.lookup(1), t.entries[0].first), (None, 2));
        assert!(t.set(11, &[2]));
        assert_eq!((t.entries.len(), t.entries[0].last), (1, 11));
    }

    /// A small deterministic generator for the property test below.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, bound: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % bound
        }
    }

    #[test]
    fn incremental_changes_match_a_fresh_computation() {
        for (metric, seed) in [(Metric::Hops, 1), (Metric::Delay, 2), (Metric::Delay, 3)] {
            let t = Preset::Random {
                n: 40,
                degree: Some(3),
                p: None,
                seed,
            }
            .build()
            .unwrap();
            let edges = t.edges().to_vec();
            let mut rng = Lcg(seed);
            let mut weights: Vec<Option<(u64, u64)>> = edges
                .iter()
                .map(|_| Some((1 + rng.next(5), 1 + rng.next(5))))
                .collect();
            let lookup = |weights: &[Option<(u64, u64)>], a: u32, b: u32| {
                let i = edges
                    .iter()
                    .position(|&e| e == (a.min(b), a.max(b)))
                    .unwrap();
                weights[i].map(|(x, y)| if a < b { x } else { y })
            };
            let mut r = Router::new(&t, metric, |a, b| lookup(&weights, a, b), Vec::new());
            for _ in 0..60 {
                let i = rng.next(edges.len() as u64) as usize;
                weights[i] = match rng.next(3) {
                    0 => None,
                    _ => Some((1 + rng.next(5), 1 + rng.next(5))),
                };
                let (a, b) = edges[i];
                let before = r.tables().to_vec();
                let (ab, ba) = (lookup(&weights, a, b), lookup(&weights, b, a));
                let changed = r.set_link(a, b, ab, ba);
                let fresh = Router::new(&t, metric, |a, b| lookup(&weights, a, b), Vec::new());
                for (id, (got, want)) in r.tables().iter().zip(fresh.tables()).enumerate() {
                    for d in 1..=40 {
                        assert_eq!(
                            got.lookup(d),
                            want.lookup(d),
                            "{metric:?} node {} to {d}",
                            id + 1
                        );
                    }
                    let did_change = before[id].entries != got.entries;
                    assert_eq!(changed.contains(&(id as u32 + 1)), did_change);
                }
            }
        }
    }

    #[test]
    fn routes_pinned_at_run_time_change_only_the_nodes_on_them() {
        let t = Preset::Ring { n: 8 }.build().unwrap();
        let mut r = Router::new(&t, Metric::Hops, |_, _| Some(0), Vec::new());
        let hash = 7;
        assert_eq!(r.path(1, 3, hash), Some(vec![1, 2, 3]));
        // The long way round: only the nodes that forward differently hear of it.
        let long = ExplicitRoute::path(&[1, 8, 7, 6, 5, 4, 3]).unwrap();
        assert_eq!(r.set_explicit(long.clone()), vec![1, 4, 5, 6, 7, 8]);
        assert_eq!(r.path(1, 3, hash), Some(vec![1, 8, 7, 6, 5, 4, 3]));
        assert!(
            r.set_explicit(long).is_empty(),
            "pinning it again changes nothing"
        );
        // Other sources keep their shortest paths.
        assert_eq!(r.path(2, 3, hash), Some(vec![2, 3]));
        assert_eq!(r.clear_explicit(|_| false), vec![1, 4, 5, 6, 7, 8]);
        assert_eq!(r.path(1, 3, hash), Some(vec![1, 2, 3]));
        assert!(r.clear_explicit(|_| false).is_empty());
    }

    #[test]
    fn a_route_pinned_for_one_flow_leaves_the_others_alone() {
        let t = Preset::Ring { n: 6 }.build().unwrap();
        let mut r = Router::new(&t, Metric::Hops, |_, _| Some(0), Vec::new());
        let (a, b) = (
            flow_hash(
                [10, 0, 0, 1].into(),
                [10, 0, 0, 3].into(),
                6,
                Some((40000, 47000)),
            ),
            flow_hash(
                [10, 0, 0, 1].into(),
                [10, 0, 0, 3].into(),
                6,
                Some((40001, 47000)),
            ),
        );
        let mut one = ExplicitRoute::path(&[1, 6, 5, 4, 3]).unwrap();
        one.flow = Some(a);
        r.set_explicit(one);
        assert_eq!(r.path(1, 3, a), Some(vec![1, 6, 5, 4, 3]));
        assert_eq!(r.path(1, 3, b), Some(vec![1, 2, 3]));
        // A route for the pair moves the others; the flow's own still wins.
        r.set_explicit(ExplicitRoute::path(&[1, 2, 3]).unwrap());
        assert_eq!(r.path(1, 3, a), Some(vec![1, 6, 5, 4, 3]));
        assert_eq!(r.edges(1, 3), vec![(1, 2), (2, 3)]);
        assert_eq!(
            r.edges(1, 4),
            vec![(1, 2), (1, 6), (2, 3), (3, 4), (5, 4), (6, 5)]
        );
    }
}
