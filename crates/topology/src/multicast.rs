//! Multicast trees: which neighbours each node copies a group's packets to.
//!
//! A group has one source (an (S,G) group) and a set of members. Its packets take one of the
//! group's trees, chosen per flow by weighted rendezvous hashing over the flow hash (so every
//! node on the way picks the same tree without being told, and adding or removing a tree moves
//! only the flows that go to or come from it). A node copies a packet only to its children on
//! the chosen tree: one copy per tree edge, and each member gets each packet once.
//!
//! The default tree is built as PIM-SM builds a shortest-path tree: each member joins along its
//! own route towards the source (the unicast tables' next hop towards the source, one of the
//! equal-cost ones chosen by the group and node), until it meets the tree. Every node then has
//! one parent, so the union of the joins is a tree. Trees set from outside (`SetGroupRoutes`,
//! several with `tree_id` and `weight`) are checked to be trees rooted at the source, then
//! pruned to the branches that lead to members.
//!
//! [`build`] gives each node's [`GroupEntry`]; [`changed`] compares two builds so that only the
//! nodes whose entries differ are sent theirs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::Topology;
use crate::routing::RouteTable;

/// The tree id of the default shortest-path tree.
pub const DEFAULT_TREE: u32 = 0;

/// A tree set from outside: edges from parent to child, rooted at the group's source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeSpec {
    #[serde(default)]
    pub tree_id: u32,
    /// The share of flows this tree takes, relative to the group's other trees.
    #[serde(default = "one")]
    pub weight: f64,
    pub edges: Vec<(u32, u32)>,
}

fn one() -> f64 {
    1.0
}

/// One of a group's trees, at one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeHop {
    pub tree_id: u32,
    pub weight: f64,
    /// The neighbour this tree's packets arrive from; None at the source and at nodes the tree
    /// does not reach (their packets on this tree are dropped: they can only be stray copies).
    pub parent: Option<u32>,
    /// Where this node copies the tree's packets to.
    pub children: Vec<u32>,
}

/// What one node does with one group's packets. Every node of a group holds all of its trees
/// (ids and weights), so that each picks the same tree for a flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupEntry {
    pub group: Ipv4Addr,
    pub source: u32,
    /// The node takes the group's packets up its TUN device.
    pub member: bool,
    pub trees: Vec<TreeHop>,
}

impl GroupEntry {
    /// The tree a flow takes: the highest weighted rendezvous score.
    pub fn tree_for(&self, flow_hash: u64) -> Option<&TreeHop> {
        // Most groups have one tree: no scores to compute per packet.
        if let [only] = &self.trees[..] {
            return Some(only);
        }
        let i = pick_tree(self.trees.iter().map(|t| (t.tree_id, t.weight)), flow_hash)?;
        self.trees.get(i)
    }
}

/// The index of the tree a flow takes among `(tree_id, weight)`: weighted rendezvous hashing
/// (each tree scores `-weight / ln(u)`, `u` uniform in (0, 1) from the flow and the tree id).
pub fn pick_tree(trees: impl IntoIterator<Item = (u32, f64)>, flow_hash: u64) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, (id, weight)) in trees.into_iter().enumerate() {
        let h = mix(flow_hash ^ (u64::from(id) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let u = ((h >> 11) as f64 + 1.0) / ((1u64 << 53) as f64 + 2.0);
        let score = -weight.max(0.0) / u.ln();
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((i, score));
        }
    }
    best.map(|(i, _)| i)
}

/// SplitMix64's finaliser: flow hashes differ in few bits, scores must not.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A group as the controller keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub group: Ipv4Addr,
    pub source: u32,
    pub members: BTreeSet<u32>,
    /// Trees set from outside; none: the shortest-path tree.
    pub trees: Option<Vec<TreeSpec>>,
}

/// One tree as built: its edges (pruned to members) and the members it does not reach.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuiltTree {
    pub tree_id: u32,
    pub weight: f64,
    pub edges: Vec<(u32, u32)>,
    pub unreached: Vec<u32>,
}

/// A group's trees and every node's entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Built {
    pub trees: Vec<BuiltTree>,
    pub entries: BTreeMap<u32, GroupEntry>,
}

/// Checks trees set from outside for a group of `source` in `topology`: each a tree of its
/// links rooted at the source (every other node has at most one parent and is reached from
/// the source), ids distinct, weights positive.
pub fn check_trees(topology: &Topology, source: u32, trees: &[TreeSpec]) -> Result<(), String> {
    let n = topology.n_nodes();
    if trees.is_empty() {
        return Err("no trees given (to go back to the shortest-path tree, clear them)".into());
    }
    let mut ids = BTreeSet::new();
    for t in trees {
        let id = t.tree_id;
        if !ids.insert(id) {
            return Err(format!("tree {id} is given twice"));
        }
        if !(t.weight.is_finite() && t.weight > 0.0) {
            return Err(format!("tree {id}: weight {} must be above 0", t.weight));
        }
        let mut parent = BTreeMap::new();
        for &(a, b) in &t.edges {
            for x in [a, b] {
                if x == 0 || x > n {
                    return Err(format!("tree {id}: node {x} is not a node (1..={n})"));
                }
            }
            if a == b {
                return Err(format!("tree {id}: edge ({a}, {a}) links a node to itself"));
            }
            if !topology.has_edge(a, b) {
                return Err(format!(
                    "tree {id}: there is no link between nodes {a} and {b} in {}: a tree follows links",
                    topology.label
                ));
            }
            if b == source {
                return Err(format!(
                    "tree {id}: edge ({a}, {b}) leads into the source {source}: a tree's edges go from the source outwards"
                ));
            }
            if let Some(p) = parent.insert(b, a)
                && p != a
            {
                return Err(format!(
                    "tree {id}: node {b} has two parents ({p} and {a}), so it would get every packet twice"
                ));
            }
        }
        for &child in parent.keys() {
            let mut at = child;
            let mut steps = 0;
            while at != source {
                match parent.get(&at) {
                    Some(&p) if steps <= parent.len() => {
                        at = p;
                        steps += 1;
                    }
                    Some(_) => return Err(format!("tree {id}: its edges make a cycle")),
                    None => {
                        return Err(format!(
                            "tree {id}: node {child} is not reached from the source {source} (node {at} has no parent)"
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The shortest-path tree of `source` to `members` over the unicast `tables` (index `id - 1`):
/// each member's reverse path, until it meets the tree. Returns the edges (parent, child)
/// and the members with no route to the source.
fn shortest_path_tree(
    group: Ipv4Addr,
    source: u32,
    members: &BTreeSet<u32>,
    tables: &[RouteTable],
) -> (Vec<(u32, u32)>, Vec<u32>) {
    let mut parent: BTreeMap<u32, u32> = BTreeMap::new();
    let mut unreached = Vec::new();
    let salt = u64::from(u32::from(group));
    for &m in members {
        if m == source || parent.contains_key(&m) {
            continue;
        }
        let mut branch = Vec::new();
        let mut at = m;
        let joined = loop {
            if at == source || parent.contains_key(&at) {
                break true;
            }
            let hops = tables
                .get(at as usize - 1)
                .and_then(|t| t.lookup(source))
                .unwrap_or(&[]);
            if hops.is_empty() {
                break false;
            }
            let p = hops[(mix(salt ^ u64::from(at)) % hops.len() as u64) as usize];
            if p == m || branch.iter().any(|&(_, c)| c == p) {
                break false; // a loop in the tables while they change
            }
            branch.push((p, at));
            at = p;
        };
        if joined {
            for (p, c) in branch {
                parent.insert(c, p);
            }
        } else {
            unreached.push(m);
        }
    }
    let mut edges: Vec<(u32, u32)> = parent.into_iter().map(|(c, p)| (p, c)).collect();
    edges.sort_unstable();
    (edges, unreached)
}

/// A tree given from outside, cut to the branches that lead to members (it was checked by
/// [`check_trees`]). Returns the edges kept and the members it does not reach.
fn prune(
    source: u32,
    members: &BTreeSet<u32>,
    edges: &[(u32, u32)],
) -> (Vec<(u32, u32)>, Vec<u32>) {
    let parent: BTreeMap<u32, u32> = edges.iter().map(|&(a, b)| (b, a)).collect();
    let mut kept = BTreeSet::new();
    let mut unreached = Vec::new();
    for &m in members {
        if m == source {
            continue;
        }
        if !parent.contains_key(&m) {
            unreached.push(m);
            continue;
        }
        let mut at = m;
        while let Some(&p) = parent.get(&at) {
            if !kept.insert((p, at)) {
                break;
            }
            at = p;
        }
    }
    (kept.into_iter().collect(), unreached)
}

/// The group's trees and each node's entry, over the unicast `tables` (for the default tree).
pub fn build(group: &Group, tables: &[RouteTable]) -> Built {
    build_over(group, tables, |_, _| true).0
}

/// As [`build`], over only the links for which `carries(parent, child)` holds: a tree edge
/// over any other link is cut, and so is what hangs below it, its members unreached (a
/// shortest-path tree that routes move onto a link that carries no groups, such as a kernel
/// link between two max-mode nodes). Also returns the edges cut.
pub fn build_over(
    group: &Group,
    tables: &[RouteTable],
    carries: impl Fn(u32, u32) -> bool,
) -> (Built, Vec<(u32, u32)>) {
    let mut built = build_trees(group, tables);
    let mut cut = Vec::new();
    for t in &mut built {
        let before = cut.len();
        cut.extend(t.edges.iter().copied().filter(|&(a, b)| !carries(a, b)));
        if cut.len() == before {
            continue;
        }
        let usable: Vec<(u32, u32)> = t
            .edges
            .iter()
            .copied()
            .filter(|&(a, b)| carries(a, b))
            .collect();
        let (edges, unreached) = prune(
            group.source,
            &group.members,
            &reached_from(group.source, &usable),
        );
        t.edges = edges;
        t.unreached = unreached;
    }
    (entries(group, built), cut)
}

/// The edges of `edges` that a walk from `source` along them reaches.
fn reached_from(source: u32, edges: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let mut reached = BTreeSet::from([source]);
    let mut frontier = vec![source];
    let mut kept = Vec::new();
    while let Some(node) = frontier.pop() {
        for &(a, b) in edges.iter().filter(|e| e.0 == node) {
            if reached.insert(b) {
                kept.push((a, b));
                frontier.push(b);
            }
        }
    }
    kept
}

/// Each tree of the group, built (shortest paths) or pruned (given from outside).
fn build_trees(group: &Group, tables: &[RouteTable]) -> Vec<BuiltTree> {
    match &group.trees {
        None => {
            let (edges, unreached) =
                shortest_path_tree(group.group, group.source, &group.members, tables);
            vec![BuiltTree {
                tree_id: DEFAULT_TREE,
                weight: 1.0,
                edges,
                unreached,
            }]
        }
        Some(specs) => specs
            .iter()
            .map(|t| {
                let (edges, unreached) = prune(group.source, &group.members, &t.edges);
                BuiltTree {
                    tree_id: t.tree_id,
                    weight: t.weight,
                    edges,
                    unreached,
                }
            })
            .collect(),
    }
}

/// Each node's entry for the group's `trees`.
fn entries(group: &Group, trees: Vec<BuiltTree>) -> Built {
    let mut nodes: BTreeSet<u32> = BTreeSet::from([group.source]);
    for t in &trees {
        for &(a, b) in &t.edges {
            nodes.insert(a);
            nodes.insert(b);
        }
    }
    let entries = nodes
        .into_iter()
        .map(|node| {
            let hops = trees
                .iter()
                .map(|t| TreeHop {
                    tree_id: t.tree_id,
                    weight: t.weight,
                    parent: t.edges.iter().find(|e| e.1 == node).map(|e| e.0),
                    children: t
                        .edges
                        .iter()
                        .filter(|e| e.0 == node)
                        .map(|e| e.1)
                        .collect(),
                })
                .collect();
            let entry = GroupEntry {
                group: group.group,
                source: group.source,
                member: group.members.contains(&node),
                trees: hops,
            };
            (node, entry)
        })
        .collect();
    Built { trees, entries }
}

/// What changes between two builds of a group: the entries to set (node, entry) and the nodes
/// that no longer take part.
pub fn changed(
    old: &BTreeMap<u32, GroupEntry>,
    new: &BTreeMap<u32, GroupEntry>,
) -> (Vec<(u32, GroupEntry)>, Vec<u32>) {
    let set = new
        .iter()
        .filter(|(n, e)| old.get(n) != Some(e))
        .map(|(n, e)| (*n, e.clone()))
        .collect();
    let removed = old
        .keys()
        .filter(|n| !new.contains_key(n))
        .copied()
        .collect();
    (set, removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Preset;
    use crate::routing::shortest_path_tables;

    const G: Ipv4Addr = Ipv4Addr::new(239, 255, 0, 1);

    fn group(source: u32, members: &[u32]) -> Group {
        Group {
            group: G,
            source,
            members: members.iter().copied().collect(),
            trees: None,
        }
    }

    /// Follows the tree a flow takes from the source and counts what each node gets.
    fn deliveries(built: &Built, source: u32, flow_hash: u64) -> BTreeMap<u32, u32> {
        let mut got = BTreeMap::new();
        let mut stack = vec![source];
        while let Some(at) = stack.pop() {
            let e = &built.entries[&at];
            let t = e.tree_for(flow_hash).unwrap();
            for &c in &t.children {
                *got.entry(c).or_default() += 1;
                assert_eq!(
                    built.entries[&c].tree_for(flow_hash).unwrap().parent,
                    Some(at)
                );
                stack.push(c);
            }
        }
        got
    }

    #[test]
    fn the_shortest_path_tree_reaches_every_member_once_and_copies_only_where_it_branches() {
        // fat_tree(k=4): 16 servers, 20 switches; every server is two to six hops away.
        let topo = Preset::FatTree { k: 4 }.build().unwrap();
        let tables = shortest_path_tables(&topo);
        let servers: Vec<u32> = (1..=topo.n_nodes())
            .filter(|&n| topo.adjacency()[n as usize - 1].len() == 1)
            .collect();
        assert_eq!(servers.len(), 16);
        let members: Vec<u32> = servers[1..9].to_vec();
        let g = group(servers[0], &members);
        let built = build(&g, &tables);
        assert!(built.trees[0].unreached.is_empty());
        for flow in 0..64 {
            let got = deliveries(&built, g.source, flow);
            for m in &members {
                assert_eq!(got.get(m), Some(&1), "member {m} once");
            }
            // Every node the tree reaches gets one copy, and it is a tree: edges = nodes - 1.
            assert!(got.values().all(|&c| c == 1));
            assert_eq!(built.trees[0].edges.len(), got.len());
        }
        // Each edge is a link, and leaves the tree only towards members.
        for &(a, b) in &built.trees[0].edges {
            assert!(topo.adjacency()[a as usize - 1].contains(&b));
        }
        let leaves: BTreeSet<u32> = built.trees[0]
            .edges
            .iter()
            .map(|e| e.1)
            .filter(|n| built.entries[n].trees[0].children.is_empty())
            .collect();
        assert_eq!(leaves, members.iter().copied().collect());
        // The server's edge switch is reached once, however many members lie behind it.
        let branching = built
            .entries
            .values()
            .filter(|e| e.trees[0].children.len() > 1)
            .count();
        assert!(branching >= 2, "{built:?}");
    }

    #[test]
    fn a_member_joining_or_leaving_changes_only_the_nodes_on_its_branch() {
        // A line 1-2-3-4-5 with a spur 3-6: members 5, then 6 joins.
        let topo = crate::Topology::new("t", 6, [(1, 2), (2, 3), (3, 4), (4, 5), (3, 6)]).unwrap();
        let tables = shortest_path_tables(&topo);
        let before = build(&group(1, &[5]), &tables);
        let after = build(&group(1, &[5, 6]), &tables);
        let (set, removed) = changed(&before.entries, &after.entries);
        let nodes: Vec<u32> = set.iter().map(|s| s.0).collect();
        // Node 3 copies to 6 now, and 6 is new; 1, 2, 4, 5 are as they were.
        assert_eq!(nodes, vec![3, 6]);
        assert!(removed.is_empty());
        // 5 leaves: its branch beyond 3 goes, and 3 stops copying to 4.
        let left = build(&group(1, &[6]), &tables);
        let (set, removed) = changed(&after.entries, &left.entries);
        assert_eq!(set.iter().map(|s| s.0).collect::<Vec<_>>(), vec![3]);
        assert_eq!(removed, vec![4, 5]);
    }

    #[test]
    fn a_link_down_moves_the_tree_to_the_routes_that_remain() {
        // A ring of 6 from 1 to member 3: over 2, or over 6-5-4 once 1-2 is down.
        let topo = Preset::Ring { n: 6 }.build().unwrap();
        let mut router = crate::routing::Router::new(
            &topo,
            crate::routing::Metric::Hops,
            |_, _| Some(0),
            Vec::new(),
        );
        let g = group(1, &[3]);
        let before = build(&g, router.tables());
        assert_eq!(before.trees[0].edges, vec![(1, 2), (2, 3)]);
        router.set_link(1, 2, None, None);
        let after = build(&g, router.tables());
        assert_eq!(after.trees[0].edges, vec![(1, 6), (4, 3), (5, 4), (6, 5)]);
        let (set, removed) = changed(&before.entries, &after.entries);
        assert_eq!(
            set.iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![1, 3, 4, 5, 6]
        );
        assert_eq!(removed, vec![2]);
        // Over links that carry groups only: with 5-4 carrying none, the tree ends at member
        // 6 (the branch to 5 leads to no member any more) and 3 is unreached.
        let g = group(1, &[3, 6]);
        let (cut, edges) = build_over(&g, router.tables(), |a, b| (a, b) != (5, 4));
        assert_eq!(edges, vec![(5, 4)]);
        assert_eq!(cut.trees[0].edges, vec![(1, 6)]);
        assert_eq!(cut.trees[0].unreached, vec![3]);
        assert_eq!(cut.entries.keys().copied().collect::<Vec<_>>(), vec![1, 6]);
    }

    #[test]
    fn trees_from_outside_are_checked_and_pruned_to_members() {
        let mesh = Preset::FullMesh { n: 6 }.build().unwrap();
        let tree = |id, weight, edges: &[(u32, u32)]| TreeSpec {
            tree_id: id,
            weight,
            edges: edges.to_vec(),
        };
        assert!(
            check_trees(&mesh, 1, &[tree(0, 1.0, &[(1, 2), (2, 3), (1, 3)])])
                .unwrap_err()
                .contains("two parents")
        );
        assert!(
            check_trees(&mesh, 1, &[tree(0, 1.0, &[(2, 3)])])
                .unwrap_err()
                .contains("not reached from the source")
        );
        assert!(
            check_trees(&mesh, 1, &[tree(0, 1.0, &[(2, 1)])])
                .unwrap_err()
                .contains("into the source")
        );
        assert!(
            check_trees(&mesh, 1, &[tree(0, 1.0, &[(1, 2), (3, 4), (4, 3)])])
                .unwrap_err()
                .contains("cycle")
        );
        assert!(
            check_trees(&mesh, 1, &[tree(0, 0.0, &[(1, 2)])])
                .unwrap_err()
                .contains("above 0")
        );
        assert!(
            check_trees(&mesh, 1, &[tree(1, 1.0, &[]), tree(1, 1.0, &[])])
                .unwrap_err()
                .contains("twice")
        );
        assert!(
            check_trees(&mesh, 1, &[tree(0, 1.0, &[(1, 9)])])
                .unwrap_err()
                .contains("not a node")
        );
        let specs = vec![
            tree(1, 1.0, &[(1, 2), (2, 3), (2, 5), (5, 6)]),
            tree(2, 3.0, &[(1, 4), (4, 3)]),
        ];
        check_trees(&mesh, 1, &specs).unwrap();
        // In a ring of six, nodes 1 and 4 are not neighbours.
        let ring = Preset::Ring { n: 6 }.build().unwrap();
        assert!(
            check_trees(&ring, 1, &[tree(0, 1.0, &[(1, 4)])])
                .unwrap_err()
                .contains("no link between nodes 1 and 4")
        );
        let g = Group {
            trees: Some(specs),
            ..group(1, &[3])
        };
        let built = build(&g, &[]);
        // The branch to 5 and 6 leads to no member.
        assert_eq!(built.trees[0].edges, vec![(1, 2), (2, 3)]);
        assert_eq!(built.trees[1].edges, vec![(1, 4), (4, 3)]);
        // Member 6 is on neither pruned tree... and a member off a tree is reported.
        let g6 = Group {
            members: [3, 6].into(),
            ..g.clone()
        };
        assert_eq!(build(&g6, &[]).trees[1].unreached, vec![6]);
        // Flows spread over the trees by weight, 1 : 3, and node 3 gets each flow once.
        let mut per_tree = [0u32; 2];
        for flow in 0..4000u64 {
            let h = flow.wrapping_mul(0x1000_0000_01b3);
            let got = deliveries(&built, 1, h);
            assert_eq!(got.get(&3), Some(&1));
            per_tree[built.entries[&1].tree_for(h).unwrap().tree_id as usize - 1] += 1;
        }
        let share = f64::from(per_tree[1]) / 4000.0;
        assert!((0.72..0.78).contains(&share), "{per_tree:?}");
    }

    #[test]
    fn rendezvous_moves_only_the_flows_of_a_tree_that_is_added() {
        let two = [(1, 1.0), (2, 1.0)];
        let three = [(1, 1.0), (2, 1.0), (3, 1.0)];
        let mut moved_elsewhere = 0;
        for h in 0..3000u64 {
            let h = mix(h);
            let a = two[pick_tree(two, h).unwrap()].0;
            let b = three[pick_tree(three, h).unwrap()].0;
            if a != b && b != 3 {
                moved_elsewhere += 1;
            }
        }
        assert_eq!(moved_elsewhere, 0);
        assert_eq!(pick_tree(std::iter::empty(), 1), None);
    }
}
