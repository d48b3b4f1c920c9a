//! Generated flows in virtual time: scheduled by the coordinator, started by the node sessions,
//! carried by the emulated links, measured at both ends.

use std::time::Duration;

use controller::flows::FlowState;
use experiment::ExperimentFile;
use sim::{Sim, SimSpec};

fn experiment(text: &str) -> experiment::Experiment {
    ExperimentFile::parse("exp.toml", text)
        .unwrap()
        .resolve(None)
        .unwrap()
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// A stream packet carries 1,452 bytes of data in 1,500 on the wire.
const EFFICIENCY: f64 = 1452.0 / 1500.0;

#[test]
fn a_seeds_shaped_experiment_runs_its_flows_at_the_configured_rates() {
    // The seeds' form: a token-bucket rate on 1 → 2 and on 2 → 3, flows by bytes.
    let exp = experiment(
        r#"
[topology]
type = "line"
line_config = { n_nodes = 3 }

[links]
delay = "1ms"
queue = 5000

[[link_rates]]
src_node_id = 1
dst_node_id = 2
rate = 1250000
bucket_size = 15000

[[link_rates]]
src_node_id = 2
dst_node_id = 3
rate = 2500000

[[flows]]
src_node_id = 1
dst_node_id = 3
flow_spec = { flow_len = { Bytes = 5000000 }, transport = "tcp" }

[[flows]]
src_node_id = 2
dst_node_id = 3
flow_spec = { flow_len = { Bytes = 2000000 } }
start = "10s"
"#,
    );
    let mut s = Sim::new(SimSpec::from_experiment(&exp));
    s.add_experiment_flows(&exp).unwrap();
    s.run_until_ready(secs(1.0)).unwrap();
    assert!(s.run_until_flows_done(secs(30.0)));
    let flows = s.flows();
    assert!(
        flows.iter().all(|f| f.state == FlowState::Finished),
        "{flows:?}"
    );
    // 5 MB through the 10 Mbit/s bottleneck (1,250,000 bytes/s of wire), the first 15,000
    // bytes at once from the full bucket.
    let f1 = &flows[0];
    assert_eq!(f1.bytes, Some(5_000_000));
    let ideal = (5e6 / EFFICIENCY - 15_000.0) / 1.25e6;
    let fct = f1.fct_seconds.unwrap();
    assert!(
        fct > ideal && (fct / ideal - 1.0) < 0.01,
        "flow 1: {fct:.3} s against {ideal:.3} s"
    );
    // 2 MB at 20 Mbit/s, starting 10 s after ready.
    let f2 = &flows[1];
    let ideal = 2e6 / (2.5e6 * EFFICIENCY);
    let fct = f2.fct_seconds.unwrap();
    assert!(
        (fct / ideal - 1.0).abs() < 0.02,
        "flow 2: {fct:.3} s against {ideal:.3} s"
    );
    // It starts 10 s after ready (the first waited for its destination to take flows).
    let gap = f2.start_ns.unwrap() - f1.start_ns.unwrap();
    assert!((9_999_000_000..10_001_000_000).contains(&gap), "{gap}");
    let tput = f2.throughput_bps.unwrap();
    assert!((tput / (20e6 * EFFICIENCY) - 1.0).abs() < 0.02, "{tput}");
}

#[test]
fn weighted_round_robin_splits_a_bottleneck_one_to_three() {
    let exp = experiment(
        r#"
scheduler_type = "wrr"

[topology]
type = "line"
line_config = { n_nodes = 3 }

[links]
delay = "1ms"
queue = 5000

[[link]]
from = 2
to = 3
rate = "20mbit"

[[flows]]
src_node_id = 1
dst_node_id = 3
flow_spec = { flow_len = { Duration = 5.0 }, flow_weight = 1 }

[[flows]]
src_node_id = 1
dst_node_id = 3
flow_spec = { flow_len = { Duration = 5.0 }, flow_weight = 3 }
"#,
    );
    // Windows a little over the path's bandwidth-delay product keep both flows queued at the
    // bottleneck, and little left there when they stop.
    let mut spec = SimSpec::from_experiment(&exp);
    spec.flow_window = 40;
    let mut s = Sim::new(spec);
    s.add_experiment_flows(&exp).unwrap();
    s.run_until_ready(secs(1.0)).unwrap();
    assert!(s.run_until_flows_done(secs(30.0)));
    let flows = s.flows();
    let (light, heavy) = (
        flows[0].bytes.unwrap() as f64,
        flows[1].bytes.unwrap() as f64,
    );
    let share = heavy / (light + heavy);
    assert!(
        (share - 0.75).abs() < 0.75 * 0.05,
        "weight 3 of 4 got {share:.3}"
    );
    // Together they fill the bottleneck.
    let total = (light + heavy) * 8.0 / 5.0;
    assert!((total / (20e6 * EFFICIENCY) - 1.0).abs() < 0.03, "{total}");
}

#[test]
fn flows_added_while_running_start_at_once_and_flows_to_failed_nodes_fail() {
    let mut spec = SimSpec::new(topology::Preset::Ring { n: 5 }.build().unwrap())
        .with_links("rate=100mbit,delay=1ms,queue=5000");
    spec.fail = vec![3];
    let mut s = Sim::new(spec);
    s.run_until_ready(secs(1.0)).unwrap();
    s.run_for(secs(1.0));
    let at = s.elapsed();
    s.add_flow(1, 1, 2, proto::FlowSpec::bytes(1_000_000), Duration::ZERO)
        .unwrap();
    s.add_flow(2, 1, 3, proto::FlowSpec::bytes(1_000_000), Duration::ZERO)
        .unwrap();
    assert!(
        s.add_flow(3, 1, 9, proto::FlowSpec::bytes(1), Duration::ZERO)
            .unwrap_err()
            .contains("dst_node_id = 9")
    );
    assert!(s.run_until_flows_done(secs(5.0)));
    let flows = s.flows();
    assert_eq!(flows[0].state, FlowState::Finished);
    assert!(flows[0].fct_seconds.unwrap() < 0.2);
    assert!(
        s.milestones().any(|(t, m)| t >= at
            && matches!(m, controller::coordinator::Milestone::Flow(f) if f.id == 1))
    );
    assert_eq!(flows[1].state, FlowState::Failed);
    assert!(
        flows[1].failure.as_deref().unwrap().contains("node 3"),
        "{:?}",
        flows[1]
    );
}

#[test]
fn nodes_report_each_link_and_each_flow_every_interval() {
    let exp = experiment(
        r#"
metrics_collection_interval = "250ms"

[topology]
type = "line"
line_config = { n_nodes = 3 }

[links]
rate = "20mbit"
delay = "1ms"
queue = 5000

[[flows]]
src_node_id = 1
dst_node_id = 3
flow_spec = { flow_len = { Bytes = 2000000 } }
"#,
    );
    let mut s = Sim::new(SimSpec::from_experiment(&exp));
    s.add_experiment_flows(&exp).unwrap();
    s.run_until_ready(secs(1.0)).unwrap();
    assert!(s.run_until_flows_done(secs(30.0)));
    // Counters keep being read for a while after the last byte.
    s.run_for(secs(1.0));
    let reports: Vec<&controller::metrics::MetricsReport> = s
        .milestones()
        .filter_map(|(_, m)| match m {
            controller::coordinator::Milestone::Metrics(r) => Some(&**r),
            _ => None,
        })
        .collect();
    // Node 2 forwards 2→3: its samples add up to what that link delivered, 250 ms apart.
    let two: Vec<_> = reports.iter().filter(|r| r.node == 2).collect();
    let on_2_3: u64 = two
        .iter()
        .flat_map(|r| &r.links)
        .filter(|l| l.dst == 3)
        .map(|l| l.bytes)
        .sum();
    assert_eq!(on_2_3, s.counters(2, 3).unwrap().delivered_bytes);
    assert!(
        two.windows(2)
            .all(|w| w[1].time_ns - w[0].time_ns >= 250_000_000)
    );
    // A full link is fully used.
    let busiest = two
        .iter()
        .flat_map(|r| &r.links)
        .filter(|l| l.dst == 3)
        .filter_map(|l| l.utilization)
        .fold(0.0, f64::max);
    assert!(busiest > 0.95 && busiest < 1.05, "{busiest}");
    // Per flow and link: the generated flow's bytes, attributed to it, on both links.
    let flow_bytes = |local, remote| -> u64 {
        reports
            .iter()
            .flat_map(|r| &r.flows)
            .filter(|f| f.flow == Some(1) && (f.local, f.remote) == (local, remote))
            .map(|f| f.bytes)
            .sum()
    };
    let fct = s.flows()[0].clone();
    assert!(flow_bytes(1, 2) >= 2_000_000, "{}", flow_bytes(1, 2));
    assert_eq!(flow_bytes(1, 2), flow_bytes(2, 3));
    // Its acknowledgements, going back, count for it too.
    assert!(flow_bytes(3, 2) > 0);
    // The source's dataplane saw the connection open, on its path, and close.
    let apps: Vec<_> = reports.iter().flat_map(|r| &r.apps).collect();
    assert!(apps.iter().any(|a| matches!(a,
        controller::metrics::AppFlowRow::Started { src: 1, dst: 3, route: Some(r), .. } if r == "1-2-3")));
    assert!(
        apps.iter()
            .any(|a| matches!(a, controller::metrics::AppFlowRow::Finished { bytes, .. } if *bytes >= 2_000_000)),
        "{apps:?} {fct:?}"
    );
}

#[test]
fn runs_without_root() {
    sim::rerun_unprivileged("runs_without_root");
}
