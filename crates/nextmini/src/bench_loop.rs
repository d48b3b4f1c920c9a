//! Benchmarks of the experiment loop: how fast a route change reaches every node it changes
//! (and what a running iperf3 sees across it), and what monitoring costs at 10,000 flows (the
//! dataplane's per-packet metering, the controller's handling of reports, the store's
//! batched writes).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use controller::client::ControllerClient;
use controller::coordinator::{Coordinator, Milestone, RouteFilter, RouteRequest, Settings};
use controller::run::RunFile;
use controller::store::Store;
use hostnet::bench::machine;
use proto::monitor::{FlowBytes, FlowKey};

use crate::host;

#[derive(Args, Debug)]
pub struct RoutesArgs {
    /// Nodes of the ring whose routes change.
    #[arg(long, default_value_t = 1000)]
    pub nodes: u32,
    /// Changes per case (half set, half clear).
    #[arg(long, default_value_t = 20)]
    pub changes: usize,
    /// Also run iperf3 across a route switch on a small ring.
    #[arg(long)]
    pub iperf: bool,
    #[arg(long, default_value = "nr")]
    pub prefix: String,
}

#[derive(Args, Debug)]
pub struct MonitorArgs {
    /// Flows active in every interval.
    #[arg(long, default_value_t = 10_000)]
    pub flows: u32,
    /// Link directions each flow crosses.
    #[arg(long, default_value_t = 4)]
    pub hops: u32,
    /// Nodes reporting (each reports its share of the flows' samples).
    #[arg(long, default_value_t = 36)]
    pub nodes: u32,
    /// Intervals to write.
    #[arg(long, default_value_t = 10)]
    pub intervals: u32,
    #[arg(long, default_value = "1s")]
    pub interval: linkem::Span,
    /// Also write to this store (e.g. postgres://…); SQLite in a temporary file always.
    #[arg(long)]
    pub db: Option<String>,
}

/// A detached run of `nextmini up`, taken down when dropped.
struct Up {
    state: PathBuf,
}

impl Up {
    fn start(args: &[&str], state: &Path) -> Result<Up> {
        std::fs::create_dir_all(state)?;
        let out = Command::new(std::env::current_exe()?)
            .arg("up")
            .args(args)
            .arg("--state-dir")
            .arg(state)
            .arg("--detach")
            .stdout(Stdio::null())
            .status()
            .context("running nextmini up")?;
        if !out.success() {
            bail!("nextmini up {} failed ({out})", args.join(" "));
        }
        Ok(Up {
            state: state.to_owned(),
        })
    }

    fn client(&self) -> Result<ControllerClient> {
        Ok(RunFile::load(&self.state)?.client())
    }

    fn exec(&self, node: u32, cmd: &[&str]) -> Command {
        let mut c = Command::new(std::env::current_exe().expect("our own path"));
        c.args(["exec", &node.to_string(), "--state-dir"])
            .arg(&self.state)
            .arg("--")
            .args(cmd);
        c
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new(std::env::current_exe().expect("our own path"))
            .args(["down", "--state-dir"])
            .arg(&self.state)
            .stdout(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

pub fn routes(args: RoutesArgs) -> Result<()> {
    host::require_root("nextmini bench routes")?;
    let n = args.nodes;
    if n < 8 {
        bail!("--nodes: a ring of at least 8");
    }
    let state = std::env::temp_dir().join(format!("nextmini-bench-routes-{}", std::process::id()));
    let port = std::net::TcpListener::bind("0.0.0.0:0")?
        .local_addr()?
        .port();
    println!(
        "nextmini bench routes: ring of {n}, {} changes per case; {}",
        args.changes,
        machine()
    );
    let up = Up::start(
        &[
            "--topo",
            &format!("ring,{n}"),
            "--prefix",
            &args.prefix,
            "--port",
            &port.to_string(),
        ],
        &state,
    )?;
    let client = up.client()?;
    // Node 1 to the node a quarter round: pinned the long way, three quarters of the ring
    // forward differently; pinned on its own shortest path, only the two nodes on it get
    // an entry.
    let dst = n / 4 + 1;
    let long: Vec<u32> = std::iter::once(1).chain((dst..=n).rev()).collect();
    let short: Vec<u32> = (1..=3).collect();
    println!();
    println!(
        "| change | nodes updated | applied (median) | applied (p95) | applied (max) | API call (median) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (what, path) in [
        (
            format!("1 → {dst} the long way ({} hops)", long.len() - 1),
            long,
        ),
        ("1 → 3 pinned on its shortest path".to_owned(), short),
    ] {
        let req = RouteRequest::path(&path, None).map_err(anyhow::Error::msg)?;
        let (mut applied, mut calls, mut nodes) = (Vec::new(), Vec::new(), 0);
        for i in 0..args.changes {
            let started = Instant::now();
            let a = if i % 2 == 0 {
                client.set_route(&req)?
            } else {
                client.clear_routes(&RouteFilter::default())?
            };
            calls.push(started.elapsed().as_secs_f64() * 1e3);
            applied.push(a.applied_ms);
            nodes = nodes.max(a.nodes);
        }
        applied.sort_by(f64::total_cmp);
        calls.sort_by(f64::total_cmp);
        println!(
            "| {what} | {nodes} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
            percentile(&applied, 0.5),
            percentile(&applied, 0.95),
            applied[applied.len() - 1],
            percentile(&calls, 0.5),
        );
    }
    drop(up);
    if args.iperf {
        iperf_switch(&args.prefix)?;
    }
    Ok(())
}

/// iperf3 from node 1 to 3 of a ring of 8 (200 Mbit/s links): the long way round from 2.5 s,
/// back from 5.5 s.
fn iperf_switch(prefix: &str) -> Result<()> {
    let state = std::env::temp_dir().join(format!("nextmini-bench-iperf-{}", std::process::id()));
    let port = std::net::TcpListener::bind("0.0.0.0:0")?
        .local_addr()?
        .port();
    let up = Up::start(
        &[
            "--topo",
            "ring,8",
            "--link",
            "rate=200mbit,delay=1ms,queue=500",
            "--prefix",
            prefix,
            "--port",
            &port.to_string(),
        ],
        &state,
    )?;
    let client = up.client()?;
    let mut server = up
        .exec(3, &["iperf3", "-s", "-1"])
        .stdout(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let iperf = up
        .exec(
            1,
            &["iperf3", "-c", "10.0.0.3", "-t", "8", "-i", "0.5", "-J"],
        )
        .stdout(Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(2500));
    let long = RouteRequest::path(&[1, 8, 7, 6, 5, 4, 3], None).map_err(anyhow::Error::msg)?;
    let set = client.set_route(&long)?;
    let set_at = started.elapsed();
    std::thread::sleep(Duration::from_millis(3000).saturating_sub(started.elapsed() - set_at));
    let back = client.clear_routes(&RouteFilter::default())?;
    let back_at = started.elapsed();
    let out = iperf.wait_with_output()?;
    let _ = server.wait();
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("iperf3's report (is iperf3 installed?)")?;
    println!();
    println!(
        "iperf3 1 → 3 on a ring of 8 (200 Mbit/s, 1 ms links): the long way (6 hops) at {:.1} s ({} nodes, {:.1} ms), back at {:.1} s ({} nodes, {:.1} ms)",
        set_at.as_secs_f64(),
        set.nodes,
        set.applied_ms,
        back_at.as_secs_f64(),
        back.nodes,
        back.applied_ms
    );
    println!();
    println!("| interval | path | throughput | retransmits |");
    println!("|---|---|---:|---:|");
    for i in report["intervals"].as_array().into_iter().flatten() {
        let s = &i["sum"];
        let (from, to) = (
            s["start"].as_f64().unwrap_or(0.0),
            s["end"].as_f64().unwrap_or(0.0),
        );
        // iperf3 starts counting a moment after it was launched; close enough for labels.
        let path = if to <= set_at.as_secs_f64() || from >= back_at.as_secs_f64() {
            "1-2-3"
        } else if from >= set_at.as_secs_f64() && to <= back_at.as_secs_f64() {
            "1-8-7-6-5-4-3"
        } else {
            "switching"
        };
        println!(
            "| {from:.1}-{to:.1} s | {path} | {} | {} |",
            linkem::format_rate(s["bits_per_second"].as_f64().unwrap_or(0.0) as u64),
            s["retransmits"].as_u64().unwrap_or(0)
        );
    }
    Ok(())
}

/// The reports `nodes` nodes send in one interval for `flows` flows crossing `hops` link
/// directions each, spread over the nodes.
fn synthetic_reports(
    flows: u32,
    hops: u32,
    nodes: u32,
    time_ns: u64,
) -> Vec<proto::NodeToController> {
    let mut per_node: Vec<Vec<FlowBytes>> = vec![Vec::new(); nodes as usize];
    for f in 0..flows {
        let key = FlowKey {
            src: Ipv4Addr::from(0x0a00_0000 + 1 + f % nodes),
            dst: Ipv4Addr::from(0x0a00_0000 + 1 + (f + 7) % nodes),
            protocol: 6,
            sport: 10_000 + (f / nodes) as u16,
            dport: 5201,
        };
        for h in 0..hops {
            let node = (f + h) % nodes;
            per_node[node as usize].push(FlowBytes {
                peer: (node + 1) % nodes + 1,
                key,
                bytes: 125_000,
                packets: 84,
            });
        }
    }
    per_node
        .into_iter()
        .enumerate()
        .map(|(i, flows)| {
            let id = i as u32 + 1;
            let peer = id % nodes + 1;
            proto::NodeToController::LinkStats {
                links: vec![proto::LinkCounters {
                    peer,
                    counters: linkem::Counters {
                        arrived_packets: time_ns / 1_000_000,
                        delivered_packets: time_ns / 1_000_000,
                        delivered_bytes: time_ns / 1_000,
                        ..Default::default()
                    },
                    queue_packets: 5,
                }],
                flows,
                app_flows: Vec::new(),
                time_ns,
            }
        })
        .collect()
}

/// CPU time this process has used (user + system).
fn cpu_time() -> Duration {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage");
    let tv =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    tv(usage.user_time()) + tv(usage.system_time())
}

pub fn monitor(args: MonitorArgs) -> Result<()> {
    let (flows, hops, nodes) = (args.flows, args.hops, args.nodes.max(2));
    println!(
        "nextmini bench monitor: {flows} flows × {hops} link directions, {nodes} nodes, {} intervals of {}; {}",
        args.intervals,
        args.interval,
        machine()
    );
    // 1. The dataplane: metering a packet per flow and link, and the source's tracker.
    let keys: Vec<FlowKey> = (0..flows)
        .map(|f| FlowKey {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            protocol: 6,
            sport: 10_000 + (f % 50_000) as u16,
            dport: (5201 + f / 50_000) as u16,
        })
        .collect();
    let packets = 5_000_000u64;
    let mut meter = dataplane::monitor::FlowMeter::default();
    let t = Instant::now();
    for i in 0..packets {
        meter.record(keys[(i % u64::from(flows)) as usize], 1500);
    }
    let meter_ns = t.elapsed().as_nanos() as f64 / packets as f64;
    let mut taken = Vec::new();
    let t = Instant::now();
    meter.take(2, &mut taken);
    let take_us = t.elapsed().as_secs_f64() * 1e6;
    let segment = |sport: u16| {
        let mut ip = vec![0u8; 1500];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&1500u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        ip[20..22].copy_from_slice(&sport.to_be_bytes());
        ip[22..24].copy_from_slice(&5201u16.to_be_bytes());
        ip[32] = 0x50;
        ip[33] = 0x10;
        ip
    };
    let frames: Vec<Vec<u8>> = (0..1024).map(|i| segment(10_000 + i)).collect();
    let mut apps = dataplane::monitor::AppFlows::default();
    let t = Instant::now();
    for i in 0..packets {
        apps.observe(i, &frames[(i % 1024) as usize]);
    }
    let observe_ns = t.elapsed().as_nanos() as f64 / packets as f64;
    let t = Instant::now();
    for i in 0..packets {
        std::hint::black_box(dataplane::monitor::flow_key(&frames[(i % 1024) as usize]));
    }
    let key_ns = t.elapsed().as_nanos() as f64 / packets as f64;
    println!();
    println!("| dataplane, per packet | cost |");
    println!("|---|---:|");
    println!("| 5-tuple of a packet | {key_ns:.0} ns |");
    println!("| metering it on its link ({flows} flows in the table) | {meter_ns:.0} ns |");
    println!("| the source's connection tracker (no SYN: a lookup) | {observe_ns:.0} ns |");
    println!("| handing over a link's {flows} flows at a report | {take_us:.0} µs |");

    // 2. The controller: turning one interval's reports into rows.
    let topology = topology::Preset::Ring { n: nodes }.build()?;
    let mut coordinator = Coordinator::new(
        topology,
        Settings {
            overlay_base: Ipv4Addr::new(10, 0, 0, 0),
            overlay_prefix_len: 16,
            force_network: false,
            network_transport: proto::Transport::Tcp,
            quic_congestion: proto::QuicCongestion::Cubic,
            link_protocols: Default::default(),
            lossless: Default::default(),
            node_port: 0,
            multi_host: false,
            dataplane: true,
            mtu: 1500,
            links: experiment::LinkPlan::unshaped(),
            metric: topology::routing::Metric::Hops,
            explicit_routes: Vec::new(),
            flow_port: proto::DEFAULT_FLOW_PORT,
            metrics_interval_ms: args.interval.duration().as_millis() as u32,
            max_nodes: Vec::new(),
            multicast_pool: proto::DEFAULT_MULTICAST_POOL,
        },
    );
    let interval_ns = args.interval.duration().as_nanos() as u64;
    let base_ns = dataplane::unix_ns();
    let intervals: Vec<Vec<proto::NodeToController>> = (0..args.intervals)
        .map(|i| synthetic_reports(flows, hops, nodes, base_ns + u64::from(i) * interval_ns))
        .collect();
    let wire: usize = intervals[0]
        .iter()
        .map(|m| proto::encode(m).map_or(0, |b| b.len()))
        .sum();
    let mut milestones: Vec<Vec<Milestone>> = Vec::new();
    let t = Instant::now();
    let now = Instant::now();
    for reports in &intervals {
        for (i, m) in reports.iter().enumerate() {
            coordinator.handle_node_message(now, i as u32 + 1, m.clone());
        }
        let mut out = Vec::new();
        while let Some(o) = coordinator.poll_output() {
            if let controller::coordinator::Output::Milestone(m) = o {
                out.push(m);
            }
        }
        milestones.push(out);
    }
    let controller_ms = t.elapsed().as_secs_f64() * 1e3 / f64::from(args.intervals);
    let rows: usize = milestones[0]
        .iter()
        .map(|m| match m {
            Milestone::Metrics(r) => r.flows.len() + r.links.len(),
            _ => 0,
        })
        .sum();
    println!();
    println!("| controller, per interval | |");
    println!("|---|---:|");
    println!("| reports on the wire | {:.1} MB |", wire as f64 / 1e6);
    println!("| rows made (flow samples + link samples) | {rows} |");
    println!("| handling the reports | {controller_ms:.1} ms |");

    // 3. The store: the rows written as they come, one interval's worth per interval.
    let dir = std::env::temp_dir().join(format!("nextmini-bench-monitor-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut stores = vec![format!("sqlite://{}/bench.db", dir.display())];
    stores.extend(args.db.clone());
    println!();
    println!(
        "| store | rows per interval | written in (mean per interval) | backlog at the end | CPU while writing |"
    );
    println!("|---|---:|---:|---:|---:|");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    for url in stores {
        let (mean, backlog, cpu) =
            rt.block_on(write_intervals(&url, &milestones, args.interval.duration()))?;
        println!(
            "| {} | {rows} | {:.0} ms | {:.0} ms | {:.0} % of a core |",
            controller::store::redact(&url),
            mean.as_secs_f64() * 1e3,
            backlog.as_secs_f64() * 1e3,
            cpu * 100.0
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Feeds a writer one interval's milestones per interval; the mean time an interval's rows
/// took to be written, what was left to write after the last, and the CPU share used.
async fn write_intervals(
    url: &str,
    intervals: &[Vec<Milestone>],
    every: Duration,
) -> Result<(Duration, Duration, f64)> {
    let store = Store::open(url).await?;
    let run = store
        .begin_run(&controller::store::RunStart {
            topology: "bench".into(),
            nodes: 0,
            links: 0,
        })
        .await?;
    let cpu0 = cpu_time();
    let wall = Instant::now();
    let mut spent = Duration::ZERO;
    let mut backlog = Duration::ZERO;
    for (i, ms) in intervals.iter().enumerate() {
        let due = wall + every * i as u32;
        tokio::time::sleep_until(due.into()).await;
        // One writer per interval, closed at its end: the time to close is the time the
        // interval's rows took.
        let writer = store.writer(run, Ipv4Addr::new(10, 0, 0, 0));
        let t = Instant::now();
        for m in ms {
            writer.record(m);
        }
        writer.close().await?;
        let took = t.elapsed();
        spent += took;
        if i + 1 == intervals.len() {
            backlog = took.saturating_sub(every);
        }
    }
    let cpu = (cpu_time() - cpu0).as_secs_f64() / wall.elapsed().as_secs_f64();
    store.close().await;
    Ok((spent / intervals.len() as u32, backlog, cpu))
}
