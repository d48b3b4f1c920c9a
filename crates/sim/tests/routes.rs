//! Routes changed while traffic flows, in virtual time: pinned for a pair or for one flow,
//! confirmed by the nodes that got new tables, cleared again; the traffic moves and keeps
//! going.

use std::time::Duration;

use controller::coordinator::{RouteFilter, RouteRequest};
use controller::flows::FlowState;
use sim::{Sim, SimSpec, overlay};

fn ring(n: u32) -> topology::Topology {
    topology::Preset::Ring { n }.build().unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn addrs(ids: &[u32]) -> Vec<std::net::Ipv4Addr> {
    ids.iter().map(|&i| overlay(i)).collect()
}

#[test]
fn a_route_pinned_under_a_running_transfer_moves_it_and_it_keeps_going() {
    let mut s = Sim::new(SimSpec::new(ring(8)).with_links("rate=100mbit,delay=1ms,queue=5000"));
    s.run_until_ready(Duration::from_secs(1)).unwrap();
    assert_eq!(s.trace(1, 3), addrs(&[2, 3]));
    let bulk = s.start_bulk(1, 3, 64);
    s.run_for(ms(500));
    let before = s.bulk_received(bulk);
    assert!(before > 0);

    let change = s
        .set_route(RouteRequest::path(&[1, 8, 7, 6, 5, 4, 3], None).unwrap())
        .unwrap();
    // Only the nodes that forward 1 -> 3 differently: 1 and the far side of the ring.
    assert_eq!(change.nodes, vec![1, 4, 5, 6, 7, 8]);
    s.run_for(ms(500));
    let (took, nodes) = s
        .routes_applied(change.version)
        .expect("every node confirmed");
    assert_eq!(nodes, 6);
    // One control round trip: the message out, the confirmation back.
    assert!(took <= ms(2) * 2, "{took:?}");
    let after = s.bulk_received(bulk);
    // It goes on at the rate of the link (a window of 64 × 1,500 bytes covers the longer
    // path's round trip), not stalled by the switch.
    let rate = (after - before) as f64 * 8.0 / 0.5;
    assert!(rate > 80e6, "{rate}");
    assert_eq!(s.trace(1, 3), addrs(&[8, 7, 6, 5, 4, 3]));
    // Other sources keep their paths.
    assert_eq!(s.trace(2, 3), addrs(&[3]));

    let cleared = s.clear_routes(RouteFilter::default());
    assert_eq!(cleared.nodes, vec![1, 4, 5, 6, 7, 8]);
    s.run_for(ms(100));
    assert_eq!(s.trace(1, 3), addrs(&[2, 3]));
    // Pinning a path over a link the topology lacks is refused, and nothing is sent.
    assert!(
        s.set_route(RouteRequest::path(&[1, 3], None).unwrap())
            .unwrap_err()
            .contains("no link between nodes 1 and 3")
    );
}

#[test]
fn a_route_for_one_flow_moves_that_flow_only() {
    let mut s = Sim::new(SimSpec::new(ring(6)).with_links("rate=100mbit,delay=1ms,queue=5000"));
    s.run_until_ready(Duration::from_secs(1)).unwrap();
    let long = proto::FlowSpec {
        flow_len: proto::FlowLen::Duration(2.0),
        ..proto::FlowSpec::bytes(0)
    };
    s.add_flow(1, 1, 3, long.clone(), Duration::ZERO).unwrap();
    s.add_flow(2, 1, 3, long, Duration::ZERO).unwrap();
    // Asked before the flow has a connection: kept until it does.
    let early = s
        .set_route(RouteRequest::path(&[1, 6, 5, 4, 3], Some(1)).unwrap())
        .unwrap();
    assert!(early.waits_for_flow && early.nodes.is_empty());
    s.run_for(ms(300));
    let c = s.coordinator();
    assert_eq!(c.flow(1).unwrap().state, FlowState::Running);
    let path = |c: &controller::coordinator::Coordinator, flow| {
        c.route_path(1, 3, Some(flow)).unwrap().path.unwrap()
    };
    assert_eq!(path(c, 1), vec![1, 6, 5, 4, 3]);
    assert_eq!(path(c, 2), vec![1, 2, 3]);
    // Both use their own paths: the links on each carried traffic.
    let counted = |s: &Sim, a, b| s.counters(a, b).unwrap().delivered_bytes;
    let (on_long, on_short) = (counted(&s, 6, 5), counted(&s, 2, 3));
    s.run_for(ms(500));
    assert!(
        counted(&s, 6, 5) > on_long + 1_000_000,
        "{} {on_long} {} {on_short}",
        counted(&s, 6, 5),
        counted(&s, 2, 3)
    );
    assert!(
        counted(&s, 2, 3) > on_short + 1_000_000,
        "{} {on_short} {:?}",
        counted(&s, 2, 3),
        s.flows()
    );
    assert!(s.run_until_flows_done(Duration::from_secs(5)));
    assert!(s.flows().iter().all(|f| f.state == FlowState::Finished));
    // A route for a flow whose ends differ is refused.
    assert!(
        s.set_route(RouteRequest::path(&[2, 3], Some(1)).unwrap())
            .unwrap_err()
            .contains("flow 1 goes from 1 to 3")
    );
}

#[test]
fn runs_without_root() {
    sim::rerun_unprivileged("runs_without_root");
}
