//! The head's bookkeeping: the hosts that registered, the experiments that share them, what
//! each experiment placed where (minimega's namespaces, as a plain state machine: no sockets,
//! no clock; time comes in as seconds).
//!
//! - The default experiment holds the head's own host only; a new one gets every registered
//!   host except the head's, or the head's when there is no other.
//! - `hosts add` is all-or-nothing and takes registered hosts only (or `all`); `hosts del`
//!   ignores names it does not hold (or `all`).
//! - Placement counts what every experiment already holds on a host.
//! - Each launched experiment gets its own prefix (its name), underlay range and VXLAN
//!   network identifier, so experiments never share a name, an address or a frame.
//! - `clear` refuses while a launch is still being confirmed, and clears on the hosts that are
//!   up; a host that went down is reported, not waited for.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use scheduler::{Commit, Host, LoadMetric, NodeReq, Plan, Problem};

pub const DEFAULT_EXPERIMENT: &str = "default";

/// Where experiments' underlays start; each takes whole /22 shards from here on.
const UNDERLAY_START: u32 = u32::from_be_bytes([172, 24, 0, 0]);
const UNDERLAY_END: u32 = u32::from_be_bytes([172, 31, 255, 255]);
const SHARD_SIZE: u32 = 1024;
const NODES_PER_SHARD: u32 = 1021;
/// VXLAN network identifiers of experiments start here (each shard adds its number).
const VNI_START: u32 = 10_000;
const VNI_STRIDE: u32 = 100;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HostInfo {
    pub name: String,
    pub addr: Ipv4Addr,
    pub cpus: u32,
    pub mem_mib: u64,
    pub up: bool,
    /// Last reported one-minute load average and available memory.
    #[serde(default)]
    pub load1: f64,
    #[serde(default)]
    pub mem_available_mib: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleState {
    Launching,
    Completed,
}

impl std::fmt::Display for ScheduleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ScheduleState::Launching => "launching",
            ScheduleState::Completed => "completed",
        })
    }
}

/// One launch, as `schedule status` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScheduleStat {
    pub start: u64,
    pub end: Option<u64>,
    pub state: ScheduleState,
    pub launched: u32,
    pub failures: u32,
    pub total: u32,
    pub hosts: u32,
}

/// What a launched experiment holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub prefix: String,
    pub base: Ipv4Addr,
    pub vni: u32,
    /// The experiment's controller port on the head.
    pub port: u16,
    /// Node ids per host.
    pub shares: BTreeMap<String, Vec<u32>>,
    /// Per node: CPU share, memory, links (what it commits on its host).
    pub demand: BTreeMap<u32, (f64, f64, u32)>,
    /// Hosts that have not answered the launch yet.
    pub waiting: BTreeSet<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Experiment {
    pub hosts: BTreeSet<String>,
    /// Launch orders wait (as a dry run) until a launch without a file (minimega's
    /// `ns queueing`).
    pub queueing: bool,
    pub load: LoadMetric,
    pub dry_run: Option<Plan>,
    pub launch: Option<Launch>,
    pub schedules: Vec<ScheduleStat>,
}

/// A row of `nextmini exp`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExperimentRow {
    pub name: String,
    pub nodes: u32,
    pub hosts: String,
    pub active: bool,
}

/// A row of `nextmini hosts`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HostRow {
    pub name: String,
    pub addr: Ipv4Addr,
    pub cpus: u32,
    pub mem_mib: u64,
    pub up: bool,
    pub load1: f64,
    pub mem_available_mib: u64,
    /// Nodes of all experiments on the host.
    pub nodes: u32,
}

/// An order for one host.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchOrder {
    pub host: String,
    pub node_ids: Vec<u32>,
    pub peers: Vec<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HeadError {
    #[error(
        "{0:?} is not a valid experiment name: 1 to 7 lowercase letters or digits, starting and ending with a letter, and not a word of `nextmini exp` (it becomes the prefix of everything the experiment creates)"
    )]
    BadName(String),
    #[error("no experiment {0}: create it with `nextmini exp {0}`")]
    NoExperiment(String),
    #[error("unknown host {0}: only registered hosts can be added (see `nextmini hosts`)")]
    UnknownHost(String),
    #[error("experiment {0} is already launched: clear it first (`nextmini exp clear {0}`)")]
    AlreadyLaunched(String),
    #[error("experiment {0} is still launching on {1}: wait for it, then clear")]
    StillLaunching(String, String),
    #[error(
        "experiment {0} has no hosts that are up: add some with `nextmini exp {0} hosts add …`"
    )]
    NoHosts(String),
    #[error(
        "no dry run of {0} to move nodes in: run `nextmini exp {0} launch FILE --dry-run` first"
    )]
    NoDryRun(String),
    #[error("the underlay ranges for experiments (172.24.0.0-172.31.255.255) are used up")]
    NoAddresses,
    #[error("{0}")]
    Ranges(#[from] scheduler::ranges::RangeError),
    #[error("{0}")]
    Schedule(#[from] scheduler::ScheduleError),
}

/// What the head keeps across restarts: experiments with their host sets and settings, the
/// active one, and clears still owed to hosts. Launches are not kept (their controllers end
/// with the head, and the hosts remove them); their hosts are owed a clear instead.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub active: String,
    pub experiments: BTreeMap<String, SavedExperiment>,
    pub pending_clears: BTreeMap<String, BTreeSet<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedExperiment {
    pub hosts: BTreeSet<String>,
    pub queueing: bool,
    pub load: String,
}

#[derive(Debug)]
pub struct Head {
    /// The head's own host name.
    head_host: String,
    hosts: BTreeMap<String, HostInfo>,
    experiments: BTreeMap<String, Experiment>,
    active: String,
    /// Experiments cleared while a host holding some of their nodes was down: cleared there
    /// when it comes back.
    pending_clears: BTreeMap<String, BTreeSet<String>>,
}

/// Words the command line uses after `nextmini exp`, which can't be experiment names.
const RESERVED: [&str; 9] = [
    "launch", "mv", "status", "hosts", "clear", "all", "dump", "queueing", "exec",
];

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    if RESERVED.contains(&name) {
        return false;
    }
    (1..=7).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1].is_ascii_lowercase()
}

impl Head {
    pub fn new(head_host: &str) -> Head {
        let mut head = Head {
            head_host: head_host.to_owned(),
            hosts: BTreeMap::new(),
            experiments: BTreeMap::new(),
            active: DEFAULT_EXPERIMENT.to_owned(),
            pending_clears: BTreeMap::new(),
        };
        head.ensure_default();
        head
    }

    fn ensure_default(&mut self) {
        let host = self.head_host.clone();
        self.experiments
            .entry(DEFAULT_EXPERIMENT.to_owned())
            .or_insert_with(|| Experiment {
                hosts: BTreeSet::from([host]),
                ..Default::default()
            });
    }

    /// The state worth keeping across a restart.
    pub fn snapshot(&self) -> Snapshot {
        let mut pending = self.pending_clears.clone();
        for (name, e) in &self.experiments {
            if let Some(l) = &e.launch {
                for host in l.shares.keys() {
                    pending
                        .entry(host.clone())
                        .or_default()
                        .insert(name.clone());
                }
            }
        }
        Snapshot {
            active: self.active.clone(),
            experiments: self
                .experiments
                .iter()
                .map(|(n, e)| {
                    (
                        n.clone(),
                        SavedExperiment {
                            hosts: e.hosts.clone(),
                            queueing: e.queueing,
                            load: e.load.to_string(),
                        },
                    )
                })
                .collect(),
            pending_clears: pending,
        }
    }

    /// A head that picks up where a snapshot left off (hosts register again by themselves).
    pub fn restore(head_host: &str, snapshot: Snapshot) -> Head {
        let mut head = Head::new(head_host);
        for (name, saved) in snapshot.experiments {
            head.experiments.insert(
                name,
                Experiment {
                    hosts: saved.hosts,
                    queueing: saved.queueing,
                    load: saved.load.parse().unwrap_or_default(),
                    ..Default::default()
                },
            );
        }
        if head.experiments.contains_key(&snapshot.active) {
            head.active = snapshot.active;
        }
        head.pending_clears = snapshot.pending_clears;
        head.ensure_default();
        head
    }

    pub fn active(&self) -> &str {
        &self.active
    }

    pub fn experiment(&self, name: &str) -> Result<&Experiment, HeadError> {
        self.experiments
            .get(name)
            .ok_or_else(|| HeadError::NoExperiment(name.to_owned()))
    }

    fn experiment_mut(&mut self, name: &str) -> Result<&mut Experiment, HeadError> {
        self.experiments
            .get_mut(name)
            .ok_or_else(|| HeadError::NoExperiment(name.to_owned()))
    }

    /// A host agent said hello (again, after a reconnect). Returns the experiments to clear
    /// there: cleared while it was down.
    pub fn host_up(&mut self, info: HostInfo) -> Vec<String> {
        let name = info.name.clone();
        self.hosts
            .insert(name.clone(), HostInfo { up: true, ..info });
        self.pending_clears
            .remove(&name)
            .map(|s| s.into_iter().collect())
            .unwrap_or_default()
    }

    /// A host's load report.
    pub fn host_load(&mut self, name: &str, load1: f64, mem_available_mib: u64) {
        if let Some(h) = self.hosts.get_mut(name) {
            h.load1 = load1;
            h.mem_available_mib = mem_available_mib;
        }
    }

    /// A host agent's session ended: the host is down. Returns, per experiment, the nodes it
    /// held there (lost).
    pub fn host_down(&mut self, name: &str) -> Vec<(String, Vec<u32>)> {
        if let Some(h) = self.hosts.get_mut(name) {
            h.up = false;
        }
        let mut lost = Vec::new();
        for (exp, e) in &mut self.experiments {
            if let Some(l) = &mut e.launch {
                l.waiting.remove(name);
                if let Some(ids) = l.shares.get(name) {
                    lost.push((exp.clone(), ids.clone()));
                }
            }
        }
        lost
    }

    pub fn host_rows(&self) -> Vec<HostRow> {
        self.hosts
            .values()
            .map(|h| HostRow {
                name: h.name.clone(),
                addr: h.addr,
                cpus: h.cpus,
                mem_mib: h.mem_mib,
                up: h.up,
                load1: h.load1,
                mem_available_mib: h.mem_available_mib,
                nodes: self
                    .experiments
                    .values()
                    .filter_map(|e| e.launch.as_ref())
                    .filter_map(|l| l.shares.get(&h.name))
                    .map(|ids| ids.len() as u32)
                    .sum(),
            })
            .collect()
    }

    pub fn experiment_rows(&self) -> Vec<ExperimentRow> {
        self.experiments
            .iter()
            .map(|(name, e)| ExperimentRow {
                name: name.clone(),
                nodes: e
                    .launch
                    .as_ref()
                    .map_or(0, |l| l.shares.values().map(|v| v.len() as u32).sum()),
                hosts: scheduler::ranges::unsplit_list(&e.hosts.iter().collect::<Vec<_>>()),
                active: *name == self.active,
            })
            .collect()
    }

    /// `nextmini exp <name>`: creates the experiment if it is new, and makes it the active one.
    pub fn switch(&mut self, name: &str) -> Result<(), HeadError> {
        if !valid_name(name) {
            return Err(HeadError::BadName(name.to_owned()));
        }
        if !self.experiments.contains_key(name) {
            let others: BTreeSet<String> = self
                .hosts
                .keys()
                .filter(|h| **h != self.head_host)
                .cloned()
                .collect();
            let hosts = if others.is_empty() {
                BTreeSet::from([self.head_host.clone()])
            } else {
                others
            };
            self.experiments.insert(
                name.to_owned(),
                Experiment {
                    hosts,
                    ..Default::default()
                },
            );
        }
        self.active = name.to_owned();
        Ok(())
    }

    pub fn set_queueing(&mut self, exp: &str, on: bool) -> Result<(), HeadError> {
        self.experiment_mut(exp)?.queueing = on;
        Ok(())
    }

    /// `hosts add <list>`: every name must be a registered host (or `all`), or nothing is
    /// added.
    pub fn hosts_add(&mut self, exp: &str, list: &str) -> Result<(), HeadError> {
        let names = scheduler::ranges::split_list(list)?;
        let mut add = BTreeSet::new();
        for n in names {
            if n == "all" {
                add.extend(self.hosts.keys().filter(|h| **h != self.head_host).cloned());
            } else if self.hosts.contains_key(&n) || n == self.head_host {
                add.insert(n);
            } else {
                return Err(HeadError::UnknownHost(n));
            }
        }
        self.experiment_mut(exp)?.hosts.extend(add);
        Ok(())
    }

    /// `hosts del <list>`: names it does not hold are ignored; `all` empties the set.
    pub fn hosts_del(&mut self, exp: &str, list: &str) -> Result<(), HeadError> {
        let names = scheduler::ranges::split_list(list)?;
        let e = self.experiment_mut(exp)?;
        for n in names {
            if n == "all" {
                e.hosts.clear();
            } else {
                e.hosts.remove(&n);
            }
        }
        Ok(())
    }

    /// The hosts an experiment may use now (in its set and up), with what every launched
    /// experiment already holds on each.
    fn candidate_hosts(&self, exp: &str) -> Result<Vec<Host>, HeadError> {
        let e = self.experiment(exp)?;
        let mut hosts = Vec::new();
        for name in &e.hosts {
            let Some(info) = self.hosts.get(name).filter(|h| h.up) else {
                continue;
            };
            let mut committed = Commit::default();
            for l in self.experiments.values().filter_map(|e| e.launch.as_ref()) {
                for id in l.shares.get(name).into_iter().flatten() {
                    let (cpu, mem, links) = l.demand[id];
                    committed.cpu += cpu;
                    committed.mem_mib += mem;
                    committed.links += u64::from(links);
                    committed.nodes += 1;
                }
            }
            hosts.push(Host {
                name: name.clone(),
                cpus: info.cpus,
                mem_mib: info.mem_mib,
                committed,
            });
        }
        if hosts.is_empty() {
            return Err(HeadError::NoHosts(exp.to_owned()));
        }
        Ok(hosts)
    }

    /// Plans an experiment's nodes on its hosts; a dry run keeps the plan for `mv` and a
    /// later launch.
    pub fn plan(
        &mut self,
        exp: &str,
        nodes: &[NodeReq],
        (edges, edge_weights): (&[(u32, u32)], &[u64]),
        load: LoadMetric,
        dry_run: bool,
    ) -> Result<Plan, HeadError> {
        if self.experiment(exp)?.launch.is_some() {
            return Err(HeadError::AlreadyLaunched(exp.to_owned()));
        }
        let hosts = self.candidate_hosts(exp)?;
        let problem = Problem {
            hosts: &hosts,
            nodes,
            edges,
            edge_weights,
            metric: load,
        };
        // A dry run's plan, moved by hand, is kept if it still holds.
        let kept = self
            .experiment(exp)?
            .dry_run
            .clone()
            .filter(|p| p.host_of.len() == nodes.len() && p.check(&problem).is_ok());
        let plan = match kept {
            Some(p) => p,
            None => scheduler::schedule(&problem)?,
        };
        let e = self.experiment_mut(exp)?;
        e.load = load;
        e.dry_run = dry_run.then(|| plan.clone());
        Ok(plan)
    }

    /// `schedule mv` on the stored dry run.
    pub fn move_nodes(
        &mut self,
        exp: &str,
        nodes: &[NodeReq],
        (edges, edge_weights): (&[(u32, u32)], &[u64]),
        ids: &[u32],
        host: &str,
    ) -> Result<Plan, HeadError> {
        let hosts = self.candidate_hosts(exp)?;
        let e = self.experiment(exp)?;
        let mut plan = e
            .dry_run
            .clone()
            .ok_or_else(|| HeadError::NoDryRun(exp.to_owned()))?;
        let problem = Problem {
            hosts: &hosts,
            nodes,
            edges,
            edge_weights,
            metric: e.load,
        };
        plan.move_nodes(&problem, ids, host)?;
        self.experiment_mut(exp)?.dry_run = Some(plan.clone());
        Ok(plan)
    }

    /// Records a launch of `plan` and returns each host's order. The experiment's underlay
    /// range and VNI are chosen here, clear of every other experiment's.
    pub fn launch(
        &mut self,
        exp: &str,
        plan: &Plan,
        nodes: &[NodeReq],
        port: u16,
        now: u64,
    ) -> Result<(Launch, Vec<LaunchOrder>), HeadError> {
        if self.experiment(exp)?.launch.is_some() {
            return Err(HeadError::AlreadyLaunched(exp.to_owned()));
        }
        let n = nodes.len() as u32;
        let base = self.free_underlay(n)?;
        let vni = self.free_vni();
        let mut shares: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (id, host) in &plan.host_of {
            shares.entry(host.clone()).or_default().push(*id);
        }
        let addrs: BTreeMap<&String, Ipv4Addr> = shares
            .keys()
            .map(|h| {
                (
                    h,
                    self.hosts.get(h).map_or(Ipv4Addr::UNSPECIFIED, |i| i.addr),
                )
            })
            .collect();
        let orders: Vec<LaunchOrder> = shares
            .iter()
            .map(|(host, ids)| LaunchOrder {
                host: host.clone(),
                node_ids: ids.clone(),
                peers: addrs
                    .iter()
                    .filter(|(h, _)| **h != host)
                    .map(|(_, a)| *a)
                    .collect(),
            })
            .collect();
        let launch = Launch {
            prefix: exp.to_owned(),
            base,
            vni,
            port,
            waiting: shares.keys().cloned().collect(),
            shares,
            demand: nodes
                .iter()
                .map(|n| (n.id, (n.cpu, n.mem_mib, n.links)))
                .collect(),
        };
        let e = self.experiment_mut(exp)?;
        e.dry_run = None;
        e.schedules.push(ScheduleStat {
            start: now,
            end: None,
            state: ScheduleState::Launching,
            launched: 0,
            failures: 0,
            total: n,
            hosts: orders.len() as u32,
        });
        e.launch = Some(launch.clone());
        Ok((launch, orders))
    }

    /// A host answered its launch order.
    pub fn host_launched(&mut self, exp: &str, host: &str, ok: bool, now: u64) {
        let Some(e) = self.experiments.get_mut(exp) else {
            return;
        };
        let Some(l) = &mut e.launch else {
            return;
        };
        if !l.waiting.remove(host) {
            return;
        }
        let count = l.shares.get(host).map_or(0, |v| v.len() as u32);
        let done = l.waiting.is_empty();
        if let Some(stat) = e.schedules.last_mut() {
            if ok {
                stat.launched += count;
            } else {
                stat.failures += count;
            }
            if done {
                stat.state = ScheduleState::Completed;
                stat.end = Some(now);
            }
        }
    }

    /// `exp clear <name>`: the hosts to send a clear to (those up that hold nodes of it) and
    /// those that are down (nothing can be done there until they come back). The experiment
    /// is forgotten; the default one comes back empty.
    #[allow(clippy::type_complexity)]
    pub fn clear(
        &mut self,
        exp: &str,
    ) -> Result<(Vec<(String, Ipv4Addr)>, Vec<String>), HeadError> {
        let e = self.experiment(exp)?;
        if let Some(l) = &e.launch
            && !l.waiting.is_empty()
        {
            let waiting: Vec<&String> = l.waiting.iter().collect();
            return Err(HeadError::StillLaunching(
                exp.to_owned(),
                scheduler::ranges::unsplit_list(&waiting),
            ));
        }
        let mut up = Vec::new();
        let mut down = Vec::new();
        if let Some(l) = &e.launch {
            for host in l.shares.keys() {
                match self.hosts.get(host) {
                    Some(h) if h.up => up.push((host.clone(), h.addr)),
                    _ => down.push(host.clone()),
                }
            }
        }
        for host in &down {
            self.pending_clears
                .entry(host.clone())
                .or_default()
                .insert(exp.to_owned());
        }
        self.experiments.remove(exp);
        if self.active == exp {
            self.active = DEFAULT_EXPERIMENT.to_owned();
        }
        self.ensure_default();
        Ok((up, down))
    }

    pub fn experiment_names(&self) -> Vec<String> {
        self.experiments.keys().cloned().collect()
    }

    fn free_underlay(&self, nodes: u32) -> Result<Ipv4Addr, HeadError> {
        let shards = nodes.div_ceil(NODES_PER_SHARD).max(1);
        let size = shards * SHARD_SIZE;
        let mut taken: Vec<(u32, u32)> = self
            .experiments
            .values()
            .filter_map(|e| e.launch.as_ref())
            .map(|l| {
                let start = u32::from(l.base);
                let n: u32 = l.shares.values().map(|v| v.len() as u32).sum();
                (
                    start,
                    start + n.div_ceil(NODES_PER_SHARD).max(1) * SHARD_SIZE,
                )
            })
            .collect();
        taken.sort_unstable();
        let mut at = UNDERLAY_START;
        for (start, end) in taken {
            if at + size <= start {
                break;
            }
            at = at.max(end);
        }
        if at
            .checked_add(size)
            .is_none_or(|end| end - 1 > UNDERLAY_END)
        {
            return Err(HeadError::NoAddresses);
        }
        Ok(Ipv4Addr::from(at))
    }

    fn free_vni(&self) -> u32 {
        let used: BTreeSet<u32> = self
            .experiments
            .values()
            .filter_map(|e| e.launch.as_ref())
            .map(|l| l.vni)
            .collect();
        (0..)
            .map(|k| VNI_START + k * VNI_STRIDE)
            .find(|v| !used.contains(v))
            .expect("a free VNI")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, last: u8) -> HostInfo {
        HostInfo {
            name: name.into(),
            addr: Ipv4Addr::new(10, 1, 0, last),
            cpus: 8,
            mem_mib: 16_384,
            up: true,
            load1: 0.0,
            mem_available_mib: 16_000,
        }
    }

    fn head() -> Head {
        let mut h = Head::new("head");
        for (i, n) in ["kn008", "kn009", "kn010"].iter().enumerate() {
            h.host_up(host(n, i as u8 + 1));
        }
        h
    }

    fn ring(n: u32) -> (Vec<NodeReq>, Vec<(u32, u32)>) {
        let edges: Vec<(u32, u32)> = (1..=n).map(|i| (i, i % n + 1)).collect();
        ((1..=n).map(|i| NodeReq::new(i, 2)).collect(), edges)
    }

    #[test]
    fn experiments_get_hosts_as_minimega_gives_them() {
        let mut h = head();
        assert_eq!(
            h.experiment("default").unwrap().hosts,
            BTreeSet::from(["head".to_owned()])
        );
        h.switch("ea").unwrap();
        assert_eq!(h.active(), "ea");
        let rows = h.experiment_rows();
        let ea = rows.iter().find(|r| r.name == "ea").unwrap();
        assert_eq!((ea.hosts.as_str(), ea.active), ("kn[008-010]", true));
        assert!(matches!(h.switch("Bad"), Err(HeadError::BadName(_))));
        assert!(matches!(h.switch("launch"), Err(HeadError::BadName(_))));
        // Alone, a head gives new experiments itself.
        let mut lone = Head::new("solo");
        lone.switch("eb").unwrap();
        assert_eq!(
            lone.experiment("eb").unwrap().hosts,
            BTreeSet::from(["solo".to_owned()])
        );
    }

    #[test]
    fn hosts_add_is_all_or_nothing_and_del_ignores_strangers() {
        let mut h = head();
        h.switch("ea").unwrap();
        h.hosts_del("ea", "all").unwrap();
        assert!(h.experiment("ea").unwrap().hosts.is_empty());
        let e = h.hosts_add("ea", "kn[008-009],kn011").unwrap_err();
        assert_eq!(e, HeadError::UnknownHost("kn011".into()));
        assert!(
            h.experiment("ea").unwrap().hosts.is_empty(),
            "nothing added"
        );
        h.hosts_add("ea", "kn[008-009]").unwrap();
        h.hosts_del("ea", "kn009,nowhere").unwrap();
        assert_eq!(h.experiment_rows()[1].hosts, "kn008");
        h.hosts_add("ea", "all").unwrap();
        assert_eq!(h.experiment("ea").unwrap().hosts.len(), 3);
    }

    #[test]
    fn launches_get_their_own_underlay_and_vni_and_count_on_shared_hosts() {
        let mut h = head();
        let (nodes, edges) = ring(30);
        h.switch("ea").unwrap();
        let plan = h
            .plan("ea", &nodes, (&edges, &[]), LoadMetric::CpuCommit, false)
            .unwrap();
        let (a, orders) = h.launch("ea", &plan, &nodes, 4000, 10).unwrap();
        assert_eq!(orders.len(), 3);
        assert!(
            orders
                .iter()
                .all(|o| o.node_ids.len() == 10 && o.peers.len() == 2)
        );
        assert!(matches!(
            h.plan("ea", &nodes, (&edges, &[]), LoadMetric::CpuCommit, false),
            Err(HeadError::AlreadyLaunched(_))
        ));
        // A second experiment on two of the hosts: kn008 already carries 10 of ea's nodes.
        h.switch("eb").unwrap();
        h.hosts_del("eb", "kn010").unwrap();
        let (small, small_edges) = ring(2000);
        let plan = h
            .plan(
                "eb",
                &small,
                (&small_edges, &[]),
                LoadMetric::CpuCommit,
                false,
            )
            .unwrap();
        let (b, _) = h.launch("eb", &plan, &small, 4001, 11).unwrap();
        assert_ne!(a.vni, b.vni);
        assert_ne!(a.base, b.base);
        assert!(
            u32::from(b.base) >= u32::from(a.base) + SHARD_SIZE,
            "ea's range is left alone"
        );
        let rows = h.host_rows();
        assert_eq!(rows.iter().map(|r| r.nodes).sum::<u32>(), 2030);
        // Clearing ea frees its range for the next experiment.
        h.host_launched("ea", "kn008", true, 12);
        h.host_launched("ea", "kn009", true, 12);
        let e = h.clear("ea").unwrap_err();
        assert!(
            matches!(e, HeadError::StillLaunching(_, ref w) if w == "kn010"),
            "{e}"
        );
        h.host_launched("ea", "kn010", true, 13);
        let stat = h.experiment("ea").unwrap().schedules[0].clone();
        assert_eq!(
            (stat.state, stat.launched, stat.end),
            (ScheduleState::Completed, 30, Some(13))
        );
        let (up, down) = h.clear("ea").unwrap();
        assert_eq!((up.len(), down.len()), (3, 0));
        assert!(h.experiment("ea").is_err());
        h.switch("ec").unwrap();
        let plan = h
            .plan("ec", &nodes, (&edges, &[]), LoadMetric::CpuCommit, false)
            .unwrap();
        let (c, _) = h.launch("ec", &plan, &nodes, 4002, 14).unwrap();
        assert_eq!(c.base, a.base, "the first free range again");
    }

    #[test]
    fn a_lost_host_is_reported_and_clear_skips_it() {
        let mut h = head();
        let (nodes, edges) = ring(9);
        h.switch("ea").unwrap();
        let plan = h
            .plan("ea", &nodes, (&edges, &[]), LoadMetric::CpuCommit, false)
            .unwrap();
        h.launch("ea", &plan, &nodes, 4000, 1).unwrap();
        for n in ["kn008", "kn009"] {
            h.host_launched("ea", n, true, 2);
        }
        let lost = h.host_down("kn010");
        assert_eq!(lost, vec![("ea".to_owned(), plan_ids(&plan, "kn010"))]);
        let (up, down) = h.clear("ea").unwrap();
        assert_eq!(up.len(), 2);
        assert_eq!(down, vec!["kn010".to_owned()]);
        // When it is back, the clear reaches it too.
        assert_eq!(h.host_up(host("kn010", 3)), vec!["ea".to_owned()]);
        assert!(h.host_up(host("kn010", 3)).is_empty());
        h.host_down("kn010");
        // New plans leave a down host out.
        h.switch("eb").unwrap();
        let plan = h
            .plan("eb", &nodes, (&edges, &[]), LoadMetric::CpuCommit, false)
            .unwrap();
        assert!(plan.host_of.values().all(|v| v != "kn010"));
    }

    fn plan_ids(plan: &Plan, host: &str) -> Vec<u32> {
        plan.host_of
            .iter()
            .filter(|(_, h)| *h == host)
            .map(|(id, _)| *id)
            .collect()
    }

    #[test]
    fn a_restarted_head_keeps_experiments_and_owes_launched_hosts_a_clear() {
        let mut h = head();
        h.switch("ea").unwrap();
        h.hosts_del("ea", "kn010").unwrap();
        h.set_queueing("ea", true).unwrap();
        let (nodes, edges) = ring(4);
        let plan = h
            .plan("ea", &nodes, (&edges, &[]), LoadMetric::MemCommit, false)
            .unwrap();
        h.launch("ea", &plan, &nodes, 4000, 1).unwrap();
        h.switch("eb").unwrap();
        let saved = h.snapshot();
        let json = serde_json::to_string(&saved).unwrap();
        let back: Snapshot = serde_json::from_str(&json).unwrap();
        let mut r = Head::restore("head", back);
        assert_eq!(r.active(), "eb");
        let ea = r.experiment("ea").unwrap();
        assert_eq!(ea.hosts.len(), 2);
        assert!(ea.queueing && ea.launch.is_none());
        assert_eq!(ea.load, LoadMetric::MemCommit);
        // The hosts that ran ea get a clear when they register again.
        assert_eq!(r.host_up(host("kn008", 1)), vec!["ea".to_owned()]);
        assert!(r.host_up(host("kn010", 3)).is_empty());
    }

    #[test]
    fn a_dry_run_can_be_moved_and_is_what_launches() {
        let mut h = head();
        let (nodes, edges) = ring(6);
        h.switch("ea").unwrap();
        assert!(matches!(
            h.move_nodes("ea", &nodes, (&edges, &[]), &[1], "kn008"),
            Err(HeadError::NoDryRun(_))
        ));
        let plan = h
            .plan("ea", &nodes, (&edges, &[]), LoadMetric::CpuCommit, true)
            .unwrap();
        let target = if plan.host_of[&1] == "kn010" {
            "kn009"
        } else {
            "kn010"
        };
        let moved = h
            .move_nodes("ea", &nodes, (&edges, &[]), &[1], target)
            .unwrap();
        assert_eq!(moved.host_of[&1], target);
        let launched = h
            .plan("ea", &nodes, (&edges, &[]), LoadMetric::CpuCommit, false)
            .unwrap();
        assert_eq!(launched, moved, "the moved dry run is what launches");
    }
}
