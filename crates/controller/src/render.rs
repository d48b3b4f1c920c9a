//! A controller's answers as people read them: Markdown tables.

use std::fmt::Write as _;

use crate::coordinator::{LinkRow, PathRow, RouteRow, Status};
use crate::flows::FlowRow;

/// Each direction of these links: up or down, parameters, what was sent, drops by cause, queue.
pub fn links<'a>(rows: impl IntoIterator<Item = &'a LinkRow>) -> String {
    let mut out = String::from(
        "| link | up | rate | delay | loss | sent | sent bytes | dropped (down/loss/queue/red) | queue |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        for (from, to, d) in [(r.a, r.b, &r.a_to_b), (r.b, r.a, &r.b_to_a)] {
            let (p, c, queue) = (&d.params, &d.counters.counters, d.counters.queue_packets);
            let _ = writeln!(
                out,
                "| {from}→{to} | {} | {} | {} | {} | {} | {} | {}/{}/{}/{} | {} |",
                if r.up && p.up { "up" } else { "down" },
                p.rate
                    .map_or_else(|| "unshaped".to_owned(), |r| r.to_string()),
                p.delay,
                linkem::format_percent(p.loss.mean()),
                c.delivered_packets,
                c.delivered_bytes,
                c.dropped_down,
                c.dropped_loss,
                c.dropped_queue,
                c.dropped_red,
                queue,
            );
        }
    }
    out
}

/// A run's state and counts.
pub fn status(s: &Status) -> String {
    let wiring = s
        .wiring_seconds
        .map_or_else(|| "-".to_owned(), |w| format!("{w:.2}s"));
    format!(
        "| state | topology | nodes | connected | ready | failed | links | links up | wiring time |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|\n\
         | {} | {} | {} | {} | {} | {} | {} | {} | {wiring} |\n",
        s.phase, s.topology, s.nodes, s.connected, s.ready, s.failed, s.links, s.links_up,
    )
}

/// Flows: ends, size, state, and once finished their completion time and TCP figures.
pub fn flows<'a>(rows: impl IntoIterator<Item = &'a FlowRow>) -> String {
    let mut out = String::from(
        "| flow | src | dst | size | rate | weight | cc | state | start | bytes | fct | throughput | retrans | srtt | cwnd |\n\
         |---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let dash = || "-".to_owned();
    for f in rows {
        let size = match f.spec.flow_len {
            proto::FlowLen::Bytes(b) => linkem::Bytes(b).to_string(),
            proto::FlowLen::Duration(s) => format!("{s}s"),
        };
        let state = match &f.failure {
            Some(why) => format!("{} ({why})", f.state.as_str()),
            None => f.state.as_str().to_owned(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {size} | {} | {} | {} | {state} | {:.3}s | {} | {} | {} | {} | {} | {} |",
            f.id,
            f.src,
            f.dst,
            f.spec
                .flow_rate
                .map_or_else(dash, |r| linkem::format_rate(r.saturating_mul(8))),
            f.spec.flow_weight.unwrap_or(1),
            f.spec.cc.as_deref().unwrap_or("-"),
            f.start_offset,
            f.bytes.map_or_else(dash, |b| b.to_string()),
            f.fct_seconds.map_or_else(dash, |s| format!("{s:.3}s")),
            f.throughput_bps
                .map_or_else(dash, |b| linkem::format_rate(b as u64)),
            f.tcp.map_or_else(dash, |t| t.retransmits.to_string()),
            f.tcp
                .map_or_else(dash, |t| format!("{:.1}ms", f64::from(t.srtt_us) / 1e3)),
            f.tcp.map_or_else(dash, |t| t.cwnd.to_string()),
        );
    }
    out
}

/// One line on a set of flows: how many finished, and their completion times' percentiles.
pub fn flow_summary(rows: &[FlowRow]) -> String {
    let mut fcts: Vec<f64> = rows.iter().filter_map(|f| f.fct_seconds).collect();
    let failed = rows
        .iter()
        .filter(|f| f.state == crate::flows::FlowState::Failed)
        .count();
    if fcts.is_empty() {
        return format!("{} flows, none finished, {failed} failed", rows.len());
    }
    fcts.sort_by(f64::total_cmp);
    let pick = |q: f64| fcts[((fcts.len() - 1) as f64 * q).round() as usize];
    format!(
        "{} flows: {} finished, {failed} failed; completion time mean {:.3}s, p50 {:.3}s, p99 {:.3}s, max {:.3}s",
        rows.len(),
        fcts.len(),
        fcts.iter().sum::<f64>() / fcts.len() as f64,
        pick(0.5),
        pick(0.99),
        fcts[fcts.len() - 1],
    )
}

fn edges_text(edges: &[(u32, u32)]) -> String {
    edges
        .iter()
        .map(|(a, b)| format!("{a}-{b}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The pinned routes.
pub fn routes<'a>(rows: impl IntoIterator<Item = &'a RouteRow>) -> String {
    let mut out = String::from("| src | dst | flow | edges | state |\n|---:|---:|---:|---|---|\n");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            r.src,
            r.dst,
            r.flow.map_or_else(|| "all".to_owned(), |f| f.to_string()),
            edges_text(&r.edges),
            if r.waiting {
                "waits for the flow"
            } else if r.live {
                "in place"
            } else {
                "a link is down: shortest paths meanwhile"
            },
        );
    }
    out
}

/// Multicast groups: source, members, and each tree's edges (pruned to the members).
pub fn groups<'a>(rows: impl IntoIterator<Item = &'a crate::coordinator::GroupRow>) -> String {
    let mut out = String::from(
        "| group | source | members | tree | weight | edges | unreached |\n|---|---:|---|---:|---:|---|---|\n",
    );
    for g in rows {
        let members = topology::ids::format_ids(&g.members);
        for (i, t) in g.trees.iter().enumerate() {
            let first = i == 0;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {}{} | {} | {} | {} |",
                if first {
                    g.group.to_string()
                } else {
                    String::new()
                },
                if first {
                    g.source.to_string()
                } else {
                    String::new()
                },
                if first { members.as_str() } else { "" },
                t.tree_id,
                if g.set_trees { "" } else { " (shortest paths)" },
                t.weight,
                edges_text(&t.edges),
                topology::ids::format_ids(&t.unreached),
            );
        }
    }
    out
}

/// Where traffic between two nodes goes.
pub fn path(p: &PathRow) -> String {
    let mut out = format!("{} -> {}: {}\n", p.src, p.dst, edges_text(&p.edges));
    if let Some(flow) = p.flow {
        match &p.path {
            Some(path) => {
                let nodes: Vec<String> = path.iter().map(u32::to_string).collect();
                let _ = writeln!(out, "flow {flow}: {}", nodes.join(" -> "));
            }
            None => {
                let _ = writeln!(out, "flow {flow}: no connection open yet");
            }
        }
    }
    out
}

/// Seconds since the run started (its id is its start in Unix milliseconds).
fn since_start(run: i64, time_ns: i64) -> f64 {
    (time_ns as f64 / 1e6 - run as f64) / 1e3
}

/// A rate from bytes over the time since the previous sample of the same series.
fn rate(bytes: i64, previous_ns: Option<i64>, time_ns: i64) -> String {
    match previous_ns {
        Some(p) if time_ns > p => {
            linkem::format_rate((bytes as f64 * 8e9 / (time_ns - p) as f64) as u64)
        }
        _ => "-".to_owned(),
    }
}

/// A link's samples over time, both directions.
pub fn link_points(run: i64, points: &[crate::store::LinkPoint]) -> String {
    let mut out = String::from(
        "| time | link | bytes | rate | packets | dropped | queue | utilisation |\n|---:|---|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut last = std::collections::HashMap::new();
    for p in points {
        let previous = last.insert((p.src, p.dst), p.time_ns);
        let _ = writeln!(
            out,
            "| {:.2}s | {}→{} | {} | {} | {} | {} | {} | {} |",
            since_start(run, p.time_ns),
            p.src,
            p.dst,
            p.bytes,
            rate(p.bytes, previous, p.time_ns),
            p.packets,
            p.dropped,
            p.queue_packets,
            p.utilization
                .map_or_else(|| "-".to_owned(), |u| format!("{:.1}%", u * 100.0)),
        );
    }
    out
}

/// A link direction's totals over a window.
#[derive(Default)]
struct LinkTotal {
    bytes: i64,
    packets: i64,
    dropped: i64,
    max_queue: i64,
    peak_utilization: f64,
}

/// Each link direction's totals over a window of samples.
pub fn link_totals(points: &[crate::store::LinkPoint]) -> String {
    let mut totals: std::collections::BTreeMap<(u32, u32), LinkTotal> = Default::default();
    for p in points {
        let t = totals.entry((p.src, p.dst)).or_default();
        t.bytes += p.bytes;
        t.packets += p.packets;
        t.dropped += p.dropped;
        t.max_queue = t.max_queue.max(p.queue_packets);
        t.peak_utilization = t.peak_utilization.max(p.utilization.unwrap_or(0.0));
    }
    let mut out = String::from(
        "| link | bytes | packets | dropped | max queue | peak utilisation |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for ((src, dst), t) in totals {
        let _ = writeln!(
            out,
            "| {src}→{dst} | {} | {} | {} | {} | {:.1}% |",
            t.bytes,
            t.packets,
            t.dropped,
            t.max_queue,
            t.peak_utilization * 100.0
        );
    }
    out
}

/// A flow's samples on each link direction it crossed.
pub fn flow_points(run: i64, points: &[crate::store::FlowPoint]) -> String {
    let mut out =
        String::from("| time | link | bytes | rate | packets |\n|---:|---|---:|---:|---:|\n");
    let mut last = std::collections::HashMap::new();
    for p in points {
        let previous = last.insert((p.local, p.remote), p.time_ns);
        let _ = writeln!(
            out,
            "| {:.2}s | {}→{} | {} | {} | {} |",
            since_start(run, p.time_ns),
            p.local,
            p.remote,
            p.bytes,
            rate(p.bytes, previous, p.time_ns),
            p.packets,
        );
    }
    out
}

/// Completion times by flow size, as transport studies tabulate them; with the hosts' line
/// rate, the slowdown too (completion time over size ÷ rate).
pub fn fct_by_size(rows: &[FlowRow], line_rate_bps: Option<u64>) -> String {
    const BUCKETS: &[(&str, u64, u64)] = &[
        ("< 100KB", 0, 100_000),
        ("100KB-1MB", 100_000, 1_000_000),
        ("1MB-10MB", 1_000_000, 10_000_000),
        ("≥ 10MB", 10_000_000, u64::MAX),
    ];
    let mut out = String::from(
        "| size | flows | mean fct | p50 | p99 | max | mean slowdown |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for &(label, lo, hi) in BUCKETS {
        let mut fcts: Vec<(f64, u64)> = rows
            .iter()
            .filter_map(|f| Some((f.fct_seconds?, f.bytes?)))
            .filter(|(_, b)| (lo..hi).contains(b))
            .collect();
        if fcts.is_empty() {
            continue;
        }
        fcts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let pick = |q: f64| fcts[((fcts.len() - 1) as f64 * q).round() as usize].0;
        let mean = fcts.iter().map(|f| f.0).sum::<f64>() / fcts.len() as f64;
        let slowdown = line_rate_bps.map_or_else(
            || "-".to_owned(),
            |r| {
                let s: f64 = fcts
                    .iter()
                    .map(|(fct, b)| fct / (*b as f64 * 8.0 / r as f64))
                    .sum::<f64>()
                    / fcts.len() as f64;
                format!("{s:.1}")
            },
        );
        let _ = writeln!(
            out,
            "| {label} | {} | {:.3}s | {:.3}s | {:.3}s | {:.3}s | {slowdown} |",
            fcts.len(),
            mean,
            pick(0.5),
            pick(0.99),
            fcts[fcts.len() - 1].0,
        );
    }
    out
}
