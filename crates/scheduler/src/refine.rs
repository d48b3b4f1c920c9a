//! Refinement of a placement, on several levels: the graph is coarsened by merging free
//! neighbours placed on the same host (heavy-edge matching, as multilevel partitioners such
//! as METIS do), then, from the coarsest level down, nodes on the border between hosts move
//! to the host where more of their links go, each host staying within its bounds (greedy
//! k-way refinement in the manner of Fiduccia–Mattheyses). A move on a coarse level carries
//! a whole cluster, which single-node moves could not get past. Only free nodes move;
//! pinned, coscheduled and colocated ones stay. Every move lowers the cut (or evens the
//! hosts out at the same cut), so it ends; a level costs a look at every link.

use std::collections::HashMap;

/// A weighted graph: each node's weight (how many original nodes it stands for) and its
/// neighbours with the weight of the links between them.
#[derive(Debug, Clone)]
pub struct Graph {
    pub weight: Vec<usize>,
    pub adjacency: Vec<Vec<(usize, usize)>>,
}

impl Graph {
    /// Unit weights from links given by index (duplicates add up).
    pub fn from_edges(n: usize, edges: impl IntoIterator<Item = (usize, usize)>) -> Graph {
        Graph::from_weighted_edges(n, edges.into_iter().map(|(a, b)| (a, b, 1)))
    }

    /// Links given by index with their weights (duplicates add up); nodes weigh 1.
    pub fn from_weighted_edges(
        n: usize,
        edges: impl IntoIterator<Item = (usize, usize, usize)>,
    ) -> Graph {
        let mut merged: Vec<HashMap<usize, usize>> = vec![HashMap::new(); n];
        for (a, b, w) in edges {
            if a != b {
                *merged[a].entry(b).or_default() += w;
                *merged[b].entry(a).or_default() += w;
            }
        }
        Graph {
            weight: vec![1; n],
            adjacency: merged.into_iter().map(sorted).collect(),
        }
    }

    fn len(&self) -> usize {
        self.weight.len()
    }

    /// The weight of links between hosts under `part`.
    pub fn cut(&self, part: &[usize]) -> usize {
        let mut cut = 0;
        for (v, list) in self.adjacency.iter().enumerate() {
            for &(w, weight) in list {
                if w > v && part[w] != part[v] {
                    cut += weight;
                }
            }
        }
        cut
    }
}

fn sorted(m: HashMap<usize, usize>) -> Vec<(usize, usize)> {
    let mut v: Vec<(usize, usize)> = m.into_iter().collect();
    v.sort_unstable();
    v
}

/// Where each host must stay: the total weight of its movable nodes within `lower..=upper`.
#[derive(Debug, Clone)]
pub struct Bounds {
    pub lower: Vec<usize>,
    pub upper: Vec<usize>,
}

/// One level coarser: each free node merged with the free neighbour on its host it shares
/// the heaviest link with (if any is left unmatched). Returns the coarse graph, its parts and
/// movable flags, and the map from fine to coarse nodes.
pub(crate) fn coarsen(
    g: &Graph,
    part: &[usize],
    movable: &[bool],
) -> (Graph, Vec<usize>, Vec<bool>, Vec<usize>) {
    let n = g.len();
    let mut coarse_of = vec![usize::MAX; n];
    let mut next = 0;
    // Light nodes first, so that clusters grow evenly.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&v| (g.weight[v], v));
    for v in order {
        if coarse_of[v] != usize::MAX {
            continue;
        }
        coarse_of[v] = next;
        if movable[v] {
            let mate = g.adjacency[v]
                .iter()
                .filter(|&&(w, _)| coarse_of[w] == usize::MAX && movable[w] && part[w] == part[v])
                .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
                .map(|&(w, _)| w);
            if let Some(w) = mate {
                coarse_of[w] = next;
            }
        }
        next += 1;
    }
    let mut weight = vec![0; next];
    let mut coarse_part = vec![0; next];
    let mut coarse_movable = vec![true; next];
    // Each coarse node's members (one or two), then its links merged through a scratch
    // index (no hashing: this runs over every link on every level).
    let mut members: Vec<[usize; 2]> = vec![[usize::MAX; 2]; next];
    for v in 0..n {
        let c = coarse_of[v];
        weight[c] += g.weight[v];
        coarse_part[c] = part[v];
        coarse_movable[c] &= movable[v];
        let slot = usize::from(members[c][0] != usize::MAX);
        members[c][slot] = v;
    }
    let mut seen_by = vec![usize::MAX; next];
    let mut at = vec![0usize; next];
    let mut adjacency = Vec::with_capacity(next);
    for (c, pair) in members.iter().enumerate() {
        let mut list: Vec<(usize, usize)> = Vec::new();
        for &v in pair.iter().filter(|&&v| v != usize::MAX) {
            for &(w, lw) in &g.adjacency[v] {
                let cw = coarse_of[w];
                if cw == c {
                    continue;
                }
                if seen_by[cw] == c {
                    list[at[cw]].1 += lw;
                } else {
                    seen_by[cw] = c;
                    at[cw] = list.len();
                    list.push((cw, lw));
                }
            }
        }
        list.sort_unstable();
        adjacency.push(list);
    }
    let coarse = Graph { weight, adjacency };
    (coarse, coarse_part, coarse_movable, coarse_of)
}

/// Greedy passes on one level until a pass moves nothing (or `max_passes`).
pub(crate) fn refine_level(
    g: &Graph,
    part: &mut [usize],
    movable: &[bool],
    load: &mut [usize],
    bounds: &Bounds,
    max_passes: usize,
) -> usize {
    let mut moves = 0;
    // Link weight per host a node's neighbours are on: a few hosts per node, so a short list
    // beats a map.
    let mut links_to: Vec<(usize, usize)> = Vec::new();
    for _ in 0..max_passes {
        let mut moved = 0;
        for v in 0..g.len() {
            if !movable[v] {
                continue;
            }
            let here = part[v];
            links_to.clear();
            for &(w, lw) in &g.adjacency[v] {
                let p = part[w];
                match links_to.iter_mut().find(|(q, _)| *q == p) {
                    Some(entry) => entry.1 += lw,
                    None => links_to.push((p, lw)),
                }
            }
            let internal = links_to
                .iter()
                .find(|(p, _)| *p == here)
                .map_or(0, |&(_, n)| n);
            if links_to.len() == 1 && internal > 0 {
                continue; // inside its host: nothing to gain
            }
            let w = g.weight[v];
            if load[here] < bounds.lower[here] + w {
                continue;
            }
            // The host with the most of its links that has room; ties to the emptier.
            let best = links_to
                .iter()
                .filter(|&&(p, _)| p != here && load[p] + w <= bounds.upper[p])
                .max_by(|a, b| {
                    a.1.cmp(&b.1)
                        .then(load[b.0].cmp(&load[a.0]))
                        .then(b.0.cmp(&a.0))
                })
                .copied();
            let Some((to, external)) = best else {
                continue;
            };
            let gain = external as isize - internal as isize;
            // A move that cuts less, or as much but evens the hosts out.
            if gain > 0 || (gain == 0 && load[to] + w < load[here]) {
                part[v] = to;
                load[here] -= w;
                load[to] += w;
                moved += 1;
            }
        }
        moves += moved;
        if moved == 0 {
            break;
        }
    }
    moves
}

/// Brings every host within its bounds: a host over its upper bound gives the node whose
/// move costs least (links kept over links cut) to a host with room, preferring hosts it has
/// links to; a host under its lower bound takes the cheapest node from a host that can spare
/// one. Only free nodes move; stops when nothing can.
pub(crate) fn rebalance(
    g: &Graph,
    part: &mut [usize],
    movable: &[bool],
    load: &mut [usize],
    bounds: &Bounds,
) {
    let hosts = load.len();
    let links_to = |v: usize, h: usize, part: &[usize]| -> isize {
        g.adjacency[v]
            .iter()
            .filter(|&&(w, _)| part[w] == h)
            .map(|&(_, lw)| lw as isize)
            .sum()
    };
    for _ in 0..g.len() {
        let over = (0..hosts)
            .filter(|&h| load[h] > bounds.upper[h])
            .max_by_key(|&h| load[h] - bounds.upper[h]);
        let under = (0..hosts)
            .filter(|&h| load[h] < bounds.lower[h])
            .max_by_key(|&h| bounds.lower[h] - load[h]);
        // (gain, node, to)
        let mut best: Option<(isize, usize, usize)> = None;
        let mut consider = |gain: isize, v: usize, to: usize| {
            if best.is_none_or(|(g0, v0, t0)| {
                (gain, std::cmp::Reverse((v, to))) > (g0, std::cmp::Reverse((v0, t0)))
            }) {
                best = Some((gain, v, to));
            }
        };
        if let Some(h) = over {
            for v in (0..g.len()).filter(|&v| movable[v] && part[v] == h) {
                let w = g.weight[v];
                let stay = links_to(v, h, part);
                for t in (0..hosts).filter(|&t| t != h && load[t] + w <= bounds.upper[t]) {
                    consider(links_to(v, t, part) - stay, v, t);
                }
            }
        } else if let Some(h) = under {
            for v in (0..g.len()).filter(|&v| movable[v] && part[v] != h) {
                let (from, w) = (part[v], g.weight[v]);
                if load[from] < bounds.lower[from] + w {
                    continue;
                }
                consider(links_to(v, h, part) - links_to(v, from, part), v, h);
            }
        } else {
            return;
        }
        let Some((_, v, to)) = best else {
            return; // nothing can move: the bounds can't be met with these weights
        };
        let from = part[v];
        load[from] -= g.weight[v];
        load[to] += g.weight[v];
        part[v] = to;
    }
}

/// Coarsest levels stop here: a few nodes per host is enough to move clusters around.
const COARSEST_PER_HOST: usize = 8;
/// Passes of refinement per level: most of the gain comes in the first few.
const PASSES: usize = 8;

/// V-cycles at most: each coarsens along the parts the last one left, so clusters that
/// could not move before may now.
const CYCLES: usize = 4;

/// Refines `part` over the graph's levels, again while a cycle still lowers the cut; returns
/// the refined parts.
pub fn refine(g: &Graph, part: Vec<usize>, movable: &[bool], bounds: &Bounds) -> Vec<usize> {
    let refined = refine_start(g, part, movable, bounds);
    // With every node free, a placement made afresh on the whole graph's levels competes
    // (it finds straight cuts that a start's regions hide); the lower cut wins.
    if !movable.iter().all(|&m| m) || bounds.upper.len() < 2 {
        return refined;
    }
    let fresh = refine_start(g, crate::bisect::partition(g, bounds), movable, bounds);
    let within = |part: &[usize]| {
        let mut load = vec![0usize; bounds.upper.len()];
        for (v, &p) in part.iter().enumerate() {
            load[p] += g.weight[v];
        }
        (0..load.len()).all(|h| (bounds.lower[h]..=bounds.upper[h]).contains(&load[h]))
    };
    if within(&fresh) && (g.cut(&fresh) < g.cut(&refined) || !within(&refined)) {
        fresh
    } else {
        refined
    }
}

/// Refines a start by V-cycles while a cycle lowers the cut.
fn refine_start(g: &Graph, mut part: Vec<usize>, movable: &[bool], bounds: &Bounds) -> Vec<usize> {
    let mut cut = g.cut(&part);
    for _ in 0..CYCLES {
        let next = cycle(g, part.clone(), movable, bounds);
        let next_cut = g.cut(&next);
        if next_cut >= cut {
            break;
        }
        (part, cut) = (next, next_cut);
    }
    part
}

/// One V-cycle: down through coarser graphs, refining on the way back up.
fn cycle(g: &Graph, mut part: Vec<usize>, movable: &[bool], bounds: &Bounds) -> Vec<usize> {
    let hosts = bounds.upper.len();
    let mut load = vec![0usize; hosts];
    for v in 0..g.len() {
        if movable[v] {
            load[part[v]] += g.weight[v];
        }
    }
    // Down: coarser graphs until they stop shrinking or are small enough.
    let mut levels: Vec<(Graph, Vec<bool>, Vec<usize>)> = Vec::new();
    let mut graph = g.clone();
    let mut moving = movable.to_vec();
    while graph.len() > COARSEST_PER_HOST * hosts {
        let (coarse, coarse_part, coarse_movable, map) = coarsen(&graph, &part, &moving);
        if coarse.len() * 10 > graph.len() * 9 {
            break; // under 10 % smaller: little left to merge
        }
        levels.push((graph, moving, map));
        graph = coarse;
        part = coarse_part;
        moving = coarse_movable;
    }
    // Up: refine, project onto the finer level, refine again.
    refine_level(&graph, &mut part, &moving, &mut load, bounds, PASSES);
    while let Some((finer, finer_moving, map)) = levels.pop() {
        part = map.iter().map(|&c| part[c]).collect();
        refine_level(&finer, &mut part, &finer_moving, &mut load, bounds, PASSES);
        graph = finer;
        moving = finer_moving;
    }
    let _ = (graph, moving);
    part
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(target: &[usize], slack: usize) -> Bounds {
        Bounds {
            lower: target.iter().map(|t| t.saturating_sub(slack)).collect(),
            upper: target.iter().map(|t| t + slack).collect(),
        }
    }

    /// Two cliques of 6 joined by one link, split badly: refinement finds the planted cut.
    #[test]
    fn a_planted_partition_is_found_and_balance_kept() {
        let mut edges = Vec::new();
        for base in [0, 6] {
            for a in 0..6 {
                for b in a + 1..6 {
                    edges.push((base + a, base + b));
                }
            }
        }
        edges.push((5, 6));
        let g = Graph::from_edges(12, edges);
        // Half of each clique on each host.
        let part: Vec<usize> = (0..12).map(|v| (v / 3) % 2).collect();
        assert!(g.cut(&part) > 1);
        let refined = refine(&g, part, &[true; 12], &bounds(&[6, 6], 1));
        assert_eq!(g.cut(&refined), 1, "{refined:?}");
        let on_first = refined.iter().filter(|&&p| p == refined[0]).count();
        assert_eq!(on_first, 6);
    }

    #[test]
    fn fixed_nodes_stay_and_bounds_hold() {
        // A path 0-1-2-3-4-5 with node 2 fixed on host 1 and the rest on host 0.
        let g = Graph::from_edges(6, [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]);
        let part = vec![0, 0, 1, 0, 0, 0];
        let movable = [true, true, false, true, true, true];
        let refined = refine(&g, part, &movable, &bounds(&[5, 0], 1));
        assert_eq!(refined[2], 1, "a fixed node moved");
        let on_1 = (0..6).filter(|&v| v != 2 && refined[v] == 1).count();
        assert!(on_1 <= 1, "host 1 went past its bound: {refined:?}");
        assert!(g.cut(&refined) <= 2);
    }

    /// A ring of 400 cut into 4 hosts by taking every fourth node: the worst start. Coarse
    /// levels cannot merge across hosts, so refinement alone must untangle it, without
    /// leaving anyone's bounds.
    #[test]
    fn a_scattered_ring_is_gathered_within_bounds() {
        let n = 400;
        let g = Graph::from_edges(n, (0..n).map(|v| (v, (v + 1) % n)));
        let part: Vec<usize> = (0..n).map(|v| v % 4).collect();
        let b = bounds(&[100; 4], 3);
        let refined = refine(&g, part.clone(), &vec![true; n], &b);
        assert!(g.cut(&refined) < g.cut(&part) / 2, "{}", g.cut(&refined));
        for h in 0..4 {
            let size = refined.iter().filter(|&&p| p == h).count();
            assert!((97..=103).contains(&size), "host {h}: {size}");
        }
    }
}
