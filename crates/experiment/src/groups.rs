//! `[[groups]]`: multicast groups the experiment starts with, created once the topology is
//! ready (as `nextmini group create` would), each with a source, members and, if given, its
//! trees.
//!
//! ```toml
//! [[groups]]
//! source = 21
//! members = "22-29"                  # or [22, 23, 24]
//! address = "239.255.0.9"            # else the pool's next free address
//! trees = [{ tree_id = 1, weight = 2, edges = [[21, 13], [13, 22]] }]   # else shortest paths
//! ```

use std::net::Ipv4Addr;

use serde::Deserialize;
use topology::Topology;
use topology::multicast::TreeSpec;

/// A `[[groups]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupEntry {
    pub source: u32,
    #[serde(default)]
    pub members: Option<toml::Value>,
    #[serde(default)]
    pub address: Option<Ipv4Addr>,
    #[serde(default)]
    pub trees: Option<Vec<TreeSpec>>,
}

/// A group the run creates when its topology is ready.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedGroup {
    pub source: u32,
    pub members: Vec<u32>,
    pub address: Option<Ipv4Addr>,
    pub trees: Option<Vec<TreeSpec>>,
}

/// Checks the entries against the topology and the pool.
pub fn plan(
    topology: &Topology,
    pool: proto::MulticastPool,
    entries: &[GroupEntry],
) -> Result<Vec<PlannedGroup>, String> {
    let n = topology.n_nodes();
    let mut addresses = std::collections::BTreeSet::new();
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let at = format!("[[groups]] #{}", i + 1);
            let members = match &e.members {
                None => Vec::new(),
                Some(toml::Value::String(s)) => {
                    topology::ids::parse_ids(s).map_err(|m| format!("{at}: members: {m}"))?
                }
                Some(toml::Value::Array(a)) => a
                    .iter()
                    .map(|v| v.as_integer().and_then(|i| u32::try_from(i).ok()))
                    .collect::<Option<Vec<u32>>>()
                    .ok_or_else(|| format!("{at}: members: give node ids, e.g. [2, 3] or \"2-9\""))?,
                Some(other) => {
                    return Err(format!(
                        "{at}: members = {other}: give node ids, e.g. [2, 3] or \"2-9\""
                    ));
                }
            };
            for &node in std::iter::once(&e.source).chain(&members) {
                if node == 0 || node > n {
                    return Err(format!(
                        "{at}: node {node} is not a node of {} (1..={n})",
                        topology.label
                    ));
                }
            }
            if let Some(a) = e.address {
                if !pool.contains(a) {
                    return Err(format!(
                        "{at}: address {a} is outside the multicast pool {pool} (multicast_pool_base, multicast_pool_mask)"
                    ));
                }
                if !addresses.insert(a) {
                    return Err(format!("{at}: address {a} is taken by an earlier group"));
                }
            }
            if let Some(trees) = &e.trees {
                topology::multicast::check_trees(topology, e.source, trees)
                    .map_err(|m| format!("{at}: {m}"))?;
            }
            Ok(PlannedGroup {
                source: e.source,
                members,
                address: e.address,
                trees: e.trees.clone(),
            })
        })
        .collect()
}
