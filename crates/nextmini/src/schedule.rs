//! `nextmini schedule`: where an experiment's nodes would go on a set of hosts, before anything
//! launches (minimega's `ns schedule dry-run`, `mv` and `dump` in one command), and the agent
//! command that starts each host's share.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use experiment::ExperimentFile;

#[derive(Args, Debug)]
pub struct ScheduleArgs {
    /// The experiment file (its `[[placement]]` entries are the constraints).
    pub file: PathBuf,
    /// The hosts, by address or name, with ranges: 10.1.0.[1-3], kn[008-011].
    #[arg(long)]
    pub hosts: crate::host::HostList,
    /// CPUs of each host [default: this machine's].
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Memory of each host in MiB [default: this machine's].
    #[arg(long)]
    pub mem_mib: Option<u64>,
    /// What "least loaded" means: cpucommit, memcommit or netcommit.
    #[arg(long, default_value = "cpucommit")]
    pub load: scheduler::LoadMetric,
    /// Move nodes after planning, e.g. 5-6=10.1.0.2 (repeatable; checked against every
    /// constraint).
    #[arg(long = "mv")]
    pub moves: Vec<String>,
    /// The controller, for the agent commands printed [default: the first host, port 3000].
    #[arg(long)]
    pub controller: Option<String>,
    /// The plan as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: ScheduleArgs) -> Result<()> {
    let exp = ExperimentFile::load(&args.file)?.resolve(Some(&args.file))?;
    let hosts = head::offline::Hosts {
        list: args.hosts.0.clone(),
        cpus: args
            .cpus
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32)),
        mem_mib: args
            .mem_mib
            .unwrap_or_else(|| hostnet::procfs::kib_field("/proc/meminfo", "MemTotal") >> 20),
    };
    let plan = head::offline::plan(
        &exp,
        &hosts,
        args.load,
        &args.moves,
        args.controller.as_deref(),
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", plan.text(args.load));
    }
    Ok(())
}
