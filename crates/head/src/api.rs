//! What the head's HTTP API takes and answers, as types shared by the server and the client.
//!
//! ```text
//! GET  /host                            WebSocket, a host agent's session
//! GET  /api/hosts                       [HostRow]: registered hosts, up or down, nodes held
//! GET  /api/exps                        [ExperimentRow]: nodes, hosts, which is active
//! POST /api/exps/{name}                 create (if new) and make active
//! GET  /api/exps/{name}                 ExperimentDoc: hosts, schedules, placement, status
//! POST /api/exps/{name}/hosts           HostsChange
//! POST /api/exps/{name}/launch          LaunchRequest → PlanDoc
//! POST /api/exps/{name}/mv              MoveRequest → PlanDoc (on the stored dry run)
//! POST /api/exps/{name}/queueing        QueueingRequest: launches only queue until one without a file
//! POST /api/exps/{name}/exec            ExecRequest → ExecResult: run a command in a node
//! POST /api/exps/{name}/clear           → ClearReport: remove it from every host
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

pub use crate::state::{ExperimentRow, HostRow, ScheduleStat};

/// `hosts add LIST` / `hosts del LIST` for an experiment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostsChange {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub add: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub del: Option<String>,
}

/// A launch (or a dry run) of an experiment file; no file launches what is queued.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LaunchRequest {
    /// The experiment file's text.
    pub file: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    /// cpucommit (default), memcommit or netcommit.
    pub load: Option<String>,
}

/// Where each node goes, and what a launch was given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanDoc {
    /// Node ids by host.
    pub hosts: BTreeMap<String, Vec<u32>>,
    pub links_across_hosts: usize,
    /// The plan only queued (queueing is on): a launch without a file starts it.
    #[serde(default)]
    pub queued: bool,
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<LaunchDoc>,
}

/// What a launched experiment was given: its prefix, underlay, VXLAN id and controller port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaunchDoc {
    pub prefix: String,
    pub underlay_base: Ipv4Addr,
    pub vni: u32,
    /// Its controller's port on the head.
    pub port: u16,
    /// Node ids by host, as ranges (`1-4,9`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shares: BTreeMap<String, String>,
}

/// `mv NODES HOST` on the stored dry run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoveRequest {
    pub nodes: String,
    pub host: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueingRequest {
    pub on: bool,
}

/// A command to run inside a node, on whichever host holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub node: u32,
    pub argv: Vec<String>,
    /// Seconds before it is killed (default 60).
    pub timeout_s: Option<u64>,
}

/// How a command in a node ended, and what it printed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecResult {
    /// Exit code (128 + signal when killed; 124 when it timed out; 127 when it can't run).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// What a clear did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClearReport {
    /// Hosts that removed the experiment.
    pub cleared: Vec<String>,
    /// Hosts that were down: cleared when their agents come back.
    pub down: Vec<String>,
    /// Every host that was up confirmed within the wait.
    pub complete: bool,
}

/// One experiment in full.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentDoc {
    pub name: String,
    pub hosts: BTreeSet<String>,
    pub load: String,
    pub queueing: bool,
    pub schedules: Vec<ScheduleStat>,
    /// The stored dry run: host by node.
    pub dry_run: Option<BTreeMap<u32, String>>,
    pub launch: Option<LaunchDoc>,
    /// Its controller's state, while it runs.
    pub status: Option<controller::coordinator::Status>,
    /// Nodes reported failed (lost with their host, or failed themselves).
    #[serde(default)]
    pub failed_nodes: Vec<u32>,
    /// Links whose connection is down, as `a-b`.
    #[serde(default)]
    pub lost_links: Vec<String>,
}
