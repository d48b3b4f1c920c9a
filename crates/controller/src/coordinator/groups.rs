//! Multicast groups while the run goes on: created with a source and an address from the
//! run's pool, joined and left through the API or by programs in nodes (their kernels' IGMP
//! reports), given trees from outside or left on the shortest-path tree. The trees themselves
//! are `topology::multicast`'s; here they are kept, rebuilt when members, trees or routes
//! change, and only the nodes whose entries changed are sent theirs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use proto::{ControllerToNode, GroupRoute};
use serde::{Deserialize, Serialize};
use topology::multicast::{self, Built, BuiltTree, Group, TreeSpec};

use super::{Coordinator, Output};

/// A group as `group list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRow {
    pub group: Ipv4Addr,
    pub source: u32,
    pub members: Vec<u32>,
    /// Its trees as built: edges pruned to the members, and the members each does not reach.
    pub trees: Vec<BuiltTree>,
    /// The trees were set from outside (else: the shortest-path tree).
    pub set_trees: bool,
}

/// What happened to a group (a row of the store's `group_events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupEventKind {
    Created,
    Joined,
    Left,
    /// Trees set from outside, or back to the shortest-path tree.
    Trees,
    /// The routes changed and the shortest-path tree with them.
    Rebuilt,
    Deleted,
}

impl GroupEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupEventKind::Created => "created",
            GroupEventKind::Joined => "joined",
            GroupEventKind::Left => "left",
            GroupEventKind::Trees => "trees",
            GroupEventKind::Rebuilt => "rebuilt",
            GroupEventKind::Deleted => "deleted",
        }
    }
}

/// A group changed: what happened, the nodes it names, and the group after it (as it was,
/// when deleted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupEvent {
    pub kind: GroupEventKind,
    pub nodes: Vec<u32>,
    pub row: GroupRow,
}

/// A change to the groups, as the API takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum GroupOp {
    /// A group of `source` at `address` (else the pool's next free one), with these members.
    Create {
        source: u32,
        #[serde(default)]
        address: Option<Ipv4Addr>,
        #[serde(default)]
        members: Vec<u32>,
    },
    Join {
        group: Ipv4Addr,
        nodes: Vec<u32>,
    },
    Leave {
        group: Ipv4Addr,
        nodes: Vec<u32>,
    },
    /// Trees from outside; none: back to the shortest-path tree.
    Trees {
        group: Ipv4Addr,
        trees: Option<Vec<TreeSpec>>,
    },
    Delete {
        group: Ipv4Addr,
    },
}

/// A group change that can't be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GroupError {
    #[error("groups need the dataplane (the experiment runs without TUN devices)")]
    NoDataplane,
    #[error(
        "groups are made once the topology is ready (and not while it is torn down): try again then"
    )]
    NotYet,
    #[error("no group {0} in this run (see `nextmini group list`)")]
    Unknown(Ipv4Addr),
    #[error("group {0} exists already (its source is node {1})")]
    Exists(Ipv4Addr, u32),
    #[error(
        "{addr} is outside the run's multicast pool {pool} (multicast_pool_base and multicast_pool_mask)"
    )]
    OutsidePool {
        addr: Ipv4Addr,
        pool: proto::MulticastPool,
    },
    #[error("the multicast pool {pool} has no address left: delete a group first")]
    PoolFull { pool: proto::MulticastPool },
    #[error("node {node} is not a node of {topology} (1..={n})")]
    UnknownNode { node: u32, n: u32, topology: String },
    #[error(
        "the link between nodes {a} and {b} is the kernel's (both are in max mode): it carries no groups; pick a tree around it"
    )]
    ThroughMaxMode { a: u32, b: u32 },
    #[error("{0}")]
    Invalid(String),
}

/// A group and what was last sent for it.
#[derive(Debug, Clone)]
pub(super) struct GroupState {
    group: Group,
    built: Built,
}

impl Coordinator {
    fn groups_possible(&self) -> Result<(), GroupError> {
        if !self.settings.dataplane {
            return Err(GroupError::NoDataplane);
        }
        // Before the topology is ready some nodes may not be connected to take their
        // entries; after teardown there is nothing to change.
        if self.routes_pending.is_some()
            || self.router.is_none()
            || self.phase != super::Phase::Ready
        {
            return Err(GroupError::NotYet);
        }
        Ok(())
    }

    fn check_node(&self, node: u32) -> Result<(), GroupError> {
        let n = self.topology.n_nodes();
        if node == 0 || node > n {
            return Err(GroupError::UnknownNode {
                node,
                n,
                topology: self.topology.label.clone(),
            });
        }
        Ok(())
    }

    /// A copy of the group to change.
    fn group_of(&self, addr: Ipv4Addr) -> Result<Group, GroupError> {
        self.groups
            .get(&addr)
            .map(|s| s.group.clone())
            .ok_or(GroupError::Unknown(addr))
    }

    fn in_pool(&self, addr: Ipv4Addr) -> bool {
        self.settings.multicast_pool.contains(addr)
    }

    /// The pool's first address no group has.
    fn free_address(&self) -> Result<Ipv4Addr, GroupError> {
        let pool = self.settings.multicast_pool;
        pool.group_addresses()
            .find(|a| !self.groups.contains_key(a))
            .ok_or(GroupError::PoolFull { pool })
    }

    /// Carries out a change to the groups; the group as it is after it (as it was, for a
    /// deleted one).
    pub fn handle_group_op(&mut self, op: GroupOp) -> Result<GroupRow, GroupError> {
        match op {
            GroupOp::Create {
                source,
                address,
                members,
            } => self.handle_create_group(source, address, &members),
            GroupOp::Join { group, nodes } => self.handle_group_members(group, &nodes, true),
            GroupOp::Leave { group, nodes } => self.handle_group_members(group, &nodes, false),
            GroupOp::Trees { group, trees } => self.handle_set_group_trees(group, trees),
            GroupOp::Delete { group } => {
                let row = self.group_row(group).ok_or(GroupError::Unknown(group))?;
                self.handle_delete_group(group)?;
                Ok(row)
            }
        }
    }

    /// Creates a group of `source` (at `address`, else the pool's next free one) with these
    /// members; the nodes on its tree get their entries.
    pub fn handle_create_group(
        &mut self,
        source: u32,
        address: Option<Ipv4Addr>,
        members: &[u32],
    ) -> Result<GroupRow, GroupError> {
        self.groups_possible()?;
        self.check_node(source)?;
        for &m in members {
            self.check_node(m)?;
        }
        let addr = match address {
            Some(a) => {
                if !self.in_pool(a) {
                    return Err(GroupError::OutsidePool {
                        addr: a,
                        pool: self.settings.multicast_pool,
                    });
                }
                if let Some(g) = self.groups.get(&a) {
                    return Err(GroupError::Exists(a, g.group.source));
                }
                a
            }
            None => self.free_address()?,
        };
        let mut group = Group {
            group: addr,
            source,
            members: members.iter().copied().collect(),
            trees: None,
        };
        // Programs that hold the address's membership (they joined before it was a group).
        if let Some(joined) = self.igmp_members.get(&addr) {
            group.members.extend(joined);
        }
        let named: Vec<u32> = group.members.iter().copied().collect();
        self.apply_group(group, GroupEventKind::Created, &named)?;
        tracing::info!("multicast group {addr} of node {source} created");
        Ok(self.group_row(addr).expect("just made"))
    }

    /// Removes a group: its nodes forget it.
    pub fn handle_delete_group(&mut self, addr: Ipv4Addr) -> Result<(), GroupError> {
        let row = self.group_row(addr).ok_or(GroupError::Unknown(addr))?;
        let state = self.groups.remove(&addr).expect("listed");
        let mut per_node = BTreeMap::new();
        let (_, removed) = multicast::changed(&state.built.entries, &BTreeMap::new());
        for node in removed {
            per_node
                .entry(node)
                .or_insert_with(|| (Vec::new(), Vec::new()))
                .1
                .push(addr);
        }
        self.send_groups(per_node);
        self.record(GroupEventKind::Deleted, Vec::new(), row);
        Ok(())
    }

    /// `nodes` join (or leave) the group; only the nodes on their branches change.
    pub fn handle_group_members(
        &mut self,
        addr: Ipv4Addr,
        nodes: &[u32],
        join: bool,
    ) -> Result<GroupRow, GroupError> {
        self.groups_possible()?;
        for &n in nodes {
            self.check_node(n)?;
        }
        let mut group = self.group_of(addr)?;
        for &n in nodes {
            if join {
                group.members.insert(n);
            } else {
                group.members.remove(&n);
            }
        }
        let kind = if join {
            GroupEventKind::Joined
        } else {
            GroupEventKind::Left
        };
        self.apply_group(group, kind, nodes)?;
        Ok(self.group_row(addr).expect("kept"))
    }

    /// Sets the group's trees from outside (`SetGroupRoutes`, several with weights), or with
    /// None goes back to the shortest-path tree.
    pub fn handle_set_group_trees(
        &mut self,
        addr: Ipv4Addr,
        trees: Option<Vec<TreeSpec>>,
    ) -> Result<GroupRow, GroupError> {
        self.groups_possible()?;
        let mut group = self.group_of(addr)?;
        if let Some(trees) = &trees {
            multicast::check_trees(&self.topology, group.source, trees)
                .map_err(GroupError::Invalid)?;
        }
        group.trees = trees;
        self.apply_group(group, GroupEventKind::Trees, &[])?;
        Ok(self.group_row(addr).expect("kept"))
    }

    /// The experiment's groups (`[[groups]]`), made once the topology is ready.
    pub fn plan_groups(&mut self, groups: Vec<experiment::groups::PlannedGroup>) {
        self.planned_groups = groups;
    }

    pub(super) fn make_planned_groups(&mut self) {
        for g in std::mem::take(&mut self.planned_groups) {
            let made = self
                .handle_create_group(g.source, g.address, &g.members)
                .and_then(|row| match g.trees {
                    Some(trees) => self.handle_set_group_trees(row.group, Some(trees)),
                    None => Ok(row),
                });
            if let Err(e) = made {
                tracing::warn!("[[groups]] of node {}: {e}", g.source);
            }
        }
    }

    /// A program in `node` joined or left `addr` (its kernel's IGMP report). Within the pool
    /// the membership is kept whether or not the address is a group yet; outside it, programs
    /// join all sorts, and nothing is kept.
    pub(super) fn handle_group_member(&mut self, node: u32, addr: Ipv4Addr, joined: bool) {
        if !self.in_pool(addr) || self.check_node(node).is_err() {
            tracing::debug!("node {node}: IGMP for {addr}, outside the run's multicast pool");
            return;
        }
        if joined {
            self.igmp_members.entry(addr).or_default().insert(node);
        } else if let Some(nodes) = self.igmp_members.get_mut(&addr) {
            nodes.remove(&node);
            if nodes.is_empty() {
                self.igmp_members.remove(&addr);
            }
        }
        if !self.groups.contains_key(&addr) {
            if joined {
                tracing::info!(
                    "node {node} joined {addr}, which is no group yet: a member once it is (`nextmini group create <source> --address {addr}`)"
                );
            }
            return;
        }
        match self.handle_group_members(addr, &[node], joined) {
            Ok(_) => tracing::info!(
                "node {node} {} group {addr}",
                if joined { "joined" } else { "left" }
            ),
            Err(e) => tracing::warn!("node {node}: group {addr}: {e}"),
        }
    }

    /// The routes changed: every group on the shortest-path tree is rebuilt, and the nodes
    /// whose entries changed get them.
    pub(super) fn regroup(&mut self) {
        let Some(router) = &self.router else {
            return;
        };
        let mut per_node: BTreeMap<u32, (Vec<GroupRoute>, Vec<Ipv4Addr>)> = BTreeMap::new();
        let mut rebuilt = Vec::new();
        let shortest: Vec<Ipv4Addr> = self
            .groups
            .values()
            .filter(|state| state.group.trees.is_none())
            .map(|state| state.group.group)
            .collect();
        for addr in shortest {
            let state = &self.groups[&addr];
            // Routes may now cross a kernel link, which carries no groups: the tree is cut
            // there (its members beyond show as unreached) rather than refused, since nobody
            // asked for this change.
            let (built, cut) = multicast::build_over(&state.group, router.tables(), |a, b| {
                !self.kernel_link(a, b)
            });
            if !cut.is_empty() {
                let beyond: Vec<u32> = built
                    .trees
                    .iter()
                    .flat_map(|t| t.unreached.iter().copied())
                    .collect();
                tracing::warn!(
                    "multicast group {addr}: routes now cross links between two max-mode nodes ({cut:?}), which carry no groups; members {beyond:?} get nothing until routes change or trees are set around them"
                );
            }
            if built.trees != state.built.trees {
                rebuilt.push(addr);
            }
            collect(&mut per_node, &state.built, &built, addr);
            self.groups.get_mut(&addr).expect("listed").built = built;
        }
        self.send_groups(per_node);
        for addr in rebuilt {
            let row = self.group_row(addr).expect("kept");
            self.record(GroupEventKind::Rebuilt, Vec::new(), row);
        }
    }

    /// Builds `group`, checks it, keeps it, sends what changed and records `kind` of `nodes`.
    fn apply_group(
        &mut self,
        group: Group,
        kind: GroupEventKind,
        nodes: &[u32],
    ) -> Result<(), GroupError> {
        let router = self.router.as_ref().ok_or(GroupError::NotYet)?;
        let built = multicast::build(&group, router.tables());
        for t in &built.trees {
            if let Some(&(a, b)) = t.edges.iter().find(|&&(a, b)| self.kernel_link(a, b)) {
                return Err(GroupError::ThroughMaxMode { a, b });
            }
        }
        let addr = group.group;
        let old = self
            .groups
            .get(&addr)
            .map(|s| s.built.clone())
            .unwrap_or_default();
        let mut per_node = BTreeMap::new();
        collect(&mut per_node, &old, &built, addr);
        self.groups.insert(addr, GroupState { group, built });
        self.send_groups(per_node);
        let row = self.group_row(addr).expect("just kept");
        self.record(kind, nodes.to_vec(), row);
        Ok(())
    }

    fn record(&mut self, kind: GroupEventKind, nodes: Vec<u32>, row: GroupRow) {
        self.emit(super::Milestone::Group(Box::new(GroupEvent {
            kind,
            nodes,
            row,
        })));
    }

    fn send_groups(&mut self, per_node: BTreeMap<u32, (Vec<GroupRoute>, Vec<Ipv4Addr>)>) {
        for (node, (set, removed)) in per_node {
            if self.slot(node).is_some_and(|s| s.connected && !s.failed) {
                self.out.push_back(Output::Node(
                    node,
                    ControllerToNode::Groups { set, removed },
                ));
            }
        }
    }

    fn group_row(&self, addr: Ipv4Addr) -> Option<GroupRow> {
        let s = self.groups.get(&addr)?;
        Some(GroupRow {
            group: addr,
            source: s.group.source,
            members: s.group.members.iter().copied().collect(),
            trees: s.built.trees.clone(),
            set_trees: s.group.trees.is_some(),
        })
    }

    /// Every group, by address.
    pub fn group_rows(&self) -> Vec<GroupRow> {
        self.groups
            .keys()
            .filter_map(|a| self.group_row(*a))
            .collect()
    }

    /// The nodes `group` has in its trees or members (for tests and `group show`).
    pub fn group_nodes(&self, addr: Ipv4Addr) -> BTreeSet<u32> {
        self.groups
            .get(&addr)
            .map(|s| s.built.entries.keys().copied().collect())
            .unwrap_or_default()
    }
}

/// What changed between two builds of group `addr`, added to each node's message.
fn collect(
    per_node: &mut BTreeMap<u32, (Vec<GroupRoute>, Vec<Ipv4Addr>)>,
    old: &Built,
    new: &Built,
    addr: Ipv4Addr,
) {
    let (set, removed) = multicast::changed(&old.entries, &new.entries);
    for (node, entry) in set {
        per_node.entry(node).or_default().0.push(entry);
    }
    for node in removed {
        per_node.entry(node).or_default().1.push(addr);
    }
}
