//! Placement of an experiment's nodes on hosts (minimega's scheduler, done better).
//!
//! Pure: hosts with their capacity and what other experiments already committed there, nodes
//! with their demands and constraints, the experiment's links; out comes a [`Plan`] or the
//! reason there is none. No I/O, no clock.
//!
//! - **Load** (`cpucommit`, `memcommit`, `netcommit`, as in minimega): a host's committed CPU
//!   shares over its CPUs, committed memory over its memory, or its raw count of links. A
//!   node's CPU share, memory estimate and link count are its [`NodeReq`]; commitments of
//!   every experiment on a host count.
//! - **Constraints**: `schedule` pins a node to a host; `coschedule c` allows at most `c`
//!   other nodes on its host (0: alone); `colocate n` puts a node where node `n` is (chains
//!   and cycles form one group).
//! - **Search, not greedy**: groups with constraints (pinned, limited, or several nodes that
//!   must stay together) are placed by depth-first search with backtracking, most
//!   constrained first, least loaded host first; minimega's greedy pass gives up where a
//!   different earlier choice would have worked. When no plan exists, the error names the
//!   constraint that could not be met and why each host refused it.
//! - **Links count**: the remaining nodes are spread so that every host ends as evenly loaded
//!   as the metric allows (water-filling), but each host takes a compact part of the
//!   topology (a region grown breadth-first next to what is placed, or a stretch of a
//!   depth-first walk, whichever cuts fewer links), so neighbours stay together and few links
//!   cross hosts. That start is then refined on several levels ([`refine`]): free neighbours
//!   on one host are merged into clusters, and from the coarsest level down, nodes and
//!   clusters on the borders move to the host most of their links go to, each host within
//!   3 % of its share (as METIS's default allows; exactly its share under a coschedule
//!   limit). Each free node weighs what it commits under the metric (unless a coschedule
//!   limits some host: then counts). Constrained nodes are fixed vertices: they never move. When no node is
//!   constrained, a placement made afresh competes ([`bisect`]: the whole graph coarsened,
//!   its coarsest level cut by recursive bisection, refined back up) and the lower cut wins.

pub mod bench;
mod bisect;
pub mod ranges;
pub mod refine;

use std::collections::{BTreeMap, BinaryHeap, HashMap};

/// What other experiments (and this one's earlier launches) already hold on a host.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Commit {
    pub cpu: f64,
    pub mem_mib: f64,
    pub links: u64,
    pub nodes: u32,
    /// The most nodes the host may hold, set by a `coschedule` of a node already on it.
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    pub name: String,
    pub cpus: u32,
    pub mem_mib: u64,
    pub committed: Commit,
}

/// How hosts are compared: least loaded first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LoadMetric {
    /// Committed CPU shares per CPU.
    #[default]
    CpuCommit,
    /// Committed memory per MiB of memory.
    MemCommit,
    /// Committed links (not normalised, as in minimega).
    NetCommit,
}

impl std::fmt::Display for LoadMetric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LoadMetric::CpuCommit => "cpucommit",
            LoadMetric::MemCommit => "memcommit",
            LoadMetric::NetCommit => "netcommit",
        })
    }
}

impl std::str::FromStr for LoadMetric {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpucommit" => Ok(LoadMetric::CpuCommit),
            "memcommit" => Ok(LoadMetric::MemCommit),
            "netcommit" => Ok(LoadMetric::NetCommit),
            _ => Err(format!(
                "unknown load {s:?}: use cpucommit, memcommit or netcommit"
            )),
        }
    }
}

/// One node's demands and constraints.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeReq {
    pub id: u32,
    /// CPU share (1.0 is a whole core).
    pub cpu: f64,
    pub mem_mib: f64,
    /// Links of the node (its degree in the topology).
    pub links: u32,
    pub schedule: Option<String>,
    pub coschedule: Option<u32>,
    pub colocate: Option<u32>,
}

impl NodeReq {
    /// A node with the default estimates: 1 % of a core and 0.5 MiB (what an idle emulated
    /// node costs; see docs/benchmarks.md), and no constraints.
    pub fn new(id: u32, links: u32) -> NodeReq {
        NodeReq {
            id,
            cpu: 0.01,
            mem_mib: 0.5,
            links,
            schedule: None,
            coschedule: None,
            colocate: None,
        }
    }
}

/// Everything the scheduler looks at.
#[derive(Debug, Clone, Copy)]
pub struct Problem<'a> {
    pub hosts: &'a [Host],
    pub nodes: &'a [NodeReq],
    /// The experiment's links, by node id.
    pub edges: &'a [(u32, u32)],
    /// What cutting each link costs, in the order of `edges` (its rate, say); empty: every
    /// link the same.
    pub edge_weights: &'a [u64],
    pub metric: LoadMetric,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    #[error("the experiment has no hosts: add some with `nextmini hosts add`")]
    NoHosts,
    #[error("node {node} is scheduled on {host}, which is not a host of the experiment")]
    UnknownHost { node: u32, host: String },
    #[error("node {node} is colocated with node {target}, which is not in the experiment")]
    UnknownColocate { node: u32, target: u32 },
    #[error("node {0} appears twice")]
    Duplicate(u32),
    #[error("node {a} is scheduled on {host_a} but must be with node {b}, scheduled on {host_b}")]
    ConflictingPins {
        a: u32,
        host_a: String,
        b: u32,
        host_b: String,
    },
    #[error("no plan: {constraint}; {}", explain(.hosts))]
    Infeasible {
        /// The constraint that could not be met.
        constraint: String,
        /// Each host that was tried, and why it refused.
        hosts: Vec<(String, String)>,
    },
    #[error(
        "no plan found within {0} placement attempts: the constraints are too tangled to search; relax a coschedule or pin some nodes"
    )]
    SearchLimit(u64),
    #[error("node {0} is not in the plan")]
    NotPlanned(u32),
    #[error("{0}")]
    Move(String),
}

fn explain(hosts: &[(String, String)]) -> String {
    hosts
        .iter()
        .map(|(h, why)| format!("{h}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Where every node goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub host_of: BTreeMap<u32, String>,
}

/// One host's share of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct HostShare {
    pub host: String,
    pub nodes: u32,
    /// The host's load by the plan's metric, other experiments included.
    pub load: f64,
}

/// Work bound for the search: host tries.
const SEARCH_BUDGET: u64 = 1_000_000;

/// Nodes that must share a host, with what they need together.
#[derive(Debug, Clone)]
struct Group {
    members: Vec<u32>,
    cpu: f64,
    mem: f64,
    links: u64,
    pin: Option<usize>,
    /// Most nodes allowed on the host, from the members' coschedule.
    limit: Option<u32>,
    /// The member whose coschedule sets the limit, for messages.
    limiter: Option<u32>,
}

impl Group {
    fn size(&self) -> u32 {
        self.members.len() as u32
    }

    fn describe(&self) -> String {
        let who = if self.members.len() == 1 {
            format!("node {}", self.members[0])
        } else {
            {
                let mut ids = self.members.clone();
                ids.sort_unstable();
                format!("nodes {} (colocated)", topology::ids::format_ids(&ids))
            }
        };
        match (self.limiter, self.limit) {
            (Some(n), Some(l)) if self.members.len() == 1 => {
                debug_assert_eq!(n, self.members[0]);
                format!("{who} (coschedule {})", l - 1)
            }
            (Some(n), Some(l)) => format!("{who} with node {n}'s coschedule {}", l - 1),
            _ => who,
        }
    }
}

/// A host's state while planning.
#[derive(Debug, Clone)]
struct Slot {
    cpu: f64,
    mem: f64,
    links: u64,
    nodes: u32,
    limit: Option<u32>,
    /// The node (of this experiment) that set the limit, for messages.
    limiter: Option<u32>,
}

impl Slot {
    fn room(&self) -> Option<u32> {
        self.limit.map(|l| l.saturating_sub(self.nodes))
    }

    fn load(&self, host: &Host, metric: LoadMetric) -> f64 {
        match metric {
            LoadMetric::CpuCommit => self.cpu / f64::from(host.cpus.max(1)),
            LoadMetric::MemCommit => self.mem / (host.mem_mib.max(1) as f64),
            LoadMetric::NetCommit => self.links as f64,
        }
    }

    fn fits(&self, g: &Group) -> Result<(), String> {
        let after = self.nodes + g.size();
        if let Some(l) = self.limit
            && after > l
        {
            return Err(match self.limiter {
                Some(n) => format!(
                    "holds {} node(s) and node {n}'s coschedule allows {l}",
                    self.nodes
                ),
                None => format!(
                    "holds {} node(s) and another experiment's coschedule allows {l}",
                    self.nodes
                ),
            });
        }
        if let Some(l) = g.limit
            && after > l
        {
            return Err(format!(
                "already holds {} node(s); with them, {} would be {after} on one host",
                self.nodes,
                g.describe()
            ));
        }
        Ok(())
    }

    fn add(&mut self, g: &Group) {
        self.cpu += g.cpu;
        self.mem += g.mem;
        self.links += g.links;
        self.nodes += g.size();
        if let Some(l) = g.limit
            && self.limit.is_none_or(|cur| l < cur)
        {
            self.limit = Some(l);
            self.limiter = g.limiter;
        }
    }
}

/// Computes a plan.
pub fn schedule(p: &Problem) -> Result<Plan, ScheduleError> {
    if p.hosts.is_empty() {
        return Err(ScheduleError::NoHosts);
    }
    let host_index = host_index(p);
    let groups = group_nodes(p, &host_index)?;
    let mut slots = slots_of(p);

    // Groups that constrain placement: searched. The rest (single free nodes) fill in.
    let (mut constrained, free): (Vec<Group>, Vec<Group>) = groups
        .into_iter()
        .partition(|g| g.pin.is_some() || g.limit.is_some() || g.members.len() > 1);
    for g in &constrained {
        if let Some(l) = g.limit
            && g.size() > l
        {
            return Err(ScheduleError::Infeasible {
                constraint: format!("{} can't be on one host", g.describe()),
                hosts: Vec::new(),
            });
        }
    }
    // Most constrained first: pinned, then tightest limit, then largest.
    constrained.sort_by_key(|g| {
        (
            g.pin.is_none(),
            g.limit.unwrap_or(u32::MAX),
            std::cmp::Reverse(g.size()),
            g.members[0],
        )
    });
    let mut choice = vec![usize::MAX; constrained.len()];
    let mut search = Search {
        p,
        groups: &constrained,
        free_nodes: free.len() as u32,
        steps: 0,
        deepest: None,
    };
    if !search.place(0, &mut slots, &mut choice) {
        if search.steps >= SEARCH_BUDGET {
            return Err(ScheduleError::SearchLimit(SEARCH_BUDGET));
        }
        let (depth, hosts) = search.deepest.unwrap_or((usize::MAX, Vec::new()));
        let constraint = match constrained.get(depth) {
            Some(g) => format!("{} fits on no host", g.describe()),
            None => format!(
                "{} unconstrained node(s) are left with no room: every host is at its coschedule limit",
                free.len()
            ),
        };
        return Err(ScheduleError::Infeasible { constraint, hosts });
    }
    let mut plan = Plan::default();
    for (g, &h) in constrained.iter().zip(&choice) {
        for &m in &g.members {
            plan.host_of.insert(m, p.hosts[h].name.clone());
        }
    }
    fill(p, &free, &mut slots, &mut plan);
    Ok(plan)
}

fn host_index<'a>(p: &Problem<'a>) -> HashMap<&'a str, usize> {
    p.hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (h.name.as_str(), i))
        .collect()
}

/// Each host's state before this experiment: what other experiments hold there.
fn slots_of(p: &Problem) -> Vec<Slot> {
    p.hosts
        .iter()
        .map(|h| Slot {
            cpu: h.committed.cpu,
            mem: h.committed.mem_mib,
            links: h.committed.links,
            nodes: h.committed.nodes,
            limit: h.committed.limit,
            limiter: None,
        })
        .collect()
}

/// Joins colocated nodes into groups and checks pins and references.
fn group_nodes(
    p: &Problem,
    host_index: &HashMap<&str, usize>,
) -> Result<Vec<Group>, ScheduleError> {
    let index: HashMap<u32, usize> = p.nodes.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
    if index.len() != p.nodes.len() {
        let mut seen = std::collections::HashSet::new();
        let dup = p
            .nodes
            .iter()
            .find(|n| !seen.insert(n.id))
            .expect("a repeat");
        return Err(ScheduleError::Duplicate(dup.id));
    }
    let mut parent: Vec<usize> = (0..p.nodes.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for (i, n) in p.nodes.iter().enumerate() {
        if let Some(h) = &n.schedule
            && !host_index.contains_key(h.as_str())
        {
            return Err(ScheduleError::UnknownHost {
                node: n.id,
                host: h.clone(),
            });
        }
        if let Some(t) = n.colocate {
            let Some(&j) = index.get(&t) else {
                return Err(ScheduleError::UnknownColocate {
                    node: n.id,
                    target: t,
                });
            };
            let (a, b) = (root(&mut parent, i), root(&mut parent, j));
            parent[a] = b;
        }
    }
    let mut by_root: BTreeMap<usize, Group> = BTreeMap::new();
    for (i, n) in p.nodes.iter().enumerate() {
        let r = root(&mut parent, i);
        let g = by_root.entry(r).or_insert_with(|| Group {
            members: Vec::new(),
            cpu: 0.0,
            mem: 0.0,
            links: 0,
            pin: None,
            limit: None,
            limiter: None,
        });
        g.members.push(n.id);
        g.cpu += n.cpu;
        g.mem += n.mem_mib;
        g.links += u64::from(n.links);
        if let Some(h) = &n.schedule {
            let h = host_index[h.as_str()];
            if let Some(other) = g.pin
                && other != h
            {
                let b = g
                    .members
                    .iter()
                    .find(|&&m| p.nodes[index[&m]].schedule.is_some())
                    .copied()
                    .expect("a pinned member");
                return Err(ScheduleError::ConflictingPins {
                    a: n.id,
                    host_a: p.hosts[h].name.clone(),
                    b,
                    host_b: p.hosts[other].name.clone(),
                });
            }
            g.pin = Some(h);
        }
        if let Some(c) = n.coschedule {
            let l = c.saturating_add(1);
            if g.limit.is_none_or(|cur| l < cur) {
                g.limit = Some(l);
                g.limiter = Some(n.id);
            }
        }
    }
    Ok(by_root.into_values().collect())
}

struct Search<'a> {
    p: &'a Problem<'a>,
    groups: &'a [Group],
    free_nodes: u32,
    steps: u64,
    /// The deepest group that could not be placed, with each host's refusal.
    deepest: Option<(usize, Vec<(String, String)>)>,
}

impl Search<'_> {
    fn place(&mut self, i: usize, slots: &mut Vec<Slot>, choice: &mut [usize]) -> bool {
        if i == self.groups.len() {
            // Single free nodes go anywhere with room; a host without a limit takes any number.
            let room: Option<u64> = slots
                .iter()
                .map(|s| s.room().map(u64::from))
                .try_fold(0u64, |acc, r| r.map(|r| acc + r));
            return match room {
                None => true,
                Some(r) if r >= u64::from(self.free_nodes) => true,
                Some(_) => {
                    if self.deepest.as_ref().is_none_or(|(d, _)| *d <= i) {
                        let hosts = self
                            .p
                            .hosts
                            .iter()
                            .zip(slots.iter())
                            .map(|(h, s)| {
                                (
                                    h.name.clone(),
                                    format!("room for {}", s.room().unwrap_or(0)),
                                )
                            })
                            .collect();
                        self.deepest = Some((i, hosts));
                    }
                    false
                }
            };
        }
        let g = &self.groups[i];
        let mut order: Vec<usize> = match g.pin {
            Some(h) => vec![h],
            None => (0..slots.len()).collect(),
        };
        let metric = self.p.metric;
        order.sort_by(|&a, &b| {
            slots[a]
                .load(&self.p.hosts[a], metric)
                .total_cmp(&slots[b].load(&self.p.hosts[b], metric))
                .then(a.cmp(&b))
        });
        let mut refusals = Vec::new();
        for h in order {
            self.steps += 1;
            if self.steps >= SEARCH_BUDGET {
                return false;
            }
            if let Err(why) = slots[h].fits(g) {
                refusals.push((self.p.hosts[h].name.clone(), why));
                continue;
            }
            let saved = slots[h].clone();
            slots[h].add(g);
            choice[i] = h;
            if self.place(i + 1, slots, choice) {
                return true;
            }
            slots[h] = saved;
            refusals.push((
                self.p.hosts[h].name.clone(),
                "fits, but then later constraints can't be met".to_owned(),
            ));
        }
        if g.pin.is_some() && refusals.len() == 1 {
            refusals[0].1 = format!("pinned here, but {}", refusals[0].1);
        }
        let all_direct = refusals
            .iter()
            .all(|(_, why)| !why.starts_with("fits, but"));
        if all_direct && self.deepest.as_ref().is_none_or(|(d, _)| *d <= i) {
            self.deepest = Some((i, refusals));
        }
        false
    }
}

/// What the mean free node weighs when hosts' shares are balanced by weight.
const UNIT_WEIGHT: usize = 100;

/// Spreads single free nodes: how many each host takes comes from water-filling the load
/// metric; which ones comes from the topology's depth-first order, so each host takes a
/// connected stretch.
fn fill(p: &Problem, free: &[Group], slots: &mut [Slot], plan: &mut Plan) {
    if free.is_empty() {
        return;
    }
    let n = free.len();
    let mean = |f: fn(&Group) -> f64| free.iter().map(f).sum::<f64>() / n as f64;
    let unit = Group {
        members: vec![0],
        cpu: mean(|g| g.cpu),
        mem: mean(|g| g.mem),
        links: mean(|g| g.links as f64).round() as u64,
        pin: None,
        limit: None,
        limiter: None,
    };
    // Water-filling: each node to the host least loaded after taking it.
    #[derive(PartialEq)]
    struct Next(f64, usize);
    impl Eq for Next {}
    impl PartialOrd for Next {
        fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(o))
        }
    }
    impl Ord for Next {
        fn cmp(&self, o: &Self) -> std::cmp::Ordering {
            // A min-heap on load, then host order.
            o.0.total_cmp(&self.0).then(o.1.cmp(&self.1))
        }
    }
    let mut counts = vec![0usize; slots.len()];
    let mut trial: Vec<Slot> = slots.to_vec();
    let after = |s: &Slot, h: &Host| {
        let mut s = s.clone();
        s.add(&unit);
        s.load(h, p.metric)
    };
    let mut heap: BinaryHeap<Next> = trial
        .iter()
        .enumerate()
        .filter(|(_, s)| s.room() != Some(0))
        .map(|(i, s)| Next(after(s, &p.hosts[i]), i))
        .collect();
    for _ in 0..n {
        let Some(Next(_, h)) = heap.pop() else {
            break; // the search checked there is room: not reached
        };
        counts[h] += 1;
        trial[h].add(&unit);
        if trial[h].room() != Some(0) {
            heap.push(Next(after(&trial[h], &p.hosts[h]), h));
        }
    }
    // Each host takes a compact part of the topology: either regions grown breadth-first
    // next to what is placed (compact on meshes and tori) or consecutive stretches of a
    // depth-first walk (subtrees on trees); whichever cuts fewer links.
    let free_ids: Vec<u32> = free.iter().map(|g| g.members[0]).collect();
    let by_id: HashMap<u32, &Group> = free.iter().map(|g| (g.members[0], g)).collect();
    let turn: Vec<usize> = (0..slots.len()).filter(|&h| counts[h] > 0).collect();
    let mut grower = Regions::new(&free_ids, p.edges);
    let regions: Vec<(u32, usize)> = turn
        .iter()
        .flat_map(|&h| grower.grow(counts[h]).into_iter().map(move |id| (id, h)))
        .collect();
    let order = depth_first(&free_ids, p.edges);
    let mut stretches = Vec::with_capacity(order.len());
    let mut ids = order.into_iter();
    for &h in &turn {
        stretches.extend(ids.by_ref().take(counts[h]).map(|id| (id, h)));
    }
    // Where the constrained nodes already are, once, for both candidates.
    let index = host_index(p);
    let placed: HashMap<u32, usize> = plan
        .host_of
        .iter()
        .filter_map(|(id, name)| index.get(name.as_str()).map(|&i| (*id, i)))
        .collect();
    let cut = |choice: &[(u32, usize)]| {
        let mut host_of = placed.clone();
        host_of.extend(choice.iter().copied());
        p.edges
            .iter()
            .filter(|(a, b)| host_of.get(a) != host_of.get(b))
            .count()
    };
    let chosen = if cut(&stretches) < cut(&regions) {
        stretches
    } else {
        regions
    };
    // What each free node weighs under the metric, the mean node 100: a host's share is
    // balanced by weight, so two heavy nodes don't end up together just because they count 2.
    let demand = |g: &Group| match p.metric {
        LoadMetric::CpuCommit => g.cpu,
        LoadMetric::MemCommit => g.mem,
        LoadMetric::NetCommit => g.links as f64,
    };
    let mean = free.iter().map(demand).sum::<f64>() / n as f64;
    let weights: HashMap<u32, usize> = free
        .iter()
        .map(|g| {
            let w = if mean > 0.0 {
                (demand(g) / mean * UNIT_WEIGHT as f64).round() as usize
            } else {
                UNIT_WEIGHT
            };
            (g.members[0], w.max(1))
        })
        .collect();
    let chosen = refine_free(p, &placed, chosen, &counts, slots, &weights);
    for (id, h) in chosen {
        slots[h].add(by_id[&id]);
        plan.host_of.insert(id, p.hosts[h].name.clone());
    }
}

/// Moves free nodes on the borders between hosts to where more of their neighbours are
/// ([`refine::Refiner`]), each host keeping within 3 % of its share (as METIS's default
/// allows), exactly its share where a coschedule limits it. Constrained nodes stay.
fn refine_free(
    p: &Problem,
    placed: &HashMap<u32, usize>,
    chosen: Vec<(u32, usize)>,
    counts: &[usize],
    slots: &[Slot],
    weights: &HashMap<u32, usize>,
) -> Vec<(u32, usize)> {
    // In id order, so that the same problem always gives the same plan.
    let mut ids: Vec<u32> = placed
        .keys()
        .copied()
        .chain(chosen.iter().map(|c| c.0))
        .collect();
    ids.sort_unstable();
    let index: HashMap<u32, usize> = ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let graph = refine::Graph::from_weighted_edges(
        ids.len(),
        p.edges.iter().enumerate().filter_map(|(i, (a, b))| {
            let w = p.edge_weights.get(i).copied().unwrap_or(1).max(1);
            Some((*index.get(a)?, *index.get(b)?, usize::try_from(w).ok()?))
        }),
    );
    // Free nodes weigh their demand (the mean one [`UNIT_WEIGHT`]) unless a coschedule
    // limits some host, whose share is then an exact count.
    let by_weight = slots.iter().all(|s| s.limit.is_none());
    let unit = if by_weight { UNIT_WEIGHT } else { 1 };
    let mut graph = graph;
    if by_weight {
        for (i, id) in ids.iter().enumerate() {
            if let Some(&w) = weights.get(id) {
                graph.weight[i] = w;
            }
        }
    }
    let mut part = vec![0; ids.len()];
    let mut movable = vec![false; ids.len()];
    for (id, &h) in placed {
        part[index[id]] = h;
    }
    for &(id, h) in &chosen {
        part[index[&id]] = h;
        movable[index[&id]] = true;
    }
    let slack = |c: usize, s: &Slot| {
        if s.limit.is_some() {
            0
        } else {
            (c * unit * 3 / 100).max(unit)
        }
    };
    let bounds = refine::Bounds {
        lower: counts
            .iter()
            .zip(slots)
            .map(|(&c, s)| (c * unit).saturating_sub(slack(c, s)))
            .collect(),
        upper: counts
            .iter()
            .zip(slots)
            .map(|(&c, s)| c * unit + slack(c, s))
            .collect(),
    };
    let part = refine::refine(&graph, part, &movable, &bounds);
    chosen
        .into_iter()
        .map(|(id, _)| (id, part[index[&id]]))
        .collect()
}

/// Greedy graph growing over the free nodes: each region is taken breadth-first from the
/// lowest unplaced node that touches a placed one (or the lowest unplaced, to start and
/// between components).
struct Regions {
    adjacency: HashMap<u32, Vec<u32>>,
    unplaced: std::collections::BTreeSet<u32>,
    /// Unplaced nodes with a placed neighbour.
    boundary: std::collections::BTreeSet<u32>,
}

impl Regions {
    fn new(ids: &[u32], edges: &[(u32, u32)]) -> Regions {
        let unplaced: std::collections::BTreeSet<u32> = ids.iter().copied().collect();
        let mut adjacency: HashMap<u32, Vec<u32>> = HashMap::new();
        for &(a, b) in edges {
            if unplaced.contains(&a) && unplaced.contains(&b) {
                adjacency.entry(a).or_default().push(b);
                adjacency.entry(b).or_default().push(a);
            }
        }
        for list in adjacency.values_mut() {
            list.sort_unstable();
        }
        Regions {
            adjacency,
            unplaced,
            boundary: Default::default(),
        }
    }

    fn place(&mut self, v: u32, out: &mut Vec<u32>) {
        self.unplaced.remove(&v);
        self.boundary.remove(&v);
        out.push(v);
        for w in self.adjacency.get(&v).into_iter().flatten() {
            if self.unplaced.contains(w) {
                self.boundary.insert(*w);
            }
        }
    }

    /// The next region: `n` nodes (fewer only when none are left).
    fn grow(&mut self, n: usize) -> Vec<u32> {
        let mut region = Vec::with_capacity(n);
        while region.len() < n {
            let Some(seed) = self
                .boundary
                .first()
                .or_else(|| self.unplaced.first())
                .copied()
            else {
                break;
            };
            let mut queue = std::collections::VecDeque::from([seed]);
            self.place(seed, &mut region);
            while region.len() < n
                && let Some(v) = queue.pop_front()
            {
                let next: Vec<u32> = self
                    .adjacency
                    .get(&v)
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(|w| self.unplaced.contains(w))
                    .collect();
                for w in next {
                    if region.len() == n {
                        break;
                    }
                    self.place(w, &mut region);
                    queue.push_back(w);
                }
            }
        }
        region
    }
}

/// `ids` in depth-first preorder over `edges` (neighbours in ascending order), each
/// component from its smallest id.
fn depth_first(ids: &[u32], edges: &[(u32, u32)]) -> Vec<u32> {
    let wanted: std::collections::HashSet<u32> = ids.iter().copied().collect();
    let mut adjacency: HashMap<u32, Vec<u32>> = HashMap::new();
    for &(a, b) in edges {
        if wanted.contains(&a) && wanted.contains(&b) {
            adjacency.entry(a).or_default().push(b);
            adjacency.entry(b).or_default().push(a);
        }
    }
    for list in adjacency.values_mut() {
        list.sort_unstable();
    }
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    let mut order = Vec::with_capacity(ids.len());
    let mut stack = Vec::new();
    for &start in &sorted {
        if !seen.insert(start) {
            continue;
        }
        stack.push(start);
        while let Some(v) = stack.pop() {
            order.push(v);
            if let Some(next) = adjacency.get(&v) {
                for &w in next.iter().rev() {
                    if seen.insert(w) {
                        stack.push(w);
                    }
                }
            }
        }
    }
    order
}

impl Plan {
    /// Links whose ends are on different hosts.
    pub fn cut_links(&self, edges: &[(u32, u32)]) -> usize {
        edges
            .iter()
            .filter(|(a, b)| self.host_of.get(a) != self.host_of.get(b))
            .count()
    }

    /// Each host's nodes and load under this plan, other experiments included.
    pub fn shares(&self, p: &Problem) -> Vec<HostShare> {
        let nodes: HashMap<u32, &NodeReq> = p.nodes.iter().map(|n| (n.id, n)).collect();
        p.hosts
            .iter()
            .map(|h| {
                let mut s = Slot {
                    cpu: h.committed.cpu,
                    mem: h.committed.mem_mib,
                    links: h.committed.links,
                    nodes: h.committed.nodes,
                    limit: None,
                    limiter: None,
                };
                let mine = self.host_of.iter().filter(|(_, on)| **on == h.name);
                let mut count = 0;
                for (id, _) in mine {
                    let n = nodes[id];
                    s.cpu += n.cpu;
                    s.mem += n.mem_mib;
                    s.links += u64::from(n.links);
                    count += 1;
                }
                HostShare {
                    host: h.name.clone(),
                    nodes: count,
                    load: s.load(h, p.metric),
                }
            })
            .collect()
    }

    /// Checks every constraint of `p` against this plan (after a user's moves).
    pub fn check(&self, p: &Problem) -> Result<(), ScheduleError> {
        let host_index = host_index(p);
        let groups = group_nodes(p, &host_index)?;
        let mut slots = slots_of(p);
        for g in &groups {
            let mut on: Vec<&String> = Vec::new();
            for m in &g.members {
                on.push(self.host_of.get(m).ok_or(ScheduleError::NotPlanned(*m))?);
            }
            if on.iter().any(|h| *h != on[0]) {
                return Err(ScheduleError::Move(format!(
                    "{} must share a host, and the plan splits them",
                    g.describe()
                )));
            }
            let h = host_index[on[0].as_str()];
            if let Some(pin) = g.pin
                && pin != h
            {
                return Err(ScheduleError::Move(format!(
                    "{} is scheduled on {}, not {}",
                    g.describe(),
                    p.hosts[pin].name,
                    on[0]
                )));
            }
            slots[h].add(g);
        }
        // Limits hold for everything that ends on a host, whatever the order.
        for g in &groups {
            let h = host_index[self.host_of[&g.members[0]].as_str()];
            if let Some(l) = g.limit
                && slots[h].nodes > l
            {
                return Err(ScheduleError::Move(format!(
                    "{} would share {} with {} other node(s)",
                    g.describe(),
                    p.hosts[h].name,
                    slots[h].nodes - 1
                )));
            }
        }
        Ok(())
    }

    /// Moves nodes to `host` (a user's correction after a dry run) and checks the result;
    /// on error the plan is unchanged.
    pub fn move_nodes(
        &mut self,
        p: &Problem,
        nodes: &[u32],
        host: &str,
    ) -> Result<(), ScheduleError> {
        if !p.hosts.iter().any(|h| h.name == host) {
            return Err(ScheduleError::Move(format!(
                "{host} is not a host of the experiment"
            )));
        }
        let mut moved = self.clone();
        for n in nodes {
            let slot = moved
                .host_of
                .get_mut(n)
                .ok_or(ScheduleError::NotPlanned(*n))?;
            *slot = host.to_owned();
        }
        moved.check(p)?;
        *self = moved;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(n: usize, cpus: u32) -> Vec<Host> {
        (1..=n)
            .map(|i| Host {
                name: format!("h{i}"),
                cpus,
                mem_mib: 16_384,
                committed: Commit::default(),
            })
            .collect()
    }

    fn nodes(n: u32) -> Vec<NodeReq> {
        (1..=n).map(|i| NodeReq::new(i, 2)).collect()
    }

    fn ring(n: u32) -> Vec<(u32, u32)> {
        (1..=n).map(|i| (i, i % n + 1)).collect()
    }

    fn problem<'a>(h: &'a [Host], n: &'a [NodeReq], e: &'a [(u32, u32)]) -> Problem<'a> {
        Problem {
            hosts: h,
            nodes: n,
            edges: e,
            edge_weights: &[],
            metric: LoadMetric::CpuCommit,
        }
    }

    fn counts(plan: &Plan, h: &[Host]) -> Vec<usize> {
        h.iter()
            .map(|h| plan.host_of.values().filter(|v| **v == h.name).count())
            .collect()
    }

    /// A ring of 8 on two hosts whose links 1-2 and 5-6 are slow (weight 1) and the others
    /// fast (1,000): each host takes half, and the two links cut are the slow ones.
    #[test]
    fn fast_links_stay_inside_hosts_and_slow_ones_are_cut() {
        let h = hosts(2, 4);
        let n = nodes(8);
        let e = ring(8);
        let weights: Vec<u64> = e
            .iter()
            .map(|&(a, b)| {
                if (a, b) == (1, 2) || (a, b) == (5, 6) {
                    1
                } else {
                    1000
                }
            })
            .collect();
        let p = Problem {
            edge_weights: &weights,
            ..problem(&h, &n, &e)
        };
        let plan = schedule(&p).unwrap();
        assert_eq!(counts(&plan, &h), vec![4, 4]);
        let cut: Vec<(u32, u32)> = e
            .iter()
            .copied()
            .filter(|(a, b)| plan.host_of[a] != plan.host_of[b])
            .collect();
        assert_eq!(cut, vec![(1, 2), (5, 6)], "{:?}", plan.host_of);
    }

    /// A ring of 12 on two hosts where nodes 1 and 2 (neighbours) each want a whole core and
    /// the rest 1 %: balanced by count they would share a host; balanced by commitment each
    /// host takes one of them.
    #[test]
    fn heavy_nodes_are_balanced_by_what_they_commit_not_by_count() {
        let h = hosts(2, 4);
        let mut n = nodes(12);
        n[0].cpu = 1.0;
        n[1].cpu = 1.0;
        let e = ring(12);
        let plan = schedule(&problem(&h, &n, &e)).unwrap();
        assert_ne!(plan.host_of[&1], plan.host_of[&2], "{:?}", plan.host_of);
        let cpu = |host: &str| -> f64 {
            n.iter()
                .filter(|r| plan.host_of[&r.id] == host)
                .map(|r| r.cpu)
                .sum()
        };
        assert!(cpu("h1") > 1.0 && cpu("h2") > 1.0, "{:?}", plan.host_of);
    }

    #[test]
    fn equal_hosts_get_equal_shares_for_every_metric() {
        let h = hosts(10, 4);
        let n = nodes(100);
        for metric in [
            LoadMetric::CpuCommit,
            LoadMetric::MemCommit,
            LoadMetric::NetCommit,
        ] {
            let p = Problem {
                metric,
                ..problem(&h, &n, &[])
            };
            let plan = schedule(&p).unwrap();
            assert_eq!(counts(&plan, &h), vec![10; 10], "{metric:?}");
        }
    }

    #[test]
    fn shares_follow_capacity_and_what_other_experiments_hold() {
        let mut h = hosts(2, 2);
        h[1].cpus = 6;
        let n = nodes(80);
        let plan = schedule(&problem(&h, &n, &[])).unwrap();
        assert_eq!(counts(&plan, &h), vec![20, 60], "CPU 2:6");
        // h1 already carries 0.2 cores of another experiment (20 nodes' worth).
        let mut h = hosts(2, 4);
        h[0].committed.cpu = 0.2;
        let plan = schedule(&problem(&h, &n, &[])).unwrap();
        assert_eq!(counts(&plan, &h), vec![30, 50]);
    }

    #[test]
    fn neighbours_stay_together() {
        let h = hosts(3, 4);
        let n = nodes(30);
        let e = ring(30);
        let plan = schedule(&problem(&h, &n, &e)).unwrap();
        assert_eq!(counts(&plan, &h), vec![10, 10, 10]);
        assert_eq!(plan.cut_links(&e), 3, "three arcs of the ring");
    }

    #[test]
    fn pinned_and_colocated_chains_land_together() {
        let h = hosts(3, 4);
        let mut n = nodes(20);
        n[4].schedule = Some("h3".into()); // node 5
        for i in 6..=15 {
            n[i as usize - 1].colocate = Some(i - 1); // 6 → 5, 7 → 6, … a chain of ten
        }
        let plan = schedule(&problem(&h, &n, &[])).unwrap();
        for i in 5..=15 {
            assert_eq!(plan.host_of[&i], "h3", "node {i}");
        }
    }

    #[test]
    fn bad_references_are_named() {
        let h = hosts(2, 4);
        let mut n = nodes(3);
        n[0].schedule = Some("h9".into());
        assert_eq!(
            schedule(&problem(&h, &n, &[])).unwrap_err(),
            ScheduleError::UnknownHost {
                node: 1,
                host: "h9".into()
            }
        );
        let mut n = nodes(3);
        n[1].colocate = Some(7);
        assert!(matches!(
            schedule(&problem(&h, &n, &[])).unwrap_err(),
            ScheduleError::UnknownColocate { node: 2, target: 7 }
        ));
        let mut n = nodes(3);
        n[0].schedule = Some("h1".into());
        n[1].schedule = Some("h2".into());
        n[1].colocate = Some(1);
        let e = schedule(&problem(&h, &n, &[])).unwrap_err();
        assert!(matches!(e, ScheduleError::ConflictingPins { .. }), "{e}");
        assert!(schedule(&problem(&[], &n, &[])).is_err());
    }

    #[test]
    fn impossible_coschedules_say_which_and_why() {
        // Three nodes that each want a host of their own, two hosts.
        let h = hosts(2, 4);
        let mut n = nodes(3);
        for x in &mut n {
            x.coschedule = Some(0);
        }
        let e = schedule(&problem(&h, &n, &[])).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("node 3 (coschedule 0) fits on no host"),
            "{text}"
        );
        for h in ["h1", "h2"] {
            assert!(
                text.contains(&format!("{h}: holds 1 node(s) and node ")),
                "{text}"
            );
        }
        assert!(text.contains("'s coschedule allows 1"), "{text}");
        // Colocating with a node that must be alone.
        let mut n = nodes(2);
        n[0].coschedule = Some(0);
        n[1].colocate = Some(1);
        let text = schedule(&problem(&h, &n, &[])).unwrap_err().to_string();
        assert!(
            text.contains("nodes 1-2 (colocated)") && text.contains("one host"),
            "{text}"
        );
        // Free nodes with nowhere to go.
        let mut n = nodes(3);
        n[0].coschedule = Some(0);
        n[1].coschedule = Some(0);
        let text = schedule(&problem(&h, &n, &[])).unwrap_err().to_string();
        assert!(text.contains("no room"), "{text}");
    }

    #[test]
    fn the_search_finds_what_greedy_misses() {
        // Two coschedule-1 nodes (at most one other node with each) and a colocated pair, two
        // hosts: least-load greedy puts 1 and 2 on different hosts and then has no host for
        // the pair; the only plan pairs 1 with 2.
        let h = hosts(2, 4);
        let mut n = nodes(4);
        n[0].coschedule = Some(1);
        n[1].coschedule = Some(1);
        n[3].colocate = Some(3);
        let plan = schedule(&problem(&h, &n, &[])).unwrap();
        assert_eq!(plan.host_of[&1], plan.host_of[&2]);
        assert_eq!(plan.host_of[&3], plan.host_of[&4]);
        assert_ne!(plan.host_of[&1], plan.host_of[&3]);
        plan.check(&problem(&h, &n, &[])).unwrap();
    }

    #[test]
    fn moves_after_a_dry_run_are_checked() {
        let h = hosts(3, 4);
        let mut n = nodes(6);
        n[0].coschedule = Some(0);
        n[5].colocate = Some(5);
        let p = problem(&h, &n, &[]);
        let mut plan = schedule(&p).unwrap();
        let alone = plan.host_of[&1].clone();
        let pair = plan.host_of[&5].clone();
        let third = h
            .iter()
            .map(|h| h.name.clone())
            .find(|h| *h != alone && *h != pair)
            .unwrap();
        // Onto the host of the node that wants to be alone: refused, plan unchanged.
        let before = plan.clone();
        let e = plan.move_nodes(&p, &[2], &alone).unwrap_err();
        assert!(e.to_string().contains("coschedule 0"), "{e}");
        assert_eq!(plan, before);
        // Splitting a colocated pair: refused; moving both: fine.
        let e = plan.move_nodes(&p, &[5], &third).unwrap_err();
        assert!(e.to_string().contains("splits them"), "{e}");
        plan.move_nodes(&p, &[5, 6], &third).unwrap();
        assert_eq!((&plan.host_of[&5], &plan.host_of[&6]), (&third, &third));
        assert!(plan.move_nodes(&p, &[2], "h9").is_err());
        assert_eq!(
            plan.move_nodes(&p, &[99], "h1").unwrap_err(),
            ScheduleError::NotPlanned(99)
        );
    }

    #[test]
    fn a_torus_is_cut_into_compact_regions() {
        // A 20×20 torus on 4 hosts: four 10×10 squares would cut 80 links; a depth-first walk
        // in stretches of 100 cuts 416. Regions grown breadth-first come close to the squares.
        let t = topology::TopologySpec::from_short("torus,2,20")
            .unwrap()
            .build(None)
            .unwrap();
        let e = t.edges().to_vec();
        let h = hosts(4, 8);
        let n: Vec<NodeReq> = (1..=t.n_nodes()).map(|i| NodeReq::new(i, 4)).collect();
        let plan = schedule(&problem(&h, &n, &e)).unwrap();
        assert_eq!(counts(&plan, &h), vec![100; 4]);
        let cut = plan.cut_links(&e);
        assert!(cut <= 140, "{cut} links cut");
    }

    #[test]
    fn ten_thousand_nodes_on_a_hundred_hosts() {
        let h = hosts(100, 8);
        let n = nodes(10_000);
        let e = ring(10_000);
        let plan = schedule(&problem(&h, &n, &e)).unwrap();
        assert_eq!(counts(&plan, &h), vec![100; 100]);
        assert_eq!(plan.cut_links(&e), 100);
    }
}
