//! Measuring the scheduler: placement time, balance and links cut, for an experiment of many
//! nodes on many hosts (`nextmini bench schedule` prints what [`place`] measures).

use std::time::{Duration, Instant};

use crate::{Commit, Host, LoadMetric, NodeReq, Problem, ScheduleError};

/// One case: a topology on a number of hosts.
#[derive(Debug, Clone)]
pub struct Row {
    pub topology: String,
    pub nodes: u32,
    pub links: usize,
    pub hosts: usize,
    /// Nodes pinned to a host or coscheduled.
    pub constrained: usize,
    pub fastest: Duration,
    pub median: Duration,
    /// Nodes per host, fewest and most.
    pub min_nodes: u32,
    pub max_nodes: u32,
    pub links_across_hosts: usize,
}

/// Places `topology` on `hosts` hosts of 8 CPUs, a tenth of them already half loaded by another
/// experiment, every twentieth node pinned or coscheduled, `repeat` times.
pub fn place(
    topology: &topology::Topology,
    hosts: usize,
    repeat: usize,
) -> Result<Row, ScheduleError> {
    let edges = topology.edges().to_vec();
    let n = topology.n_nodes();
    let mut degree = vec![0u32; n as usize];
    for &(a, b) in &edges {
        degree[a as usize - 1] += 1;
        degree[b as usize - 1] += 1;
    }
    let host_list: Vec<Host> = (1..=hosts)
        .map(|i| Host {
            name: format!("kn{i:03}"),
            cpus: 8,
            mem_mib: 65_536,
            committed: Commit {
                cpu: if i % 10 == 0 { 4.0 } else { 0.0 },
                ..Default::default()
            },
        })
        .collect();
    let nodes: Vec<NodeReq> = (1..=n)
        .map(|id| {
            let mut req = NodeReq::new(id, degree[id as usize - 1]);
            if id % 40 == 0 {
                req.schedule = Some(host_list[(id as usize / 40) % hosts].name.clone());
            } else if id % 40 == 20 {
                req.coschedule = Some(n / hosts as u32 * 2);
            }
            req
        })
        .collect();
    let constrained = nodes
        .iter()
        .filter(|r| r.schedule.is_some() || r.coschedule.is_some())
        .count();
    let problem = Problem {
        hosts: &host_list,
        nodes: &nodes,
        edges: &edges,
        edge_weights: &[],
        metric: LoadMetric::CpuCommit,
    };
    let mut times = Vec::new();
    let mut plan = None;
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        plan = Some(crate::schedule(&problem)?);
        times.push(start.elapsed());
    }
    times.sort();
    let plan = plan.expect("ran at least once");
    let shares = plan.shares(&problem);
    Ok(Row {
        topology: topology.label.clone(),
        nodes: n,
        links: edges.len(),
        hosts,
        constrained,
        fastest: times[0],
        median: times[times.len() / 2],
        min_nodes: shares.iter().map(|s| s.nodes).min().unwrap_or(0),
        max_nodes: shares.iter().map(|s| s.nodes).max().unwrap_or(0),
        links_across_hosts: plan.cut_links(&edges),
    })
}
