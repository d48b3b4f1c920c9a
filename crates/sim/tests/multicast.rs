//! Multicast groups in virtual time: one source and eight receivers on a fat tree, joined by
//! their kernels' IGMP reports and through the API; every receiver gets every datagram
//! exactly once, each link of the tree carries each datagram once and no other link any; a
//! receiver that leaves gets nothing more; a link of the tree going down moves the tree, and
//! delivery goes on; several weighted trees share the flows.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use proto::ControllerToNode;
use sim::{Sim, SimSpec};
use topology::multicast::TreeSpec;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A fat tree (k = 4) with 100 Mbit/s, 1 ms links, and its 16 servers (the nodes with one
/// link).
fn fat_tree() -> (Sim, Vec<u32>) {
    let topo = topology::Preset::FatTree { k: 4 }.build().unwrap();
    let servers: Vec<u32> = (1..=topo.n_nodes())
        .filter(|&n| topo.adjacency()[n as usize - 1].len() == 1)
        .collect();
    let mut s = Sim::new(SimSpec::new(topo).with_links("rate=100mbit,delay=1ms,queue=1000"));
    s.run_until_ready(Duration::from_secs(2)).unwrap();
    (s, servers)
}

/// Sends datagrams `seqs` from `src` to `group`, spread over four flows, 1 ms apart.
fn send(s: &mut Sim, src: u32, group: Ipv4Addr, seqs: std::ops::Range<u32>) {
    for seq in seqs {
        s.send_to_group(src, group, 4000 + (seq % 4) as u16, seq);
        s.run_for(ms(1));
    }
    s.run_for(ms(100));
}

/// Delivered packets per link direction, all of them.
fn carried(s: &Sim, n: u32) -> BTreeMap<(u32, u32), u64> {
    let mut all = BTreeMap::new();
    for a in 1..=n {
        for b in 1..=n {
            if let Some(c) = s.counters(a, b) {
                all.insert((a, b), c.delivered_packets);
            }
        }
    }
    all
}

#[test]
fn every_receiver_gets_every_datagram_once_and_leaving_or_a_link_down_is_followed() {
    let (mut s, servers) = fat_tree();
    let n = s.coordinator().topology().n_nodes();
    let source = servers[0];
    let receivers: Vec<u32> = servers[1..9].to_vec();
    let bystanders: Vec<u32> = servers[9..].to_vec();
    let row = s.create_group(source, &[]).unwrap();
    let g = row.group;
    assert_eq!(g, Ipv4Addr::new(239, 255, 0, 1), "the pool's first address");
    // Half join as programs do (their kernel's IGMP report), half through the API.
    for &r in &receivers[..4] {
        s.igmp(r, g, true);
    }
    s.run_for(ms(20));
    s.group_members(g, &receivers[4..], true).unwrap();
    s.run_for(ms(20));
    let row = &s.coordinator().group_rows()[0];
    assert_eq!(row.members, {
        let mut m = receivers.clone();
        m.sort();
        m
    });
    assert!(row.trees[0].unreached.is_empty());
    let tree = row.trees[0].edges.clone();

    let before = carried(&s, n);
    send(&mut s, source, g, 0..200);
    for &r in &receivers {
        assert_eq!(
            s.group_received(r, g),
            (0..200).collect::<Vec<_>>(),
            "receiver {r}"
        );
    }
    for &b in &bystanders {
        assert!(s.group_received(b, g).is_empty(), "bystander {b}");
    }
    // Copies only where the tree branches: each tree edge carried each datagram once, every
    // other link direction nothing.
    let after = carried(&s, n);
    for (dir, count) in &after {
        let sent = count - before.get(dir).copied().unwrap_or(0);
        let expected = if tree.contains(dir) { 200 } else { 0 };
        assert_eq!(sent, expected, "link {dir:?}");
    }

    // A receiver's program leaves: nothing more reaches it, the others go on.
    let gone = receivers[0];
    s.igmp(gone, g, false);
    s.run_for(ms(20));
    assert!(!s.coordinator().group_rows()[0].members.contains(&gone));
    send(&mut s, source, g, 200..300);
    assert_eq!(
        s.group_received(gone, g).len(),
        200,
        "nothing after leaving"
    );
    for &r in &receivers[1..] {
        assert_eq!(
            s.group_received(r, g),
            (0..300).collect::<Vec<_>>(),
            "receiver {r}"
        );
    }

    // A link of the tree between two switches goes down: the tree moves round it.
    let tree = s.coordinator().group_rows()[0].trees[0].edges.clone();
    let &(a, b) = tree
        .iter()
        .find(|&&(a, b)| !servers.contains(&a) && !servers.contains(&b))
        .expect("the tree crosses switches");
    s.set_link(a, b, "up=false").unwrap();
    s.run_for(ms(50));
    let moved = s.coordinator().group_rows()[0].trees[0].edges.clone();
    assert!(!moved.contains(&(a, b)), "{moved:?}");
    assert!(
        s.coordinator().group_rows()[0].trees[0]
            .unreached
            .is_empty()
    );
    send(&mut s, source, g, 300..400);
    for &r in &receivers[1..] {
        assert_eq!(
            s.group_received(r, g),
            (0..400).collect::<Vec<_>>(),
            "receiver {r}"
        );
    }
    assert_eq!(s.group_received(gone, g).len(), 200);
}

#[test]
fn a_join_updates_only_the_nodes_on_the_new_branch() {
    let (mut s, servers) = fat_tree();
    let g = s.create_group(servers[0], &servers[1..4]).unwrap().group;
    s.run_for(ms(20));
    let on_tree = s.coordinator().group_nodes(g);
    let groups_messages = |s: &Sim, node| {
        s.received(node)
            .filter(|(_, m)| matches!(m, ControllerToNode::Groups { .. }))
            .count()
    };
    let n = s.coordinator().topology().n_nodes();
    let counts: Vec<usize> = (1..=n).map(|i| groups_messages(&s, i)).collect();
    // A server in the last pod joins.
    let joiner = servers[15];
    s.igmp(joiner, g, true);
    s.run_for(ms(20));
    let now_on = s.coordinator().group_nodes(g);
    let told: Vec<u32> = (1..=n)
        .filter(|&i| groups_messages(&s, i) > counts[i as usize - 1])
        .collect();
    // Those told are the new branch and the node it grafts onto: all on the tree now, most
    // of them new to it, and not the whole tree.
    assert!(told.contains(&joiner));
    assert!(told.iter().all(|t| now_on.contains(t)), "{told:?}");
    let new: Vec<u32> = told
        .iter()
        .filter(|t| !on_tree.contains(t))
        .copied()
        .collect();
    assert_eq!(new.len(), told.len() - 1, "one grafting node: {told:?}");
    assert!(told.len() < now_on.len());
}

#[test]
fn weighted_trees_from_outside_share_the_flows_and_each_receiver_gets_each_datagram_once() {
    // A ring of 6: node 1 sends to 4, over 2-3 (tree 1, weight 1) or 6-5 (tree 2, weight 3).
    let topo = topology::Preset::Ring { n: 6 }.build().unwrap();
    let mut s = Sim::new(SimSpec::new(topo).with_links("rate=1gbit,delay=1ms,queue=1000"));
    s.run_until_ready(Duration::from_secs(1)).unwrap();
    let g = s.create_group(1, &[3, 4]).unwrap().group;
    let trees = vec![
        TreeSpec {
            tree_id: 1,
            weight: 1.0,
            edges: vec![(1, 2), (2, 3), (3, 4)],
        },
        TreeSpec {
            tree_id: 2,
            weight: 3.0,
            edges: vec![(1, 6), (6, 5), (5, 4), (4, 3)],
        },
    ];
    s.set_group_trees(g, Some(trees)).unwrap();
    s.run_for(ms(20));
    for seq in 0..400u32 {
        // 400 flows, one datagram each.
        s.send_to_group(1, g, 1000 + seq as u16, seq);
    }
    s.run_for(ms(200));
    for r in [3, 4] {
        let mut got = s.group_received(r, g).to_vec();
        got.sort();
        assert_eq!(got, (0..400).collect::<Vec<_>>(), "receiver {r}");
    }
    let over = |a, b| s.counters(a, b).unwrap().delivered_packets;
    let (one, two) = (over(1, 2), over(1, 6));
    assert_eq!(one + two, 400);
    assert!((70..130).contains(&one), "tree 1 took {one}, tree 2 {two}");
    // A tree that gives a node two parents is refused, and nothing changes.
    let bad = TreeSpec {
        tree_id: 1,
        weight: 1.0,
        edges: vec![(1, 2), (2, 3), (1, 6), (6, 5), (5, 4), (3, 4)],
    };
    let e = s.set_group_trees(g, Some(vec![bad])).unwrap_err();
    assert!(e.contains("two parents"), "{e}");
    // Back to the shortest-path tree.
    let row = s.set_group_trees(g, None).unwrap();
    assert!(!row.set_trees && row.trees[0].unreached.is_empty());
}

#[test]
fn runs_without_root() {
    sim::rerun_unprivileged("runs_without_root");
}

#[test]
fn the_experiment_files_groups_are_made_when_the_topology_is_ready() {
    let exp = experiment::ExperimentFile::parse(
        "exp.toml",
        "[topology]\ntype = \"ring\"\nring_config = { n_nodes = 6 }\n[[groups]]\nsource = 1\nmembers = \"3-4\"\n[[groups]]\nsource = 2\nmembers = [5]\naddress = \"239.255.7.7\"\ntrees = [{ tree_id = 4, weight = 1, edges = [[2, 3], [3, 4], [4, 5]] }]\n",
    )
    .unwrap()
    .resolve(None)
    .unwrap();
    let mut s = Sim::new(SimSpec::from_experiment(&exp).with_links("delay=1ms"));
    s.run_until_ready(Duration::from_secs(1)).unwrap();
    s.run_for(ms(10));
    let rows = s.coordinator().group_rows();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0].group, rows[0].source),
        (Ipv4Addr::new(239, 255, 0, 1), 1)
    );
    assert_eq!(rows[0].members, vec![3, 4]);
    assert_eq!(rows[1].group, Ipv4Addr::new(239, 255, 7, 7));
    assert!(rows[1].set_trees);
    assert_eq!(rows[1].trees[0].edges, vec![(2, 3), (3, 4), (4, 5)]);
    for seq in 0..10 {
        s.send_to_group(2, rows[1].group, 7, seq);
    }
    s.run_for(ms(50));
    assert_eq!(s.group_received(5, rows[1].group).len(), 10);
}

#[test]
fn a_program_that_joined_before_the_group_existed_is_a_member_once_it_does() {
    let topo = topology::Preset::Ring { n: 6 }.build().unwrap();
    let mut s = Sim::new(SimSpec::new(topo).with_links("delay=1ms"));
    s.run_until_ready(Duration::from_secs(1)).unwrap();
    let g = Ipv4Addr::new(239, 255, 0, 1);
    s.igmp(4, g, true);
    s.igmp(5, g, true);
    s.igmp(5, g, false); // and one that left again
    s.igmp(3, Ipv4Addr::new(239, 1, 1, 1), true); // outside the pool: not remembered
    s.run_for(ms(10));
    assert!(s.coordinator().group_rows().is_empty());
    let row = s.create_group(1, &[2]).unwrap();
    assert_eq!((row.group, row.members.clone()), (g, vec![2, 4]));
    s.run_for(ms(10));
    s.send_to_group(1, g, 9, 0);
    s.run_for(ms(20));
    assert_eq!(s.group_received(4, g), [0]);
    assert!(s.group_received(5, g).is_empty());
}

#[test]
fn a_group_deleted_and_made_again_keeps_the_programs_still_joined() {
    let topo = topology::Preset::Ring { n: 6 }.build().unwrap();
    let mut s = Sim::new(SimSpec::new(topo).with_links("delay=1ms"));
    s.run_until_ready(Duration::from_secs(1)).unwrap();
    let g = s.create_group(1, &[2]).unwrap().group;
    s.igmp(4, g, true);
    s.run_for(ms(10));
    assert_eq!(s.coordinator().group_rows()[0].members, vec![2, 4]);
    s.group_op(controller::coordinator::GroupOp::Delete { group: g })
        .unwrap();
    s.run_for(ms(10));
    let row = s.create_group(1, &[]).unwrap();
    assert_eq!((row.group, row.members), (g, vec![4]));
}
