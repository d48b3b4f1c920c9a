//! Placement without a head (`nextmini schedule`): an experiment planned over hosts named on
//! the command line, all of one size, and the agent command that starts each host's share by
//! hand.

use std::net::Ipv4Addr;

use scheduler::{Commit, Host, LoadMetric, Plan, Problem};

/// One host's share, and how to start it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostPlan {
    pub host: String,
    pub nodes: Vec<u32>,
    pub load: f64,
    /// `nextmini agent …` for this host (empty when it gets no nodes).
    pub agent: String,
}

/// A plan for the manual way.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OfflinePlan {
    pub experiment: String,
    pub nodes: u32,
    pub links: usize,
    pub links_across_hosts: usize,
    pub hosts: Vec<HostPlan>,
}

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("--hosts lists no host: e.g. --hosts 10.1.0.[1-3]")]
    NoHosts,
    #[error("--mv {0:?}: write it as nodes=host, e.g. 5-6=10.1.0.2")]
    BadMove(String),
    #[error(transparent)]
    Ranges(#[from] scheduler::ranges::RangeError),
    #[error(transparent)]
    Schedule(#[from] scheduler::ScheduleError),
}

/// Hosts of one size, for [`plan`].
#[derive(Debug, Clone)]
pub struct Hosts {
    /// Names or addresses, with ranges: `10.1.0.[1-3]`, `kn[008-011]`.
    pub list: String,
    pub cpus: u32,
    pub mem_mib: u64,
}

/// Plans `exp` on `hosts`, then moves nodes as asked (`5-6=10.1.0.2`, every constraint checked
/// again). `controller` is where the printed agent commands point (default: the first host).
pub fn plan(
    exp: &experiment::Experiment,
    hosts: &Hosts,
    load: LoadMetric,
    moves: &[String],
    controller: Option<&str>,
) -> Result<OfflinePlan, OfflineError> {
    let names = scheduler::ranges::split_list(&hosts.list)?;
    if names.is_empty() {
        return Err(OfflineError::NoHosts);
    }
    let host_list: Vec<Host> = names
        .iter()
        .map(|name| Host {
            name: name.clone(),
            cpus: hosts.cpus,
            mem_mib: hosts.mem_mib,
            committed: Commit::default(),
        })
        .collect();
    let edges = exp.topology.edges().to_vec();
    let weights: Vec<u64> = edges
        .iter()
        .map(|&(a, b)| exp.links.cut_weight(a, b))
        .collect();
    let problem = Problem {
        hosts: &host_list,
        nodes: &exp.placement,
        edges: &edges,
        edge_weights: &weights,
        metric: load,
    };
    let mut plan: Plan = scheduler::schedule(&problem)?;
    for m in moves {
        let (ids, host) = m
            .split_once('=')
            .ok_or_else(|| OfflineError::BadMove(m.clone()))?;
        let ids = topology::ids::parse_ids(ids).map_err(|_| OfflineError::BadMove(m.clone()))?;
        plan.move_nodes(&problem, &ids, host)?;
    }
    let controller = controller
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{}:{}", names[0], exp.port));
    let prefix = exp
        .prefix
        .clone()
        .unwrap_or_else(|| controller::local::DEFAULT_PREFIX.to_owned());
    let base = exp.underlay_base.unwrap_or(hostnet::plan::DEFAULT_BASE);
    let addresses: Option<Vec<Ipv4Addr>> = names.iter().map(|n| n.parse().ok()).collect();
    let shares = plan.shares(&problem);
    let out = host_list
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
            HostPlan {
                host: h.name.clone(),
                nodes: ids,
                load: share.load,
                agent,
            }
        })
        .collect();
    Ok(OfflinePlan {
        experiment: exp.name.clone(),
        nodes: exp.topology.n_nodes(),
        links: edges.len(),
        links_across_hosts: plan.cut_links(&edges),
        hosts: out,
    })
}

impl OfflinePlan {
    /// The plan as tables, then each host's agent command.
    pub fn text(&self, load: LoadMetric) -> String {
        use std::fmt::Write as _;
        let mut out = format!(
            "{}: {} nodes on {} hosts by {load}; {} of {} links cross hosts\n\n| host | nodes | count | load |\n|---|---|---:|---:|\n",
            self.experiment,
            self.nodes,
            self.hosts.len(),
            self.links_across_hosts,
            self.links
        );
        for h in &self.hosts {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.4} |",
                h.host,
                topology::ids::format_ids(&h.nodes),
                h.nodes.len(),
                h.load
            );
        }
        out.push('\n');
        for h in self.hosts.iter().filter(|h| !h.agent.is_empty()) {
            let _ = writeln!(out, "# on {}:\n{}", h.host, h.agent);
        }
        out
    }
}
