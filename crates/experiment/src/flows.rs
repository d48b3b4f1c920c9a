//! Flows of an experiment: `[[flows]]` as the seeds write them (with nextmini's `start`), and
//! `[[workload]]`s that generate many, resolved into one list ordered by start.

use std::time::Duration;

use linkem::Span;
use proto::{FlowLen, FlowSpec};
use serde::{Deserialize, Serialize};
use topology::Topology;

use crate::workload::Workload;

/// `[[flows]]`: one flow, the seeds' way (also the body of `POST /api/flows`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowEntry {
    pub src_node_id: u32,
    pub dst_node_id: u32,
    pub flow_spec: FlowSpec,
    /// When it starts, after the topology is ready (default: at once, the seeds' rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Span>,
}

/// A flow of the experiment, as the controller starts it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedFlow {
    pub src: u32,
    pub dst: u32,
    /// After the topology is ready.
    pub start: Duration,
    pub spec: FlowSpec,
}

/// Checks a flow's ends against the topology and its spec; the message names what is wrong.
pub fn check_flow(topology: &Topology, src: u32, dst: u32, spec: &FlowSpec) -> Result<(), String> {
    let n = topology.n_nodes();
    for (what, id) in [("src_node_id", src), ("dst_node_id", dst)] {
        if id == 0 || id > n {
            return Err(format!(
                "{what} = {id} is not a node of {} (1..={n})",
                topology.label
            ));
        }
    }
    if src == dst {
        return Err(format!("a flow from node {src} to itself"));
    }
    spec.check()
}

/// The flows of `[[flows]]` and every `[[workload]]`, by start time.
pub(crate) fn plan(
    topology: &Topology,
    entries: &[FlowEntry],
    workloads: &[Workload],
    default_transport: proto::FlowTransport,
) -> Result<Vec<PlannedFlow>, String> {
    let mut flows = Vec::new();
    for (i, f) in entries.iter().enumerate() {
        let mut spec = f.flow_spec.clone();
        if spec.transport == proto::FlowTransport::Tcp {
            spec.transport = default_transport;
        }
        check_flow(topology, f.src_node_id, f.dst_node_id, &spec)
            .map_err(|e| format!("[[flows]] #{}: {e}", i + 1))?;
        flows.push(PlannedFlow {
            src: f.src_node_id,
            dst: f.dst_node_id,
            start: f.start.map_or(Duration::ZERO, Span::duration),
            spec,
        });
    }
    for (i, w) in workloads.iter().enumerate() {
        flows.extend(
            w.generate(topology)
                .map_err(|e| format!("[[workload]] #{}: {e}", i + 1))?,
        );
    }
    // Stable: flows of one start keep the file's order.
    flows.sort_by_key(|f| f.start);
    Ok(flows)
}

/// The bytes a flow carries, when it is given in bytes.
pub fn flow_bytes(spec: &FlowSpec) -> Option<u64> {
    match spec.flow_len {
        FlowLen::Bytes(b) => Some(b),
        FlowLen::Duration(_) => None,
    }
}
