//! The control protocol, routing and link emulation over simulated links in virtual time: the
//! same coordinator, node sessions, forwarder and emulators as a real run, without root.

use std::net::Ipv4Addr;
use std::time::Duration;

use controller::coordinator::{Milestone, Phase};
use proto::ControllerToNode;
use sim::{Sim, SimSpec, overlay};
use topology::Preset;

fn ring(n: u32) -> topology::Topology {
    Preset::Ring { n }.build().unwrap()
}

fn line(n: u32) -> topology::Topology {
    Preset::Line { n }.build().unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn addrs(ids: &[u32]) -> Vec<Ipv4Addr> {
    ids.iter().map(|&i| overlay(i)).collect()
}

#[test]
fn a_1000_node_ring_wires_to_ready() {
    let mut s = Sim::new(SimSpec::new(ring(1000)));
    let wiring = s
        .run_until_ready(Duration::from_secs(10))
        .expect("the topology becomes ready");
    let st = s.status();
    assert_eq!(
        (st.phase, st.ready, st.failed, st.links_up),
        (Phase::Ready, 1000, 0, 1000)
    );
    // Hello, welcome, links paired in process, ready, broadcast: a handful of control
    // latencies (50 µs each), whatever the size.
    assert!(wiring < ms(1), "wiring took {wiring:?} of virtual time");
    assert!(
        s.milestones()
            .any(|(_, m)| matches!(m, Milestone::AllConnected { nodes: 1000, .. }))
    );
    // Every node heard topology-ready.
    for id in [1, 500, 1000] {
        assert!(
            s.received(id)
                .any(|(_, m)| *m == ControllerToNode::TopologyReady)
        );
    }
}

#[test]
fn nodes_on_several_agents_dial_their_links_and_a_run_repeats_exactly() {
    let run = || {
        let mut spec = SimSpec::new(ring(200));
        spec.agents = 4;
        let mut s = Sim::new(spec);
        let wiring = s.run_until_ready(Duration::from_secs(10)).unwrap();
        (s, wiring)
    };
    let (s, wiring) = run();
    assert_eq!(s.status().links_up, 200);
    // The four links between blocks are dialled by their higher node (51 dials 50, …, 200
    // dials 1); the others are paired in process.
    let dials = |id| {
        s.received(id)
            .filter(|(_, m)| matches!(m, ControllerToNode::Dial { .. }))
            .count()
    };
    assert_eq!((dials(51), dials(101), dials(200), dials(50)), (1, 1, 1, 0));
    assert!(s.received(51).any(|(_, m)| *m
        == ControllerToNode::Dial {
            peer: 50,
            addr: Sim::link_addr(50)
        }));
    let (again, wiring_again) = run();
    assert_eq!(wiring, wiring_again, "virtual time is deterministic");
    assert_eq!(s.steps, again.steps);
}

#[test]
fn a_link_going_down_sends_traffic_the_other_way_and_back() {
    let mut s = Sim::new(SimSpec::new(ring(7)).with_links("delay=1ms"));
    s.run_until_ready(Duration::from_secs(1)).unwrap();
    let rtt = |s: &mut Sim| {
        let r = s.ping(1, 2, Duration::from_secs(1)).expect("an answer");
        assert!(r.echo, "{r:?}");
        r.rtt
    };
    assert_eq!(rtt(&mut s), ms(2), "one link each way");
    assert_eq!(s.trace(1, 2), addrs(&[2]));
    let down_at = s.elapsed();
    s.set_link(2, 1, "up=false").unwrap();
    s.run_for(ms(1));
    assert_eq!(rtt(&mut s), ms(12), "six links each way");
    assert_eq!(s.trace(1, 2), addrs(&[7, 6, 5, 4, 3, 2]));
    // Only the nodes whose tables changed were sent new ones: node 5, across the ring, reaches
    // 1 by 6 and 2 by 4 whether 1-2 is up or not.
    let routes_since = |s: &Sim, id, t| {
        s.received(id)
            .filter(|(at, m)| *at > t && matches!(m, ControllerToNode::Routes { .. }))
            .count()
    };
    assert_eq!(routes_since(&s, 5, down_at), 0);
    assert!(routes_since(&s, 1, down_at) > 0 && routes_since(&s, 2, down_at) > 0);
    s.set_link(1, 2, "up=true").unwrap();
    s.run_for(ms(1));
    assert_eq!(rtt(&mut s), ms(2));
    // A link the topology lacks is refused.
    assert!(
        s.set_link(1, 3, "up=false")
            .unwrap_err()
            .contains("no link 1-3")
    );
}

#[test]
fn a_failed_node_is_reported_to_its_neighbours_and_traffic_goes_round_it() {
    let mut spec = SimSpec::new(ring(5)).with_links("delay=1ms");
    spec.fail = vec![3];
    let mut s = Sim::new(spec);
    s.run_until_ready(Duration::from_secs(1)).unwrap();
    let st = s.status();
    assert_eq!((st.ready, st.failed, st.links_up), (4, 1, 3));
    for neighbour in [2, 4] {
        assert!(
            s.received(neighbour)
                .any(|(_, m)| *m == ControllerToNode::PeerFailed { peer: 3 }),
            "node {neighbour} is told"
        );
    }
    assert!(
        s.received(1)
            .all(|(_, m)| !matches!(m, ControllerToNode::PeerFailed { .. }))
    );
    assert!(s.ended(3).is_some());
    assert_eq!(s.trace(2, 4), addrs(&[1, 5, 4]));
    // A node lost after the topology is ready: its neighbours hear of it, routes go round.
    let mut s = Sim::new(SimSpec::new(ring(6)).with_links("delay=1ms"));
    s.run_until_ready(Duration::from_secs(1)).unwrap();
    assert_eq!(s.trace(3, 5), addrs(&[4, 5]));
    s.lose_node(4);
    s.run_for(ms(1));
    assert!(
        s.received(5)
            .any(|(_, m)| *m == ControllerToNode::PeerFailed { peer: 4 })
    );
    assert_eq!(s.trace(3, 5), addrs(&[2, 1, 6, 5]));
    // The way to the lost node is gone: its own packets are answered unreachable, from the
    // overlay's reserved address (the kernel drops errors claiming a node's own address).
    let r = s.ping(3, 4, Duration::from_secs(1)).expect("an ICMP error");
    assert!(!r.echo && r.from == Ipv4Addr::new(10, 0, 255, 254), "{r:?}");
}

#[test]
fn a_1_gbit_50_ms_link_carries_a_bulk_transfer_at_its_rate() {
    let mut s = Sim::new(SimSpec::new(line(2)).with_links("rate=1gbit,delay=50ms,queue=20000"));
    s.run_until_ready(Duration::from_secs(1)).unwrap();
    // A window of a bandwidth-delay product (100 ms at 1 Gbit/s: 8,333 packets of 1,500 bytes)
    // and 500 more keeps the transmitter busy with a standing queue of 500.
    let bulk = s.start_bulk(1, 2, 8_833);
    s.run_for(Duration::from_secs(3));
    let before = s.bulk_received(bulk);
    s.run_for(Duration::from_secs(2));
    let bits = (s.bulk_received(bulk) - before) as f64 * 8.0;
    let rate = bits / 2.0;
    assert!(
        (rate / 1e9 - 1.0).abs() < 1e-3,
        "{:.4} Gbit/s over the last 2 s",
        rate / 1e9
    );
    let c = s.counters(1, 2).unwrap();
    assert_eq!(c.dropped(), 0, "{c:?}");
    // One RTT for a ping behind the standing queue of 500 packets (6 ms at 1 Gbit/s).
    let r = s.ping(1, 2, Duration::from_secs(1)).unwrap();
    assert!(
        r.rtt >= ms(100) && r.rtt <= ms(107),
        "{:?} behind the queue",
        r.rtt
    );
}

/// Run as root (as CI does), this runs the other tests of this file again as `nobody`: the
/// simulator tier needs no privilege at all.
#[test]
fn the_simulator_tier_runs_without_root() {
    sim::rerun_unprivileged("the_simulator_tier_runs_without_root");
}
