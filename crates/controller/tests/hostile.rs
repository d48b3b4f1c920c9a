//! Hostile bytes at the controller, handled as the server handles them: control messages from
//! node and agent sessions (MessagePack; any bytes a program in a node could send) decoded and
//! given to the coordinator of a running 8-node ring, and API bodies (JSON) decoded and applied.
//! Nothing may panic, whatever the ids, counts and lengths say. Fixed seed, a few thousand
//! cases each (`HOSTILE_CASES=…` for more); see `crates/hostile`.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use controller::coordinator::{Coordinator, RouteRequest, Settings};
use proto::{AgentToController, LinkCounters, NodeToController};

fn running_ring() -> (Coordinator, Instant) {
    let now = Instant::now();
    let mut c = Coordinator::new(
        topology::Preset::Ring { n: 8 }.build().unwrap(),
        Settings {
            overlay_base: Ipv4Addr::new(10, 0, 0, 0),
            overlay_prefix_len: 16,
            force_network: false,
            network_transport: proto::Transport::Tcp,
            quic_congestion: proto::QuicCongestion::Cubic,
            link_protocols: Default::default(),
            lossless: Default::default(),
            node_port: 3000,
            multi_host: false,
            dataplane: true,
            mtu: 1500,
            links: experiment::LinkPlan::unshaped(),
            metric: topology::routing::Metric::Hops,
            explicit_routes: Vec::new(),
            flow_port: proto::DEFAULT_FLOW_PORT,
            metrics_interval_ms: 1000,
            max_nodes: Vec::new(),
            multicast_pool: proto::DEFAULT_MULTICAST_POOL,
        },
    );
    c.handle_agent_message(
        now,
        1,
        AgentToController::Register {
            version: proto::VERSION,
            host: "h".into(),
            n_nodes: 8,
            node_id_offset: 0,
            node_ids: Vec::new(),
            cpus: 2,
            mem_bytes: 1 << 30,
            underlay_route: None,
        },
    )
    .unwrap();
    for id in 1..=8 {
        c.handle_node_hello(now, &hello(id)).unwrap();
    }
    for id in 1..=8u32 {
        for peer in [id % 8 + 1, (id + 6) % 8 + 1] {
            c.handle_node_message(now, id, NodeToController::LinkUp { peer });
        }
        c.handle_node_message(now, id, NodeToController::Ready);
    }
    while c.poll_output().is_some() {}
    assert_eq!(c.status().ready, 8);
    (c, now)
}

fn hello(node_id: u32) -> NodeToController {
    NodeToController::Hello {
        version: proto::VERSION,
        node_id,
        underlay_addr: Ipv4Addr::new(172, 16, 8, 1 + node_id as u8),
        link_port: 4000,
    }
}

fn node_seeds() -> Vec<Vec<u8>> {
    let counters = LinkCounters {
        peer: 2,
        queue_packets: 3,
        ..Default::default()
    };
    [
        hello(3),
        NodeToController::LinkUp { peer: 4 },
        NodeToController::LinkDown { peer: 2 },
        NodeToController::Ready,
        NodeToController::LinkStats {
            links: vec![counters, counters],
            flows: Vec::new(),
            app_flows: Vec::new(),
            time_ns: 1_700_000_000_000_000_000,
        },
        NodeToController::Failed { reason: "x".into() },
        NodeToController::RoutesApplied { version: 7 },
        NodeToController::FlowsAccepted,
        NodeToController::FlowStarted {
            id: 1,
            local_port: 40000,
            start_ns: 5,
        },
        NodeToController::FlowSent {
            id: 1,
            bytes: 1000,
            end_ns: 9,
            tcp: Default::default(),
        },
        NodeToController::FlowReceived {
            id: 1,
            bytes: 1000,
            first_ns: 5,
            last_ns: 9,
        },
        NodeToController::FlowFailed {
            id: 2,
            reason: "refused".into(),
        },
        NodeToController::GroupMember {
            group: std::net::Ipv4Addr::new(239, 255, 0, 1),
            joined: true,
        },
    ]
    .iter()
    .map(|m| proto::encode(m).unwrap())
    .collect()
}

fn agent_seeds() -> Vec<Vec<u8>> {
    [
        AgentToController::Register {
            version: proto::VERSION,
            host: "h2".into(),
            n_nodes: 3,
            node_id_offset: 5,
            node_ids: vec![2, 9, 4_000_000_000],
            cpus: 2,
            mem_bytes: 1 << 30,
            underlay_route: None,
        },
        AgentToController::Plumbed { done: 4 },
        AgentToController::PlumbingDone {
            seconds: 0.5,
            mem_available_before: 10,
            mem_available_after: 20,
        },
        AgentToController::NodeFailed {
            node: 5,
            reason: "x".into(),
        },
        AgentToController::Failed { reason: "x".into() },
        AgentToController::TornDown {
            seconds: 1.0,
            kept: false,
        },
    ]
    .iter()
    .map(|m| proto::encode(m).unwrap())
    .collect()
}

/// Runs the coordinator on for a while, as the server does after every input.
fn settle(c: &mut Coordinator, now: Instant) {
    while c.poll_output().is_some() {}
    c.handle_timeout(now + Duration::from_secs(3600));
    while c.poll_output().is_some() {}
    let _ = c.status();
}

#[test]
fn node_sessions_can_send_anything() {
    let inputs = (hostile::mutated(node_seeds(), 6), 0u32..12);
    hostile::check("node messages", inputs, 3000, |(bytes, node)| {
        let (mut c, now) = running_ring();
        let Ok(msg) = proto::decode::<NodeToController>(bytes) else {
            return false;
        };
        // A group for memberships to name.
        let _ = c.handle_create_group(1, None, &[]);
        match msg {
            NodeToController::Hello { .. } => {
                let _ = c.handle_node_hello(now, &msg);
            }
            msg => c.handle_node_message(now, *node, msg),
        }
        settle(&mut c, now);
        true
    });
}

#[test]
fn agent_sessions_can_send_anything() {
    let inputs = (hostile::mutated(agent_seeds(), 6), 0u64..4);
    hostile::check("agent messages", inputs, 3000, |(bytes, agent)| {
        let (mut c, now) = running_ring();
        let Ok(msg) = proto::decode::<AgentToController>(bytes) else {
            return false;
        };
        let _ = c.handle_agent_message(now, *agent, msg);
        c.handle_agent_gone(now, *agent);
        settle(&mut c, now);
        true
    });
}

#[test]
fn api_bodies_can_say_anything() {
    let inputs = (
        hostile::mutated(hostile::corpus("api"), 6),
        0u32..10,
        0u32..10,
    );
    hostile::check("API bodies", inputs, 3000, |(bytes, a, b)| {
        let (mut c, now) = running_ring();
        let mut decoded = false;
        if let Ok(change) = serde_json::from_slice::<proto::LinkChange>(bytes) {
            decoded = true;
            let _ = c.handle_set_link(now, *a, *b, &change);
        }
        if let Ok(entry) = serde_json::from_slice::<experiment::flows::FlowEntry>(bytes) {
            decoded = true;
            let start = entry.start.map_or(Duration::ZERO, |s| s.duration());
            let _ = c.handle_add_flow(
                now,
                1,
                entry.src_node_id,
                entry.dst_node_id,
                entry.flow_spec,
                start,
            );
        }
        if let Ok(req) = serde_json::from_slice::<RouteRequest>(bytes) {
            decoded = true;
            let _ = c.handle_set_route(now, req.clone());
            let _ = c.handle_unset_route(now, &req);
        }
        if let Ok(op) = serde_json::from_slice::<controller::coordinator::GroupOp>(bytes) {
            decoded = true;
            // A group to change, with a member.
            let _ = c.handle_create_group(1, None, &[3]);
            let _ = c.handle_group_op(op);
            let _ = c.group_rows();
        }
        settle(&mut c, now);
        decoded
    });
}
