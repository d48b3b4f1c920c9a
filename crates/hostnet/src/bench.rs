//! Measuring the host plumbing: creation rate and memory at marks, teardown, and baselines in
//! the same run (a bare `unshare` loop, the usual shell loop, the C `nsbench`). `nextmini bench
//! netns` prints what [`netns`] measures.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::monitor::LinkMonitor;
use crate::procfs::MemInfo;
use crate::rtnl::{Mode, Rtnl};
use crate::{Fabric, FabricSpec, NetNs, Prefix, msg};

/// A failed measurement.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Create(#[from] crate::CreateError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> BenchError {
    move |source| BenchError::Io { what, source }
}

#[derive(Debug, Serialize, Clone)]
pub struct Mark {
    pub nodes: u32,
    pub seconds: f64,
    pub rate_since_previous: f64,
    pub mem_available_per_node_bytes: i64,
    pub slab_per_node_bytes: i64,
}

#[derive(Debug, Serialize, Default)]
pub struct NetnsReport {
    pub machine: String,
    pub nodes: u32,
    pub threads: usize,
    pub mounts: bool,
    ipv6: bool,
    pub create_seconds: f64,
    pub teardown_seconds: f64,
    pub marks: Vec<Mark>,
    pub baseline_unshare_seconds: Option<f64>,
    pub baseline_shell_seconds: Option<f64>,
    pub nsbench_seconds: Option<f64>,
    pub nsbench_teardown_seconds: Option<f64>,
    pub nsbench_flags: Option<String>,
}

/// Creates the fabric of `spec` on a quiet kernel, reading the time and memory at each of
/// `marks` (ascending; the last is the run's size), tears it down, and measures `baselines`.
pub fn netns(
    spec: &FabricSpec,
    marks: &[u32],
    baselines: &[Baseline],
    nsbench: Option<&Path>,
    progress: &(dyn Fn(u32) + Sync),
) -> Result<NetnsReport, BenchError> {
    let n = spec.plan.n_nodes();
    let mut report = NetnsReport {
        machine: machine(),
        nodes: n,
        threads: spec.threads,
        mounts: spec.netns_dir.is_some(),
        ipv6: spec.ipv6,
        ..Default::default()
    };
    // Earlier runs' namespaces are destroyed asynchronously and would skew the readings.
    settle(spec.plan.prefix())?;
    quiesce();
    let before = MemInfo::read();
    let readings: Mutex<Vec<(u32, Duration, MemInfo)>> = Mutex::new(Vec::new());
    let started = Instant::now();
    let fabric = Fabric::create(spec, &|done, _| {
        progress(done);
        if marks.binary_search(&done).is_ok() {
            let at = started.elapsed();
            readings
                .lock()
                .expect("no panics hold it")
                .push((done, at, MemInfo::read()));
        }
    })?;
    report.create_seconds = started.elapsed().as_secs_f64();
    let mut readings = readings.into_inner().expect("no panics held it");
    readings.sort_by_key(|r| r.0);
    let mut previous = (0u32, 0.0f64);
    for (count, at, mem) in readings {
        let seconds = at.as_secs_f64();
        let per_node = |b: u64, a: u64| (b as i64 - a as i64) / i64::from(count);
        report.marks.push(Mark {
            nodes: count,
            seconds,
            rate_since_previous: f64::from(count - previous.0) / (seconds - previous.1),
            mem_available_per_node_bytes: per_node(before.available, mem.available),
            slab_per_node_bytes: per_node(mem.slab, before.slab),
        });
        previous = (count, seconds);
    }
    let stats = fabric
        .teardown()
        .map_err(|e| BenchError::Failed(e.to_string()))?;
    report.teardown_seconds = stats.total.as_secs_f64();
    let prefix = spec.plan.prefix();
    for baseline in baselines {
        match baseline {
            Baseline::Unshare => {
                report.baseline_unshare_seconds = Some(baseline_unshare(prefix, n)?);
            }
            Baseline::Shell => {
                report.baseline_shell_seconds = Some(baseline_shell(prefix, n)?);
            }
        }
    }
    if let Some(path) = nsbench {
        let flags = if report.mounts {
            "-t 1 -6 -S -B -m"
        } else {
            "-t 1 -6 -S -B"
        };
        let (create, teardown) = run_nsbench(path, n, flags)?;
        report.nsbench_seconds = Some(create);
        report.nsbench_teardown_seconds = Some(teardown);
        report.nsbench_flags = Some(flags.to_owned());
    }
    Ok(report)
}

/// A baseline measured in the same run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// Bare `unshare(CLONE_NEWNET)` in a loop: the kernel's own namespace rate.
    Unshare,
    /// `ip netns add` + `ip link add … netns` in a shell loop.
    Shell,
}

impl NetnsReport {
    /// The marks as a table, and the teardown.
    pub fn marks_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| nodes | seconds | nodes/s since previous | MemAvailable Δ per node | Slab Δ per node |"
        );
        let _ = writeln!(out, "|---:|---:|---:|---:|---:|");
        for m in &self.marks {
            let _ = writeln!(
                out,
                "| {} | {:.3} | {:.0} | {:.0} KiB | {:.0} KiB |",
                m.nodes,
                m.seconds,
                m.rate_since_previous,
                m.mem_available_per_node_bytes as f64 / 1024.0,
                m.slab_per_node_bytes as f64 / 1024.0
            );
        }
        let _ = writeln!(
            out,
            "teardown of {} nodes: {:.3} s",
            self.nodes, self.teardown_seconds
        );
        out
    }

    /// The baselines, each against nextmini's own time.
    pub fn baselines_text(&self) -> String {
        let ours = self.create_seconds;
        let mut out = format!("baselines for {} nodes, same run:\n", self.nodes);
        let _ = writeln!(
            out,
            "  nextmini (netns + veth + bridge port + address + route): {ours:.3} s"
        );
        if let Some(s) = self.baseline_unshare_seconds {
            let _ = writeln!(
                out,
                "  bare unshare(CLONE_NEWNET) loop: {s:.3} s  (namespace rate {:.0}/s; nextmini takes {:.2}x its time)",
                f64::from(self.nodes) / s,
                ours / s
            );
        }
        if let Some(s) = self.baseline_shell_seconds {
            let _ = writeln!(
                out,
                "  shell loop (ip netns add + ip link add veth … netns): {s:.3} s  ({:.1}x nextmini's time)",
                s / ours
            );
        }
        if let (Some(s), Some(flags)) = (self.nsbench_seconds, &self.nsbench_flags) {
            let _ = writeln!(
                out,
                "  nsbench {flags}: {s:.3} s, teardown {:.3} s  (nextmini takes {:.2}x its time)",
                self.nsbench_teardown_seconds.unwrap_or(0.0),
                ours / s
            );
        }
        out
    }
}

/// A short description of this machine for benchmark headers.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib =
        crate::procfs::kib_field("/proc/meminfo", "MemTotal") as f64 / (1u64 << 30) as f64;
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{cores} cores, {mem_gib:.1} GiB, Linux {kernel}")
}

/// Creates `n` bare namespaces from one thread and keeps them by fd: the kernel's own rate.
fn baseline_unshare(prefix: &Prefix, n: u32) -> Result<f64, BenchError> {
    let seconds = std::thread::scope(|s| {
        s.spawn(|| -> Result<f64, BenchError> {
            let started = Instant::now();
            let mut kept = Vec::with_capacity(n as usize);
            for _ in 0..n {
                kept.push(NetNs::unshare_thread().map_err(io("unshare baseline"))?);
            }
            let seconds = started.elapsed().as_secs_f64();
            drop(kept);
            Ok(seconds)
        })
        .join()
        .expect("baseline thread panicked")
    })?;
    settle(prefix)?;
    Ok(seconds)
}

/// The way people script it: one `ip netns add` and one `ip link add … netns` per node.
fn baseline_shell(prefix: &Prefix, n: u32) -> Result<f64, BenchError> {
    let mut script = String::from("set -e\n");
    for id in 1..=n {
        let ns = prefix.netns_name(id);
        let veth = prefix.veth_name(id);
        writeln!(
            script,
            "ip netns add {ns}\nip link add {veth} type veth peer name eth0 netns {ns}"
        )
        .unwrap();
    }
    // The script goes in on stdin: at thousands of nodes it is longer than an argument may be.
    let started = Instant::now();
    let mut shell = Command::new("sh")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(io("running the shell baseline"))?;
    let fed = shell
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(script.as_bytes());
    let status = shell.wait().map_err(io("running the shell baseline"))?;
    fed.map_err(io("feeding the shell baseline"))?;
    let seconds = started.elapsed().as_secs_f64();
    // Whatever happened, remove what the loop made.
    let swept = crate::cleanup::sweep(prefix, Path::new(crate::netns::DEFAULT_NETNS_DIR));
    if !status.success() {
        return Err(BenchError::Failed(format!(
            "the shell baseline failed ({status})"
        )));
    }
    swept.map_err(io("removing the shell baseline's namespaces"))?;
    Ok(seconds)
}

/// Waits until the kernel has finished destroying namespaces dropped so far: destruction runs
/// in order on one workqueue, so when a marker namespace created now has gone, so have they.
pub fn settle(prefix: &Prefix) -> Result<(), BenchError> {
    let marker = format!("{prefix}v0");
    let mut monitor = LinkMonitor::open().map_err(io("opening a link monitor"))?;
    std::thread::scope(|s| {
        s.spawn(|| -> Result<(), BenchError> {
            let mut host: Rtnl<()> = Rtnl::open().map_err(io("opening rtnetlink"))?;
            let ns = NetNs::unshare_thread().map_err(io("unshare"))?;
            host.request(
                msg::new_node_veth(
                    &marker,
                    0,
                    0,
                    ns.raw_fd().expect("a new namespace has its fd"),
                    None,
                    false,
                ),
                Mode::Create,
                (),
            )
            .map_err(|r| r.error)
            .map_err(io("creating the settle marker"))?;
            Ok(())
        })
        .join()
        .expect("marker thread panicked")
    })?;
    let present = monitor
        .present(|name| name == marker)
        .map_err(io("listing links"))?;
    let left = monitor
        .wait_gone(present, Duration::from_secs(120))
        .map_err(io("waiting for the kernel"))?;
    if !left.is_empty() {
        return Err(BenchError::Failed(
            "namespace cleanup did not finish within 120 s".into(),
        ));
    }
    Ok(())
}

/// Waits (bounded) until the kernel has finished freeing what earlier runs left: slab memory
/// stable within 1 MiB over three readings 300 ms apart. Only benchmarks wait like this, so
/// that one run's deferred frees neither slow nor flatter the next.
pub fn quiesce() {
    let mut last = MemInfo::read().slab;
    let mut stable = 0;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(300));
        let now = MemInfo::read().slab;
        if now.abs_diff(last) < (1 << 20) {
            stable += 1;
            if stable == 3 {
                return;
            }
        } else {
            stable = 0;
        }
        last = now;
    }
}

/// Runs the C baseline and reads its totals.
fn run_nsbench(path: &Path, n: u32, flags: &str) -> Result<(f64, f64), BenchError> {
    let out = Command::new(path)
        .arg(n.to_string())
        .args(flags.split(' '))
        .output()
        .map_err(io("running nsbench"))?;
    std::io::stderr().write_all(&out.stderr).ok();
    if !out.status.success() {
        return Err(BenchError::Failed(format!(
            "nsbench failed ({})",
            out.status
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let find = |key: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.contains(key))?;
        let after = &line[line.find(key)? + key.len()..];
        after
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .find(|s| !s.is_empty())?
            .parse()
            .ok()
    };
    let values: HashMap<&str, Option<f64>> = [
        ("create", find("CREATE TOTAL wall")),
        ("teardown", find("TEARDOWN TOTAL")),
    ]
    .into();
    match (values["create"], values["teardown"]) {
        (Some(c), Some(t)) => Ok((c, t)),
        _ => Err(BenchError::Failed(format!(
            "could not read nsbench's totals from: {text}"
        ))),
    }
}
