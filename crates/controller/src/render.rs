//! A controller's answers as people read them: Markdown tables.

use std::fmt::Write as _;

use crate::coordinator::{LinkRow, Status};

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
