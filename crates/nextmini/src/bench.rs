//! `nextmini bench …`: benchmarks that print a table, with baselines measured in the same run.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use hostnet::monitor::LinkMonitor;
use hostnet::rtnl::{Mode, Rtnl};
use hostnet::tuning::{Sysctl, tune_host};
use hostnet::{Fabric, NetNs, Prefix, msg};
use serde::Serialize;

use crate::host::{self, MemInfo};
use crate::plumb::LayoutArgs;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Namespace plumbing: creation rate at marks, memory per node, teardown, baselines.
    Netns(NetnsArgs),
    /// `nextmini up` of a preset at several sizes: the seeds' wiring table.
    Wiring(WiringArgs),
    /// The scheduler alone: placement time, balance and links cut, for nodes × hosts.
    Schedule(ScheduleArgs),
}

#[derive(Args, Debug)]
pub struct ScheduleArgs {
    /// Topology of the experiment, in the short form (ring,10000; fat_tree,16; torus,2,100).
    #[arg(long, default_value = "ring,10000")]
    pub topo: Vec<String>,
    /// Host counts to place on.
    #[arg(long, value_delimiter = ',', default_value = "10,100")]
    pub hosts: Vec<usize>,
    /// Repetitions per case; the table shows the fastest and the median.
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
}

/// Places each topology on each host count (hosts of 8 CPUs, a tenth of them already half
/// loaded by another experiment, every twentieth node pinned or coscheduled) and prints how
/// long it took and how good the plan is.
fn schedule_bench(args: ScheduleArgs) -> Result<()> {
    println!(
        "nextmini bench schedule: {} cores, kernel {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    println!();
    println!(
        "| topology | nodes | links | hosts | constrained nodes | fastest | median | nodes per host (min-max) | links across hosts |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|---:|");
    for topo in &args.topo {
        let spec = topology::TopologySpec::from_short(topo)?;
        let t = spec.build(None)?;
        let edges = t.edges().to_vec();
        let degree = {
            let mut d = vec![0u32; t.n_nodes() as usize];
            for &(a, b) in &edges {
                d[a as usize - 1] += 1;
                d[b as usize - 1] += 1;
            }
            d
        };
        for &h in &args.hosts {
            let hosts: Vec<scheduler::Host> = (1..=h)
                .map(|i| scheduler::Host {
                    name: format!("kn{i:03}"),
                    cpus: 8,
                    mem_mib: 65_536,
                    committed: scheduler::Commit {
                        cpu: if i % 10 == 0 { 4.0 } else { 0.0 },
                        ..Default::default()
                    },
                })
                .collect();
            let nodes: Vec<scheduler::NodeReq> = (1..=t.n_nodes())
                .map(|id| {
                    let mut n = scheduler::NodeReq::new(id, degree[id as usize - 1]);
                    if id % 40 == 0 {
                        n.schedule = Some(hosts[(id as usize / 40) % h].name.clone());
                    } else if id % 40 == 20 {
                        n.coschedule = Some(t.n_nodes() / h as u32 * 2);
                    }
                    n
                })
                .collect();
            let constrained = nodes
                .iter()
                .filter(|n| n.schedule.is_some() || n.coschedule.is_some())
                .count();
            let problem = scheduler::Problem {
                hosts: &hosts,
                nodes: &nodes,
                edges: &edges,
                metric: scheduler::LoadMetric::CpuCommit,
            };
            let mut times = Vec::new();
            let mut plan = None;
            for _ in 0..args.repeat.max(1) {
                let start = Instant::now();
                plan = Some(scheduler::schedule(&problem)?);
                times.push(start.elapsed());
            }
            times.sort();
            let plan = plan.expect("ran at least once");
            let shares = plan.shares(&problem);
            let min = shares.iter().map(|s| s.nodes).min().unwrap_or(0);
            let max = shares.iter().map(|s| s.nodes).max().unwrap_or(0);
            println!(
                "| {} | {} | {} | {h} | {constrained} | {:.1} ms | {:.1} ms | {min}-{max} | {} |",
                t.label,
                t.n_nodes(),
                edges.len(),
                times[0].as_secs_f64() * 1e3,
                times[times.len() / 2].as_secs_f64() * 1e3,
                plan.cut_links(&edges),
            );
        }
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct WiringArgs {
    /// A preset with a node count: ring, line, star, full_mesh, n_nodes, random.
    #[arg(long, default_value = "ring")]
    pub topology: String,
    /// Sizes to run, e.g. 100,200,300.
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<u32>,
    #[arg(long, default_value = "nw")]
    pub prefix: String,
    /// Extra arguments for each `nextmini up` (e.g. --no-mount).
    #[arg(long, allow_hyphen_values = true)]
    pub up_args: Option<String>,
    /// Write every run's summary as a JSON array here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct NetnsArgs {
    /// Marks at which to report, e.g. 250,500,750,1000; the largest is the run's size.
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<u32>,
    #[command(flatten)]
    pub layout: LayoutArgs,
    /// Baselines to measure for the largest N in the same run.
    #[arg(long, value_delimiter = ',', default_values = ["unshare", "shell"])]
    pub baselines: Vec<Baseline>,
    /// Path to a built `nsbench` (shared/tools/nsbench.c) to run as a further baseline.
    #[arg(long)]
    pub nsbench: Option<PathBuf>,
    /// Write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Baseline {
    /// Bare `unshare(CLONE_NEWNET)` in a loop: the kernel's own namespace rate.
    Unshare,
    /// `ip netns add` + `ip link add … netns` in a shell loop.
    Shell,
    /// None.
    None,
}

#[derive(Debug, Serialize, Clone)]
struct Mark {
    nodes: u32,
    seconds: f64,
    rate_since_previous: f64,
    mem_available_per_node_bytes: i64,
    slab_per_node_bytes: i64,
}

#[derive(Debug, Serialize, Default)]
struct NetnsReport {
    machine: String,
    nodes: u32,
    threads: usize,
    mounts: bool,
    ipv6: bool,
    create_seconds: f64,
    teardown_seconds: f64,
    marks: Vec<Mark>,
    baseline_unshare_seconds: Option<f64>,
    baseline_shell_seconds: Option<f64>,
    nsbench_seconds: Option<f64>,
    nsbench_teardown_seconds: Option<f64>,
    nsbench_flags: Option<String>,
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Netns(args) => netns(args),
        BenchCommand::Wiring(args) => wiring(args),
        BenchCommand::Schedule(args) => schedule_bench(args),
    }
}

fn netns(args: NetnsArgs) -> Result<()> {
    host::require_root("nextmini bench netns")?;
    let mut marks = args.nodes.clone();
    marks.sort_unstable();
    marks.dedup();
    let n = *marks.last().context("--nodes needs at least one number")?;
    if n == 0 {
        bail!("--nodes must be positive");
    }
    let spec = args.layout.spec(n)?;
    tune_host(&Sysctl::default(), u64::from(n), 0)?;
    let mut report = NetnsReport {
        machine: host::machine(),
        nodes: n,
        threads: args.layout.threads,
        mounts: spec.netns_dir.is_some(),
        ipv6: spec.ipv6,
        ..Default::default()
    };
    println!(
        "nextmini bench netns: {n} nodes, {} creator thread(s), mounts {}, IPv6 {}; {}",
        report.threads,
        on_off(report.mounts),
        on_off(report.ipv6),
        report.machine
    );

    // nextmini itself, on a quiet kernel: earlier runs' namespaces are destroyed
    // asynchronously and would skew the memory readings.
    settle(spec.plan.prefix())?;
    quiesce();
    let before = MemInfo::read();
    let readings: Mutex<Vec<(u32, Duration, MemInfo)>> = Mutex::new(Vec::new());
    let bar = crate::plumb::progress_bar(u64::from(n), "namespaces");
    let started = Instant::now();
    let fabric = Fabric::create(&spec, &|done, _| {
        bar.set_position(u64::from(done));
        if marks.binary_search(&done).is_ok() {
            let at = started.elapsed();
            readings.lock().unwrap().push((done, at, MemInfo::read()));
        }
    });
    bar.finish_and_clear();
    let fabric = fabric?;
    report.create_seconds = started.elapsed().as_secs_f64();
    let mut readings = readings.into_inner().unwrap();
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
    let stats = fabric.teardown()?;
    report.teardown_seconds = stats.total.as_secs_f64();
    print_marks(&report);

    let prefix = spec.plan.prefix();
    for baseline in &args.baselines {
        match baseline {
            Baseline::Unshare => {
                report.baseline_unshare_seconds = Some(baseline_unshare(prefix, n)?);
            }
            Baseline::Shell => {
                report.baseline_shell_seconds = Some(baseline_shell(prefix, n)?);
            }
            Baseline::None => {}
        }
    }
    if let Some(path) = &args.nsbench {
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
    print_baselines(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

fn print_marks(r: &NetnsReport) {
    let mut out = String::new();
    writeln!(
        out,
        "| nodes | seconds | nodes/s since previous | MemAvailable Δ per node | Slab Δ per node |"
    )
    .unwrap();
    writeln!(out, "|---:|---:|---:|---:|---:|").unwrap();
    for m in &r.marks {
        writeln!(
            out,
            "| {} | {:.3} | {:.0} | {:.0} KiB | {:.0} KiB |",
            m.nodes,
            m.seconds,
            m.rate_since_previous,
            m.mem_available_per_node_bytes as f64 / 1024.0,
            m.slab_per_node_bytes as f64 / 1024.0
        )
        .unwrap();
    }
    writeln!(
        out,
        "teardown of {} nodes: {:.3} s",
        r.nodes, r.teardown_seconds
    )
    .unwrap();
    print!("{out}");
}

fn print_baselines(r: &NetnsReport) {
    let ours = r.create_seconds;
    println!("baselines for {} nodes, same run:", r.nodes);
    println!("  nextmini (netns + veth + bridge port + address + route): {ours:.3} s");
    if let Some(s) = r.baseline_unshare_seconds {
        println!(
            "  bare unshare(CLONE_NEWNET) loop: {s:.3} s  (namespace rate {:.0}/s; nextmini takes {:.2}x its time)",
            f64::from(r.nodes) / s,
            ours / s
        );
    }
    if let Some(s) = r.baseline_shell_seconds {
        println!(
            "  shell loop (ip netns add + ip link add veth … netns): {s:.3} s  ({:.1}x nextmini's time)",
            s / ours
        );
    }
    if let (Some(s), Some(flags)) = (r.nsbench_seconds, &r.nsbench_flags) {
        println!(
            "  nsbench {flags}: {s:.3} s, teardown {:.3} s  (nextmini takes {:.2}x its time)",
            r.nsbench_teardown_seconds.unwrap_or(0.0),
            ours / s
        );
    }
}

/// Creates `n` bare namespaces from one thread and keeps them by fd: the kernel's own rate.
fn baseline_unshare(prefix: &Prefix, n: u32) -> Result<f64> {
    let seconds = std::thread::scope(|s| {
        s.spawn(|| -> Result<f64> {
            let started = Instant::now();
            let mut kept = Vec::with_capacity(n as usize);
            for _ in 0..n {
                kept.push(NetNs::unshare_thread().context("unshare baseline")?);
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
fn baseline_shell(prefix: &Prefix, n: u32) -> Result<f64> {
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
        .context("running the shell baseline")?;
    let fed = shell
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(script.as_bytes());
    let status = shell.wait().context("running the shell baseline")?;
    fed.context("feeding the shell baseline")?;
    let seconds = started.elapsed().as_secs_f64();
    // Whatever happened, remove what the loop made.
    let swept = hostnet::cleanup::sweep(
        prefix,
        std::path::Path::new(hostnet::netns::DEFAULT_NETNS_DIR),
    );
    if !status.success() {
        bail!("the shell baseline failed ({status})");
    }
    swept.context("removing the shell baseline's namespaces")?;
    Ok(seconds)
}

/// Waits until the kernel has finished destroying namespaces dropped so far: destruction runs
/// in order on one workqueue, so when a marker namespace created now has gone, so have they.
fn settle(prefix: &Prefix) -> Result<()> {
    let marker = format!("{prefix}v0");
    let mut monitor = LinkMonitor::open()?;
    std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            let mut host: Rtnl<()> = Rtnl::open()?;
            let ns = NetNs::unshare_thread()?;
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
            .context("creating the settle marker")?;
            Ok(())
        })
        .join()
        .expect("marker thread panicked")
    })?;
    let present = monitor.present(|name| name == marker)?;
    let left = monitor.wait_gone(present, Duration::from_secs(120))?;
    if !left.is_empty() {
        bail!("namespace cleanup did not finish within 120 s");
    }
    Ok(())
}

/// Waits (bounded) until the kernel has finished freeing what earlier runs left: slab memory
/// stable within 1 MiB over three readings 300 ms apart. Only benchmarks wait like this, so
/// that one run's deferred frees neither slow nor flatter the next.
fn quiesce() {
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
fn run_nsbench(path: &std::path::Path, n: u32, flags: &str) -> Result<(f64, f64)> {
    let out = Command::new(path)
        .arg(n.to_string())
        .args(flags.split(' '))
        .output()
        .with_context(|| format!("running {}", path.display()))?;
    std::io::stderr().write_all(&out.stderr).ok();
    if !out.status.success() {
        bail!("nsbench failed ({})", out.status);
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
        _ => bail!("could not read nsbench's totals from:\n{text}"),
    }
}

/// Runs `nextmini up --exit-when-ready` once per size, each in its own process, on a quiet
/// kernel, and prints the seeds' table.
fn wiring(args: WiringArgs) -> Result<()> {
    host::require_root("nextmini bench wiring")?;
    let prefix = Prefix::new(&args.prefix)?;
    let state = std::env::temp_dir().join(format!("nextmini-bench-{}", std::process::id()));
    std::fs::create_dir_all(&state)?;
    println!(
        "nextmini bench wiring: {} at {:?}; {}",
        args.topology,
        args.nodes,
        host::machine()
    );
    println!(
        "| Topology | Nodes | Wiring Time | Memory Before | Memory After | Per Node | Slab + PSS per node | Agent PSS | Plumbing | Ready after start |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut all = Vec::new();
    for &n in &args.nodes {
        settle(&prefix)?;
        quiesce();
        let summary_path = state.join(format!("summary-{n}.json"));
        let port = std::net::TcpListener::bind("0.0.0.0:0")?
            .local_addr()?
            .port();
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["up", "--topo", &format!("{},{n}", args.topology)])
            .args(["--prefix", prefix.as_str(), "--port", &port.to_string()])
            .arg("--state-dir")
            .arg(&state)
            .arg("--json")
            .arg(&summary_path)
            .arg("--exit-when-ready")
            .stdout(Stdio::null());
        if let Some(extra) = &args.up_args {
            cmd.args(extra.split_whitespace());
        }
        let status = cmd.status().context("running nextmini up")?;
        if !status.success() {
            bail!("nextmini up of {n} nodes failed ({status})");
        }
        let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary_path)?)?;
        let f = |k: &str| j[k].as_f64().unwrap_or(0.0);
        let gib = |k: &str| f(k) / (1u64 << 30) as f64;
        println!(
            "| {} | {n} | {:.2}s | {:.2} GiB | {:.2} GiB | {:.0} KiB | {:.0} KiB | {:.1} MiB | {:.2}s | {:.2}s |",
            j["topology"].as_str().unwrap_or("?"),
            f("wiring_seconds"),
            gib("mem_before_bytes"),
            gib("mem_after_bytes"),
            f("mem_per_node_bytes") / 1024.0,
            f("total_per_node_bytes") / 1024.0,
            f("agent_pss_bytes") / (1u64 << 20) as f64,
            f("plumb_seconds"),
            f("total_seconds"),
        );
        all.push(j);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&all)? + "\n")?;
    }
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}
