//! A placement made afresh, the way multilevel partitioners such as METIS make one: the whole
//! graph is coarsened by heavy-edge matching (whatever any start said), the coarsest graph is
//! cut by recursive bisection (greedy graph growing from several seeds, then
//! Fiduccia–Mattheyses passes), and the parts are carried back down level by level, refined
//! on each ([`crate::refine`]). Used when every node is free to move; it competes with the
//! refined start, and the lower cut wins.

use crate::refine::{Bounds, Graph, coarsen, rebalance, refine_level};

/// The coarsest graph has about this many nodes per host (and at least `COARSEST_MIN`):
/// enough for bisection to find straight cuts, few enough to try several seeds.
const COARSEST_PER_HOST: usize = 20;
const COARSEST_MIN: usize = 120;
/// Seeds tried per bisection.
const SEEDS: usize = 6;
/// Fiduccia–Mattheyses passes per bisection.
const FM_PASSES: usize = 6;
/// Refinement passes per level on the way up.
const PASSES: usize = 8;

/// A partition of `g` (every node free) into the hosts of `bounds`, each host's weight its
/// share (the middle of its bounds) as nearly as the coarse weights allow, then within its
/// bounds at the finest level.
pub fn partition(g: &Graph, bounds: &Bounds) -> Vec<usize> {
    let hosts = bounds.upper.len();
    let target: Vec<usize> = (0..hosts)
        .map(|h| (bounds.lower[h] + bounds.upper[h]) / 2)
        .collect();
    let free = vec![true; g.weight.len()];
    // Down: coarser graphs while they shrink, to the size bisection works on. Every node is
    // on "host 0" for the matching, so it merges across any start.
    let floor = (COARSEST_PER_HOST * hosts).max(COARSEST_MIN);
    let mut levels: Vec<(Graph, Vec<usize>)> = Vec::new();
    let mut graph = g.clone();
    while graph.weight.len() > floor {
        let n = graph.weight.len();
        let (coarse, _, _, map) = coarsen(&graph, &vec![0; n], &free[..n]);
        if coarse.weight.len() * 10 > n * 9 {
            break;
        }
        levels.push((graph, map));
        graph = coarse;
    }
    // The coarsest graph, cut in two again and again.
    let mut part = vec![0usize; graph.weight.len()];
    let nodes: Vec<usize> = (0..graph.weight.len()).collect();
    split(&graph, &nodes, 0, &target, &mut part);
    let mut load = vec![0usize; hosts];
    for (v, &p) in part.iter().enumerate() {
        load[p] += graph.weight[v];
    }
    // Up: project and refine on every level. Coarse weights can't meet the bounds exactly:
    // coarse levels keep the balance (no host past its bound or what it has), the finest
    // level is brought within the bounds, then refined within them.
    loop {
        let n = graph.weight.len();
        if levels.is_empty() {
            rebalance(&graph, &mut part, &free[..n], &mut load, bounds);
            refine_level(&graph, &mut part, &free[..n], &mut load, bounds, PASSES);
            return part;
        }
        let held = keep_balance(&load, bounds);
        refine_level(&graph, &mut part, &free[..n], &mut load, &held, PASSES);
        let (finer, map) = levels.pop().expect("not empty");
        part = map.iter().map(|&c| part[c]).collect();
        graph = finer;
    }
}

/// Bounds for a coarse level: each host may take up to its bound or what it holds now
/// (whichever is more), and give down to its lower bound or what it holds.
fn keep_balance(load: &[usize], bounds: &Bounds) -> Bounds {
    Bounds {
        lower: load
            .iter()
            .zip(&bounds.lower)
            .map(|(&l, &b)| l.min(b))
            .collect(),
        upper: load
            .iter()
            .zip(&bounds.upper)
            .map(|(&l, &b)| l.max(b))
            .collect(),
    }
}

/// Assigns `nodes` to hosts `first..first + target.len()`: halves of the hosts get halves of
/// the weight, recursively.
fn split(g: &Graph, nodes: &[usize], first: usize, target: &[usize], part: &mut [usize]) {
    if target.len() <= 1 || nodes.len() <= 1 {
        for &v in nodes {
            part[v] = first;
        }
        return;
    }
    let half = target.len() / 2;
    let left_share: usize = target[..half].iter().sum();
    let total_share: usize = target.iter().sum::<usize>().max(1);
    let weight: usize = nodes.iter().map(|&v| g.weight[v]).sum();
    let left_weight = (weight as u128 * left_share as u128 / total_share as u128) as usize;
    let side = bisect(g, nodes, left_weight);
    let mut left = Vec::new();
    let mut right = Vec::new();
    for (&v, on_left) in nodes.iter().zip(side) {
        if on_left {
            left.push(v);
        } else {
            right.push(v);
        }
    }
    split(g, &left, first, &target[..half], part);
    split(g, &right, first + half, &target[half..], part);
}

/// Two sides of `nodes` (true: left, in the order of `nodes`) with the left weighing about
/// `left_weight`, cutting as few link weights between them as the tries find.
fn bisect(g: &Graph, nodes: &[usize], left_weight: usize) -> Vec<bool> {
    let mut inside = vec![usize::MAX; g.weight.len()];
    for (i, &v) in nodes.iter().enumerate() {
        inside[v] = i;
    }
    let n = nodes.len();
    // The subgraph on `nodes`, by local index.
    let adj: Vec<Vec<(usize, usize)>> = nodes
        .iter()
        .map(|&v| {
            g.adjacency[v]
                .iter()
                .filter(|&&(w, _)| inside[w] != usize::MAX)
                .map(|&(w, lw)| (inside[w], lw))
                .collect()
        })
        .collect();
    let weight: Vec<usize> = nodes.iter().map(|&v| g.weight[v]).collect();
    let total: usize = weight.iter().sum();
    let max_node = weight.iter().copied().max().unwrap_or(1);
    // Seeds: a far node (from a sweep), then spread deterministically.
    let mut seeds = vec![farthest(&adj, 0)];
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ n as u64;
    while seeds.len() < SEEDS.min(n) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let s = (state % n as u64) as usize;
        if !seeds.contains(&s) {
            seeds.push(s);
        }
    }
    let mut best: Option<(usize, Vec<bool>)> = None;
    for seed in seeds {
        let mut left = grow(&adj, &weight, seed, left_weight);
        fm(&adj, &weight, &mut left, left_weight, total, max_node);
        let cut = cut_of(&adj, &left);
        if best.as_ref().is_none_or(|(c, _)| cut < *c) {
            best = Some((cut, left));
        }
    }
    best.map(|(_, l)| l).unwrap_or_else(|| vec![true; n])
}

fn cut_of(adj: &[Vec<(usize, usize)>], left: &[bool]) -> usize {
    let mut cut = 0;
    for (v, list) in adj.iter().enumerate() {
        for &(w, lw) in list {
            if w > v && left[v] != left[w] {
                cut += lw;
            }
        }
    }
    cut
}

/// The last node a breadth-first sweep from `start` reaches (a peripheral node).
fn farthest(adj: &[Vec<(usize, usize)>], start: usize) -> usize {
    let mut seen = vec![false; adj.len()];
    let mut queue = std::collections::VecDeque::from([start]);
    seen[start] = true;
    let mut last = start;
    while let Some(v) = queue.pop_front() {
        last = v;
        for &(w, _) in &adj[v] {
            if !seen[w] {
                seen[w] = true;
                queue.push_back(w);
            }
        }
    }
    last
}

/// Greedy graph growing: from `seed`, add the frontier node with the most links into the
/// region (fewest out of it) until the region weighs `left_weight`; other components are
/// entered from their lowest node when the frontier runs dry.
fn grow(
    adj: &[Vec<(usize, usize)>],
    weight: &[usize],
    seed: usize,
    left_weight: usize,
) -> Vec<bool> {
    let n = adj.len();
    let mut left = vec![false; n];
    // gain[v]: links into the region minus links elsewhere, for frontier nodes.
    let mut gain: Vec<isize> = adj
        .iter()
        .map(|l| -(l.iter().map(|&(_, lw)| lw as isize).sum::<isize>()))
        .collect();
    let mut frontier = std::collections::BTreeSet::<(isize, std::cmp::Reverse<usize>)>::new();
    let mut on_frontier = vec![false; n];
    let mut have = 0usize;
    let mut next = Some(seed);
    // Where to look for a node of another component (everything below is taken).
    let mut scan = 0usize;
    while have < left_weight {
        let v = match next.take() {
            Some(v) => v,
            None => match frontier.pop_last() {
                Some((_, std::cmp::Reverse(v))) => {
                    on_frontier[v] = false;
                    v
                }
                None => {
                    while scan < n && left[scan] {
                        scan += 1;
                    }
                    if scan == n {
                        break;
                    }
                    scan
                }
            },
        };
        if left[v] {
            continue;
        }
        if have + weight[v] > left_weight
            && have > 0
            && have + weight[v] - left_weight > left_weight - have
        {
            break; // taking it would overshoot more than stopping short
        }
        left[v] = true;
        have += weight[v];
        for &(w, lw) in &adj[v] {
            if left[w] {
                continue;
            }
            if on_frontier[w] {
                frontier.remove(&(gain[w], std::cmp::Reverse(w)));
            }
            gain[w] += 2 * lw as isize;
            frontier.insert((gain[w], std::cmp::Reverse(w)));
            on_frontier[w] = true;
        }
    }
    left
}

/// Fiduccia–Mattheyses passes: moves one node at a time (the best gain whose move keeps
/// the left side within a node's weight and 3 % of `left_weight`), each node once per
/// pass, even when the gain is negative, then keeps the best prefix of the moves.
fn fm(
    adj: &[Vec<(usize, usize)>],
    weight: &[usize],
    left: &mut [bool],
    left_weight: usize,
    total: usize,
    max_node: usize,
) {
    let n = adj.len();
    let slack = (left_weight.min(total - left_weight) * 3 / 100).max(max_node);
    let lo = left_weight.saturating_sub(slack);
    let hi = left_weight + slack;
    for _ in 0..FM_PASSES {
        let mut have: usize = (0..n).filter(|&v| left[v]).map(|v| weight[v]).sum();
        // gain[v]: how much the cut drops if v changes side.
        let mut gain: Vec<isize> = (0..n)
            .map(|v| {
                adj[v]
                    .iter()
                    .map(|&(w, lw)| {
                        if left[w] == left[v] {
                            -(lw as isize)
                        } else {
                            lw as isize
                        }
                    })
                    .sum()
            })
            .collect();
        // Only nodes on the border can gain; the others join as neighbours move.
        let mut queued: Vec<bool> = (0..n)
            .map(|v| adj[v].iter().any(|&(w, _)| left[w] != left[v]))
            .collect();
        let mut queue: std::collections::BTreeSet<(isize, std::cmp::Reverse<usize>)> = (0..n)
            .filter(|&v| queued[v])
            .map(|v| (gain[v], std::cmp::Reverse(v)))
            .collect();
        let mut locked = vec![false; n];
        let mut moves: Vec<usize> = Vec::new();
        let balanced = |have: usize| (lo..=hi).contains(&have);
        // The best prefix: balanced before unbalanced, then the most gain.
        let mut running = 0isize;
        let mut best = (balanced(have), 0isize);
        let mut best_at = 0usize;
        let mut skipped: Vec<usize> = Vec::new();
        while let Some(entry) = queue.pop_last() {
            let v = entry.1.0;
            let after = if left[v] {
                have - weight[v]
            } else {
                have + weight[v]
            };
            // A move that leaves the balance is skipped (unless it brings it closer).
            let closer = after.abs_diff(left_weight) < have.abs_diff(left_weight);
            if !balanced(after) && !closer {
                queued[v] = false;
                skipped.push(v);
                continue;
            }
            queued[v] = false;
            locked[v] = true;
            left[v] = !left[v];
            have = after;
            running += gain[v];
            gain[v] = -gain[v];
            moves.push(v);
            if (balanced(have), running) > best {
                best = (balanced(have), running);
                best_at = moves.len();
            }
            for &(w, lw) in &adj[v] {
                if locked[w] {
                    continue;
                }
                if queued[w] {
                    queue.remove(&(gain[w], std::cmp::Reverse(w)));
                }
                // v now on w's side: the link no longer cut (gain falls), or now cut.
                gain[w] += if left[w] == left[v] { -2 } else { 2 } * lw as isize;
                queue.insert((gain[w], std::cmp::Reverse(w)));
                queued[w] = true;
            }
            // Skipped nodes get another look once the balance has moved.
            for s in skipped.drain(..) {
                if !locked[s] && !queued[s] {
                    queue.insert((gain[s], std::cmp::Reverse(s)));
                    queued[s] = true;
                }
            }
            if moves.len() > best_at + n / 4 + 50 {
                break; // far past the best: the rest will not come back
            }
        }
        // Undo the moves after the best prefix.
        for &v in &moves[best_at..] {
            left[v] = !left[v];
        }
        if best_at == 0 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(side: usize) -> Graph {
        let mut edges = Vec::new();
        for r in 0..side {
            for c in 0..side {
                let v = r * side + c;
                if c + 1 < side {
                    edges.push((v, v + 1));
                }
                if r + 1 < side {
                    edges.push((v, v + side));
                }
            }
        }
        Graph::from_edges(side * side, edges)
    }

    fn even(n: usize, hosts: usize) -> Bounds {
        let share = n / hosts;
        let slack = (share * 3 / 100).max(1);
        Bounds {
            lower: vec![share - slack; hosts],
            upper: vec![share + slack; hosts],
        }
    }

    fn sizes(part: &[usize], hosts: usize) -> Vec<usize> {
        let mut s = vec![0; hosts];
        for &p in part {
            s[p] += 1;
        }
        s
    }

    /// A 40×40 grid in two and in four: the straight cuts (40 and 80 links), or nearly, within
    /// the bounds.
    #[test]
    fn a_grid_is_cut_nearly_straight_within_bounds() {
        let g = grid(40);
        for (hosts, straight) in [(2, 40), (4, 80)] {
            let b = even(1600, hosts);
            let part = partition(&g, &b);
            let cut = g.cut(&part);
            assert!(cut <= straight * 11 / 10, "{hosts} hosts: cut {cut}");
            for (h, &s) in sizes(&part, hosts).iter().enumerate() {
                assert!((b.lower[h]..=b.upper[h]).contains(&s), "host {h}: {s}");
            }
        }
    }

    /// Two random clusters of 150 (each node linked to 4 others of its own) joined by 5
    /// links: the planted cut is found.
    #[test]
    fn a_planted_partition_is_found_from_scratch() {
        let mut edges = Vec::new();
        let mut state = 12345u64;
        let mut next = |m: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % m as u64) as usize
        };
        for base in [0, 150] {
            for v in 0..150 {
                for _ in 0..4 {
                    edges.push((base + v, base + next(150)));
                }
            }
        }
        for i in 0..5 {
            edges.push((i * 7, 150 + i * 11));
        }
        let g = Graph::from_edges(300, edges);
        let part = partition(&g, &even(300, 2));
        assert_eq!(g.cut(&part), 5);
        assert!(part[..150].iter().all(|&p| p == part[0]));
    }
}
