//! The head's answers as people read them: Markdown tables and short lines.

use std::fmt::Write as _;

use crate::api::{ClearReport, ExperimentDoc, ExperimentRow, HostRow, PlanDoc};

pub fn experiments(rows: &[ExperimentRow]) -> String {
    let mut out = String::from("| experiment | nodes | hosts | active |\n|---|---:|---|---|\n");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            r.name,
            r.nodes,
            r.hosts,
            if r.active { "*" } else { "" }
        );
    }
    out
}

pub fn hosts(rows: &[HostRow]) -> String {
    let mut out = String::from(
        "| host | address | CPUs | memory | available | load | state | nodes |\n|---|---|---:|---:|---:|---:|---|---:|\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} MiB | {} MiB | {:.2} | {} | {} |",
            r.name,
            r.addr,
            r.cpus,
            r.mem_mib,
            r.mem_available_mib,
            r.load1,
            if r.up { "up" } else { "down" },
            r.nodes
        );
    }
    out
}

/// A plan: what happened (launched, dry run, queued) and node ids by host.
pub fn plan(name: &str, r: &PlanDoc, dry_run: bool) -> String {
    let mut out = format!(
        "{name}: {}{} links cross hosts\n| host | nodes |\n|---|---|\n",
        if r.queued {
            "queued (launch it with `nextmini exp launch`); "
        } else if dry_run {
            "dry run; "
        } else {
            "launched; "
        },
        r.links_across_hosts
    );
    for (h, ids) in &r.hosts {
        let _ = writeln!(out, "| {h} | {} |", topology::ids::format_ids(ids));
    }
    out
}

/// An experiment's hosts, placement, schedules and state; `head_host` is where its
/// controller's port is.
pub fn status(r: &ExperimentDoc, head_host: &str) -> String {
    let mut out = format!(
        "experiment {}: hosts {}\n",
        r.name,
        r.hosts.iter().cloned().collect::<Vec<_>>().join(",")
    );
    if let Some(l) = &r.launch {
        out.push_str("| host | nodes |\n|---|---|\n");
        for (h, ids) in &l.shares {
            let _ = writeln!(out, "| {h} | {ids} |");
        }
    }
    out.push_str("| start | end | state | launched | failures | total | hosts |\n|---|---|---|---:|---:|---:|---:|\n");
    for s in &r.schedules {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            utc(Some(s.start)),
            utc(s.end),
            s.state,
            s.launched,
            s.failures,
            s.total,
            s.hosts
        );
    }
    if let Some(l) = &r.launch {
        let port = l.port;
        let _ = writeln!(
            out,
            "controller at {head_host}:{port} (nextmini link show --api {head_host}:{port}, link set … --api {head_host}:{port})"
        );
    }
    if let Some(st) = &r.status {
        let _ = writeln!(
            out,
            "controller: {} nodes, {} ready, {} failed, {} links up",
            st.nodes, st.ready, st.failed, st.links_up
        );
    }
    if !r.failed_nodes.is_empty() {
        let _ = writeln!(
            out,
            "lost nodes: {}",
            topology::ids::format_ids(&r.failed_nodes)
        );
    }
    if !r.lost_links.is_empty() {
        let _ = writeln!(out, "links down: {}", r.lost_links.join(" "));
    }
    out
}

pub fn clear(name: &str, r: &ClearReport) -> String {
    let mut out = format!("cleared {name} on [{}]\n", r.cleared.join(","));
    if !r.down.is_empty() {
        let _ = writeln!(
            out,
            "hosts down: [{}]; cleared there when they come back (or `nextmini cleanup --prefix {name}` on them)",
            r.down.join(",")
        );
    }
    if !r.complete {
        out.push_str("some hosts did not confirm within 30 s\n");
    }
    out
}

/// A stored dry run: node | host.
pub fn dry_run(plan: &std::collections::BTreeMap<u32, String>) -> String {
    let mut out = String::from("| node | host |\n|---:|---|\n");
    for (node, host) in plan {
        let _ = writeln!(out, "| {node} | {host} |");
    }
    out
}

/// Unix seconds as `2026-11-26 18:46:38Z` (civil date from days, Howard Hinnant's method).
pub fn utc(secs: Option<u64>) -> String {
    let Some(secs) = secs else {
        return "-".to_owned();
    };
    let days = (secs / 86_400) as i64;
    let rest = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn unix_seconds_read_as_utc() {
        assert_eq!(super::utc(Some(0)), "1970-01-01 00:00:00Z");
        assert_eq!(super::utc(Some(1_795_718_798)), "2026-11-26 18:46:38Z");
        assert_eq!(super::utc(Some(951_782_400)), "2000-02-29 00:00:00Z");
        assert_eq!(super::utc(None), "-");
    }
}
