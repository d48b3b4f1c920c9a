//! `nextmini bench …`: benchmarks that print a table, with baselines measured in the same run.
//! The measuring is the crates' own (`hostnet::bench`, `scheduler::bench`); `wiring` runs
//! `nextmini up` itself, once per size.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use hostnet::Prefix;
use hostnet::bench::{machine, quiesce, settle};
use hostnet::tuning::{Sysctl, tune_host};

use crate::host;
use crate::plumb::LayoutArgs;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Namespace plumbing: creation rate at marks, memory per node, teardown, baselines.
    Netns(NetnsArgs),
    /// `nextmini up` of a preset at several sizes: the seeds' wiring table.
    Wiring(WiringArgs),
    /// `up` and `down` of a ring, and `up` again: on a quiet kernel, right after `down`, and
    /// warm (after `down --keep`).
    Rerun(RerunArgs),
    /// The scheduler alone: placement time, balance and links cut, for nodes × hosts.
    Schedule(ScheduleArgs),
    /// Route changes on a running ring: time to the last node's confirmation (--iperf: a
    /// running iperf3 across a switch).
    Routes(crate::bench_loop::RoutesArgs),
    /// What monitoring costs at 10,000 flows: per packet, per report, per store write.
    Monitor(crate::bench_loop::MonitorArgs),
    /// RaptorQ (lossless flows' FEC): encoding and decoding rates at block sizes.
    Fec(FecArgs),
}

#[derive(Args, Debug)]
pub struct FecArgs {
    /// Source symbols per block.
    #[arg(long, value_delimiter = ',', default_value = "16,32,64,256")]
    pub k: Vec<u16>,
    /// Bytes per symbol (the lossless flows' chunk).
    #[arg(long, default_value_t = proto::DEFAULT_LOSSLESS_CHUNK)]
    pub symbol_size: u16,
    /// Repair symbols per block, as a fraction of k (lost and repaired when decoding).
    #[arg(long, default_value_t = 0.1)]
    pub repair: f64,
    /// Megabytes of source data per row.
    #[arg(long, default_value_t = 50)]
    pub megabytes: u64,
}

fn fec(args: FecArgs) -> anyhow::Result<()> {
    println!(
        "nextmini bench fec: RaptorQ (raptorq crate), {}-byte symbols, {:.0} % repair, {} MB per row, one core",
        args.symbol_size,
        args.repair * 100.0,
        args.megabytes
    );
    println!();
    println!("| symbols per block | encode (source + repair) | decode (with repair) |");
    println!("|---:|---:|---:|");
    for &k in &args.k {
        let block = u64::from(k) * u64::from(args.symbol_size);
        let blocks = (args.megabytes * 1_000_000).div_ceil(block).max(1) as u32;
        let repair = ((f64::from(k) * args.repair).ceil() as u32).max(1);
        let (enc, dec, bytes) = lossless::fec_rate(k, args.symbol_size, repair, blocks);
        let mbit = |secs: f64| bytes as f64 * 8.0 / secs / 1e6;
        println!(
            "| {k} | {:.0} Mbit/s | {:.0} Mbit/s |",
            mbit(enc),
            mbit(dec)
        );
    }
    Ok(())
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

#[derive(Args, Debug)]
pub struct RerunArgs {
    /// Ring sizes to run, e.g. 1000,1000,1000.
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    pub nodes: Vec<u32>,
    #[arg(long, default_value = "nbr")]
    pub prefix: String,
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

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Netns(args) => netns(args),
        BenchCommand::Wiring(args) => wiring(args),
        BenchCommand::Rerun(args) => rerun(args),
        BenchCommand::Schedule(args) => schedule(args),
        BenchCommand::Routes(args) => crate::bench_loop::routes(args),
        BenchCommand::Monitor(args) => crate::bench_loop::monitor(args),
        BenchCommand::Fec(args) => fec(args),
    }
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
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
    println!(
        "nextmini bench netns: {n} nodes, {} creator thread(s), mounts {}, IPv6 {}; {}",
        spec.threads,
        on_off(spec.netns_dir.is_some()),
        on_off(spec.ipv6),
        machine()
    );
    let baselines: Vec<hostnet::bench::Baseline> = args
        .baselines
        .iter()
        .filter_map(|b| match b {
            Baseline::Unshare => Some(hostnet::bench::Baseline::Unshare),
            Baseline::Shell => Some(hostnet::bench::Baseline::Shell),
            Baseline::None => None,
        })
        .collect();
    let bar = crate::plumb::progress_bar(u64::from(n), "namespaces");
    let report = hostnet::bench::netns(
        &spec,
        &marks,
        &baselines,
        args.nsbench.as_deref(),
        &|done| bar.set_position(u64::from(done)),
    );
    bar.finish_and_clear();
    let report = report?;
    print!("{}{}", report.marks_table(), report.baselines_text());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Places each topology on each host count and prints how long it took and how good the plan
/// is.
fn schedule(args: ScheduleArgs) -> Result<()> {
    println!("nextmini bench schedule: {}", machine());
    println!();
    println!(
        "| topology | nodes | links | hosts | constrained nodes | fastest | median | nodes per host (min-max) | links across hosts |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|---:|");
    for topo in &args.topo {
        let t = topology::TopologySpec::from_short(topo)?.build(None)?;
        for &h in &args.hosts {
            let r = scheduler::bench::place(&t, h, args.repeat)?;
            println!(
                "| {} | {} | {} | {} | {} | {:.1} ms | {:.1} ms | {}-{} | {} |",
                r.topology,
                r.nodes,
                r.links,
                r.hosts,
                r.constrained,
                r.fastest.as_secs_f64() * 1e3,
                r.median.as_secs_f64() * 1e3,
                r.min_nodes,
                r.max_nodes,
                r.links_across_hosts,
            );
        }
    }
    Ok(())
}

/// One `nextmini` command of the benchmark; its output, or an error with its stderr.
fn step(args: &[&str]) -> Result<(String, f64)> {
    let started = std::time::Instant::now();
    let out = Command::new(std::env::current_exe()?)
        .args(args)
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running nextmini {}", args.join(" ")))?;
    let seconds = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "nextmini {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((String::from_utf8_lossy(&out.stdout).into_owned(), seconds))
}

/// `up --detach` of a ring: the seconds from start to ready, as `up` reports them.
fn ready_seconds(stdout: &str) -> Result<f64> {
    stdout
        .split("ready ")
        .nth(1)
        .and_then(|t| t.split('s').next()?.parse().ok())
        .with_context(|| format!("no readiness in `up`'s output: {stdout}"))
}

/// Up, down, up at once, down --keep, up warm, down: once per size, from a settled kernel.
fn rerun(args: RerunArgs) -> Result<()> {
    host::require_root("nextmini bench rerun")?;
    let prefix = Prefix::new(&args.prefix)?;
    let state = std::env::temp_dir().join(format!("nextmini-rerun-{}", std::process::id()));
    std::fs::create_dir_all(&state)?;
    let dir = state.to_str().context("the state directory is not UTF-8")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port()
        .to_string();
    println!(
        "nextmini bench rerun: ring at {:?}; {}",
        args.nodes,
        machine()
    );
    println!(
        "| nodes | up, settled kernel | down | up right after down | down --keep | up, warm (kept nodes) | down |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let result = (|| -> Result<()> {
        for &n in &args.nodes {
            settle(&prefix)?;
            quiesce();
            let topo = format!("ring,{n}");
            let up: Vec<&str> = vec![
                "up",
                "--topo",
                &topo,
                "--prefix",
                prefix.as_str(),
                "--base",
                "172.20.248.0",
                "--port",
                &port,
                "--state-dir",
                dir,
                "--detach",
            ];
            let down = ["down", "--state-dir", dir];
            let keep = ["down", "--keep", "--state-dir", dir];
            let cold = ready_seconds(&step(&up)?.0)?;
            let (_, down_1) = step(&down)?;
            let again = ready_seconds(&step(&up)?.0)?;
            let (_, kept) = step(&keep)?;
            let warm = ready_seconds(&step(&up)?.0)?;
            let (_, down_2) = step(&down)?;
            println!(
                "| {n} | {cold:.2}s | {down_1:.2}s | {again:.2}s | {kept:.2}s | {warm:.2}s | {down_2:.2}s |"
            );
        }
        Ok(())
    })();
    // Whatever happened: nothing of the benchmark stays.
    let _ = step(&["down", "--state-dir", dir]);
    let _ = hostnet::cleanup::sweep(
        &prefix,
        std::path::Path::new(hostnet::netns::DEFAULT_NETNS_DIR),
    );
    let _ = std::fs::remove_dir_all(&state);
    result
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
        machine()
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
