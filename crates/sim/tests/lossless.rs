//! Lossless flows (`transport = "lossless_unicast"`) in virtual time: the agent's sender and
//! receiver, carried by the emulated links as UDP datagrams, scheduled and reported like any
//! generated flow.

use std::time::Duration;

use controller::flows::{FlowRow, FlowState};
use experiment::ExperimentFile;
use sim::{Sim, SimSpec};

/// A line of 3 whose links run at 20 Mbit/s with 5 ms each way, `loss` on both directions of
/// 2-3, and one 2 MB lossless flow from 1 to 3 at the links' rate (2.5 MB/s); `extra` is
/// added to the file. Returns the simulation, ready, with the flow started.
fn start(loss: &str, extra: &str) -> Sim {
    let text = format!(
        r#"
[topology]
type = "line"
line_config = {{ n_nodes = 3 }}

[links]
rate = "20mbit"
delay = "5ms"
queue = 1000

[[link]]
between = [2, 3]
loss = "{loss}"

[[flows]]
src_node_id = 1
dst_node_id = 3
flow_spec = {{ flow_len = {{ Bytes = 2000000 }}, flow_rate = 2500000, transport = "lossless_unicast" }}
{extra}"#
    );
    let exp = ExperimentFile::parse("exp.toml", &text)
        .unwrap()
        .resolve(None)
        .unwrap();
    let mut s = Sim::new(SimSpec::from_experiment(&exp));
    s.add_experiment_flows(&exp).unwrap();
    s.run_until_ready(Duration::from_secs(1)).unwrap();
    s
}

/// The same, run until the flow is done.
fn run(loss: &str, extra: &str) -> FlowRow {
    let mut s = start(loss, extra);
    assert!(s.run_until_flows_done(Duration::from_secs(30)));
    s.flows().remove(0)
}

/// The flow's bytes at its rate, in seconds: no lossless flow can finish sooner (its chunks
/// travel with headers, 1,425 bytes in a 1,500-byte packet, and the links carry 2.5 MB/s of
/// packets: 0.84 s without a loss).
const FLOOR: f64 = 2_000_000.0 / 2_500_000.0;

#[test]
fn a_lossless_flow_over_a_clean_path_takes_its_bytes_at_its_rate_and_repairs_nothing() {
    let f = run("0%", "");
    assert_eq!(f.state, FlowState::Finished, "{f:?}");
    // Decoded and found as the sender made them, every byte.
    assert_eq!(f.bytes, Some(2_000_000));
    assert_eq!(f.tcp.unwrap().retransmits, 0);
    let fct = f.fct_seconds.unwrap();
    assert!(
        fct > FLOOR && fct < FLOOR * 1.1 + 0.05,
        "{fct:.3} s against {FLOOR:.3} s"
    );
}

#[test]
fn a_lossless_flow_repairs_what_a_lossy_link_drops_with_and_without_fec() {
    let resent = run("5%", "");
    let coded = run(
        "5%",
        "[lossless_runtime_config]\nfec_enabled = true\nfec_default_symbols_per_block = 32\n",
    );
    for (how, f) in [("chunks sent again", &resent), ("RaptorQ", &coded)] {
        assert_eq!(f.state, FlowState::Finished, "{how}: {f:?}");
        assert_eq!(f.bytes, Some(2_000_000), "{how}");
        let repairs = f.tcp.unwrap().retransmits;
        // About 5 % of some 1,400 datagrams is lost and must be made good.
        assert!(repairs > 20, "{how}: {repairs} repairs");
        // The repairs go at the same rate: the flow takes about 5-15 % longer, no more.
        let fct = f.fct_seconds.unwrap();
        assert!(
            fct > FLOOR && fct < FLOOR * 1.3 + 0.1,
            "{how}: {fct:.3} s against {FLOOR:.3} s"
        );
    }
}

#[test]
fn a_lossless_flow_cut_off_for_half_a_second_resumes_and_arrives_whole() {
    for extra in [
        "",
        "[lossless_runtime_config]\nfec_enabled = true\nfec_default_symbols_per_block = 32\n",
    ] {
        let mut s = start("0%", extra);
        // A third of the way in, 2-3 goes down (both ways: data and feedback are lost), then
        // comes back.
        s.run_for(Duration::from_millis(300));
        s.set_link(2, 3, "up=false").unwrap();
        s.run_for(Duration::from_millis(500));
        s.set_link(2, 3, "up=true").unwrap();
        assert!(s.run_until_flows_done(Duration::from_secs(30)));
        let f = s.flows().remove(0);
        assert_eq!(f.state, FlowState::Finished, "{extra}: {f:?}");
        assert_eq!(f.bytes, Some(2_000_000), "{extra}");
        // What was in flight or sent into the outage is made good once the link is back...
        assert!(f.tcp.unwrap().retransmits > 20, "{extra}: {f:?}");
        // ...and the flow ends about the outage later than it would have, not seconds.
        let fct = f.fct_seconds.unwrap();
        assert!(
            fct > FLOOR + 0.5 && fct < FLOOR * 1.1 + 0.5 + 0.5,
            "{extra}: {fct:.3} s against {FLOOR:.3} s and a 0.5 s outage"
        );
    }
}
