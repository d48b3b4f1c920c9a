//! `nextmini plumb`: the host plumbing alone, held until Ctrl-C.

use std::io::IsTerminal;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use hostnet::tuning::{Sysctl, tune_host};
use hostnet::{Fabric, FabricSpec, Prefix, UnderlayPlan};
use indicatif::{ProgressBar, ProgressStyle};
use nix::sys::signal::{SigSet, Signal};

use crate::host::{self, MemInfo};

/// How nodes are laid out and created on this host.
#[derive(Args, Debug, Clone)]
pub struct LayoutArgs {
    /// Prefix of every name the run creates (1-7 lowercase letters/digits, ending in a letter).
    #[arg(long, default_value = host::DEFAULT_PREFIX)]
    pub prefix: String,
    /// First underlay subnet: shards of /22 go upward from here.
    #[arg(long, default_value_t = hostnet::plan::DEFAULT_BASE)]
    pub base: Ipv4Addr,
    /// Node ids start at offset + 1 (for runs spread over several hosts).
    #[arg(long, default_value_t = 0)]
    pub node_id_offset: u32,
    /// Creator threads (at most the number of cores is used).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Don't bind-mount namespaces under --netns-dir (`ip netns` won't see them).
    #[arg(long)]
    pub no_mount: bool,
    /// Where namespaces are bind-mounted.
    #[arg(long, default_value = hostnet::netns::DEFAULT_NETNS_DIR)]
    pub netns_dir: PathBuf,
    /// Leave IPv6 on inside the nodes (it makes creation O(N²) on a shared bridge).
    #[arg(long)]
    pub ipv6: bool,
    /// Namespaces with `lo` only: no veth, bridge or underlay address.
    #[arg(long)]
    pub no_underlay: bool,
}

impl LayoutArgs {
    pub fn spec(&self, nodes: u32) -> Result<FabricSpec> {
        let prefix = Prefix::new(&self.prefix)?;
        self.spec_of(UnderlayPlan::new(
            prefix,
            self.base,
            nodes,
            self.node_id_offset,
        )?)
    }

    fn spec_of(&self, plan: UnderlayPlan) -> Result<FabricSpec> {
        Ok(FabricSpec {
            plan,
            netns_dir: (!self.no_mount).then(|| self.netns_dir.clone()),
            threads: self.threads,
            ipv6: self.ipv6,
            early_bridges: false,
            keep_fds: true,
            tunnel: None,
            underlay: !self.no_underlay,
        })
    }
}

#[derive(Args, Debug)]
pub struct PlumbArgs {
    /// Number of nodes.
    #[arg(long, short = 'n')]
    pub nodes: u32,
    #[command(flatten)]
    pub layout: LayoutArgs,
    /// Raise the host limits a run of this size needs, then exit.
    #[arg(long)]
    pub sysctl_only: bool,
    /// Tear down right after creating, instead of holding until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
}

pub fn run(args: PlumbArgs) -> Result<()> {
    host::require_root("nextmini plumb")?;
    let spec = args.layout.spec(args.nodes)?;
    tune_host(&Sysctl::default(), u64::from(args.nodes), 0)?;
    if args.sysctl_only {
        println!("host limits are set for {} nodes", args.nodes);
        return Ok(());
    }
    // Ctrl-C and SIGTERM are taken by sigwait below; block them before any thread starts so
    // that every thread inherits the mask and none is killed mid-way.
    let signals = SigSet::from_iter([Signal::SIGINT, Signal::SIGTERM]);
    signals.thread_block().context("blocking signals")?;

    let before = MemInfo::read();
    let bar = progress_bar(u64::from(args.nodes), "namespaces");
    let started = Instant::now();
    let fabric = Fabric::create(&spec, &|done, _| bar.set_position(u64::from(done)));
    bar.finish_and_clear();
    let fabric = fabric?;
    let seconds = started.elapsed().as_secs_f64();
    let after = MemInfo::read();
    let per_node = before.available.saturating_sub(after.available) / u64::from(args.nodes);
    println!(
        "{} nodes plumbed in {seconds:.3} s ({:.0} nodes/s) on {} bridge(s); {:.0} KiB of memory per node",
        args.nodes,
        f64::from(args.nodes) / seconds,
        fabric.bridges().len(),
        per_node as f64 / 1024.0
    );
    let first = &fabric.nodes()[0].plan;
    println!(
        "node {} is {} in namespace {}, gateway {}",
        first.node_id, first.addr, first.netns_name, first.gateway
    );
    if !args.exit {
        println!("holding; Ctrl-C (or SIGTERM) tears everything down");
        let signal = signals.wait().context("waiting for a signal")?;
        tracing::info!("{signal:?} received, tearing down");
    }
    let stats = fabric.teardown()?;
    println!("torn down in {:.3} s", stats.total.as_secs_f64());
    Ok(())
}

/// A bar on a terminal; hidden otherwise (logs tell the story there).
pub fn progress_bar(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {per_sec} {elapsed}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}
