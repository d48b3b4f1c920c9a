//! `nextmini schedule`: where an experiment's nodes would go on a set of hosts, before anything
//! launches (minimega's `ns schedule dry-run`, `mv` and `dump` in one command), and the agent
//! command that starts each host's share.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use experiment::ExperimentFile;

#[derive(Args, Debug)]
pub struct ScheduleArgs {
    /// The experiment file (its `[[placement]]` entries are the constraints).
    pub file: PathBuf,
    /// The hosts, by address or name, with ranges: 10.1.0.[1-3], kn[008-011].
    #[arg(long)]
    pub hosts: String,
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

#[derive(serde::Serialize)]
struct HostOut {
    host: String,
    nodes: Vec<u32>,
    load: f64,
    agent: String,
}

pub fn run(args: ScheduleArgs) -> Result<()> {
    let file = ExperimentFile::load(&args.file)?;
    let exp = file.resolve(Some(&args.file))?;
    let names = scheduler::ranges::split_list(&args.hosts)?;
    if names.is_empty() {
        bail!("--hosts lists no host: e.g. --hosts 10.1.0.[1-3]");
    }
    let cpus = args
        .cpus
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    let mem_mib = args
        .mem_mib
        .unwrap_or_else(|| hostnet::procfs::kib_field("/proc/meminfo", "MemTotal") >> 20);
    let hosts: Vec<scheduler::Host> = names
        .iter()
        .map(|name| scheduler::Host {
            name: name.clone(),
            cpus,
            mem_mib,
            committed: scheduler::Commit::default(),
        })
        .collect();
    let nodes = exp.placement.clone();
    let edges = exp.topology.edges().to_vec();
    let problem = scheduler::Problem {
        hosts: &hosts,
        nodes: &nodes,
        edges: &edges,
        metric: args.load,
    };
    let mut plan = scheduler::schedule(&problem)?;
    for m in &args.moves {
        let (ids, host) = m
            .split_once('=')
            .with_context(|| format!("--mv {m:?}: write it as nodes=host, e.g. 5-6=10.1.0.2"))?;
        let ids = topology::ids::parse_ids(ids).map_err(|e| anyhow::anyhow!("--mv {m:?}: {e}"))?;
        plan.move_nodes(&problem, &ids, host)?;
    }

    let controller = args
        .controller
        .clone()
        .unwrap_or_else(|| format!("{}:{}", names[0], exp.port));
    let prefix = exp
        .prefix
        .clone()
        .unwrap_or_else(|| crate::host::DEFAULT_PREFIX.to_owned());
    let base = exp.underlay_base.unwrap_or(hostnet::plan::DEFAULT_BASE);
    let addresses: Option<Vec<Ipv4Addr>> = names.iter().map(|n| n.parse().ok()).collect();
    let shares = plan.shares(&problem);
    let out: Vec<HostOut> = hosts
        .iter()
        .zip(&shares)
        .map(|(h, share)| {
            let ids: Vec<u32> = plan
                .host_of
                .iter()
                .filter(|(_, on)| **on == h.name)
                .map(|(id, _)| *id)
                .collect();
            let peers = match &addresses {
                Some(all) => all
                    .iter()
                    .filter(|a| a.to_string() != h.name)
                    .map(Ipv4Addr::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                None => "<the other hosts' addresses>".to_owned(),
            };
            let agent = if ids.is_empty() {
                String::new()
            } else {
                format!(
                    "nextmini agent --controller {controller} --nodes {} --prefix {prefix} --base {base} --peers {peers}",
                    topology::ids::format_ids(&ids)
                )
            };
            HostOut {
                host: h.name.clone(),
                nodes: ids,
                load: share.load,
                agent,
            }
        })
        .collect();
    if args.json {
        let doc = serde_json::json!({
            "experiment": exp.name,
            "nodes": exp.topology.n_nodes(),
            "links": edges.len(),
            "links_across_hosts": plan.cut_links(&edges),
            "hosts": out,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "{}: {} nodes on {} hosts by {}; {} of {} links cross hosts",
        exp.name,
        exp.topology.n_nodes(),
        hosts.len(),
        args.load,
        plan.cut_links(&edges),
        edges.len()
    );
    println!();
    println!("| host | nodes | count | load |");
    println!("|---|---|---:|---:|");
    for h in &out {
        println!(
            "| {} | {} | {} | {:.4} |",
            h.host,
            topology::ids::format_ids(&h.nodes),
            h.nodes.len(),
            h.load
        );
    }
    println!();
    for h in out.iter().filter(|h| !h.agent.is_empty()) {
        println!("# on {}:\n{}", h.host, h.agent);
    }
    Ok(())
}
