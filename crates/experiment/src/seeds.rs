//! Every key of the seeds' two config files, and what nextmini does with it.
//!
//! A key is **acted on** (nextmini does what the seeds' system does), **mapped** (to a setting
//! of nextmini's own that has the same effect), **accepted** (it can't change what an
//! experiment means here: it tuned the seeds' own processes, sleeps or buffers, or belongs to a
//! feature that is refused when asked for), or **refused** with the reason. A key whose silent
//! omission would change an experiment's meaning is never accepted. Some keys are acted on for
//! one value and refused for another (`scheduler_type = "fifo"` / `"wrr"`).
//!
//! [`SEED_KEYS`] is the table; the checks below look their reasons up in it, and
//! `docs/seeds-keys.md` is generated from it (a test keeps the two equal).

use std::fmt::Write as _;

use crate::ExperimentFile;

/// Which of the seeds' files a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedsFile {
    /// `controller-config.toml`: nextmini's experiment file.
    Controller,
    /// The dataplane's `config.toml`: read by `nextmini agent --config-path`.
    Dataplane,
}

/// What happens to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Acted,
    Mapped,
    Accepted,
    Refused,
    /// Acted on for some values, refused for others (the text says which).
    ByValue,
}

#[derive(Debug, Clone, Copy)]
pub struct SeedKey {
    pub file: SeedsFile,
    pub key: &'static str,
    pub fate: Fate,
    /// What nextmini does with it, or why it is refused.
    pub what: &'static str,
}

/// A key of a file that nextmini accepts without acting on it, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Note {
    pub key: &'static str,
    pub what: &'static str,
}

use Fate::*;
use SeedsFile::*;

const fn k(file: SeedsFile, key: &'static str, fate: Fate, what: &'static str) -> SeedKey {
    SeedKey {
        file,
        key,
        fate,
        what,
    }
}

/// Every key of the seeds' controller and dataplane configs.
pub const SEED_KEYS: &[SeedKey] = &[
    k(Controller, "port", Acted, "the controller's port"),
    k(
        Controller,
        "base_addr",
        Acted,
        "the overlay: node n's TUN address is base_addr + n",
    ),
    k(
        Controller,
        "net_mask",
        Acted,
        "the overlay's mask (the TUN address's prefix length)",
    ),
    k(
        Controller,
        "protocol",
        ByValue,
        "\"tcp\": every link is a TCP connection over the underlay; \"udp\": every link is UDP datagrams over the underlay (a frame each); \"quic\": every link is a QUIC connection (quinn; quic_congestion_control = \"cubic\" or \"bbr\" in the same file); anything else is refused; without it, links between nodes of one host are in-process channels and links between hosts TCP",
    ),
    k(
        Controller,
        "[topology]",
        Acted,
        "type and <type>_config presets (ring, line, star, full_mesh, tree, fat_tree, torus, random), custom edges with n_nodes, bare n_nodes, and type = \"file\" (GraphML, node-link JSON)",
    ),
    k(
        Controller,
        "[routing] protocol",
        ByValue,
        "\"shortest_path\", the only protocol; anything else is refused",
    ),
    k(
        Controller,
        "[[routes]]",
        Acted,
        "route = [path] or [[a, b], …] DAG edges: pinned per source; a DAG with several sinks (the seeds' multicast routes) is refused: give a group its trees in [[groups]] instead",
    ),
    k(
        Controller,
        "[db]",
        Acted,
        "PostgreSQL from user, password, host, database, port (or url); without it, embedded SQLite",
    ),
    k(
        Controller,
        "max_server_port",
        Accepted,
        "the seeds' max-mode nodes relayed TCP on it; nextmini's max mode is kernel forwarding, with no port",
    ),
    k(
        Controller,
        "user_space_base_addr",
        Accepted,
        "addresses of the seeds' smoltcp flows; nextmini's flows are the kernel's TCP connections (or lossless UDP) between the nodes' overlay addresses, so it changes nothing",
    ),
    k(
        Controller,
        "external_base_addr",
        Accepted,
        "maps external hosts to node ids for the seeds' max mode; nextmini's max mode reaches no external host",
    ),
    k(
        Controller,
        "multicast_pool_base",
        Acted,
        "where multicast groups take their addresses (239.255.0.0 by default; `nextmini group create`)",
    ),
    k(
        Controller,
        "multicast_pool_mask",
        Acted,
        "the multicast pool's size (255.255.0.0 by default)",
    ),
    k(
        Controller,
        "flow_transport",
        ByValue,
        "the transport of flows that name none: \"tcp\" (the default) or \"lossless_unicast\" (UDP datagrams at the flow's rate, acknowledged and repaired, with RaptorQ FEC when [lossless_runtime_config] fec_enabled); anything else is refused",
    ),
    k(
        Controller,
        "scheduler_type",
        ByValue,
        "\"fifo\" (the default): every link direction serves its queue first in, first out; \"wrr\": a queue per flow, served by the flows' weights (flow_weight, carried as DSCP); anything else is refused",
    ),
    k(
        Controller,
        "[[link_rates]]",
        Acted,
        "a token bucket on one link direction: rate (bytes/s, or \"10mbit\") and bucket_size (bytes sent at line speed before the rate holds)",
    ),
    k(
        Controller,
        "[[flows]]",
        Acted,
        "flows start once the topology is ready (or at start = \"2s\" after): kernel TCP connections between the nodes (congestion control, pacing, DSCP weight) or lossless_unicast; their results go into the store",
    ),
    k(
        Controller,
        "[[nodes]]",
        ByValue,
        "operating_mode = \"normal\" (the default) or \"max\": the kernel forwards between a max-mode node's links to other max-mode nodes of its host (veth pairs, rate and queue only); any other mode is refused",
    ),
    k(
        Dataplane,
        "controller_addr",
        Acted,
        "the controller (ws://host:port or host:port)",
    ),
    k(
        Dataplane,
        "controller_connect_timeout_ms",
        Accepted,
        "nodes connect once the controller has accepted their agent; there is no timeout to tune",
    ),
    k(
        Dataplane,
        "node_id",
        Mapped,
        "a single node's id: the agent hosts that one node (as --nodes N)",
    ),
    k(
        Dataplane,
        "n_nodes",
        Acted,
        "how many nodes this agent hosts",
    ),
    k(
        Dataplane,
        "node_id_offset",
        Acted,
        "node ids start at node_id_offset + 1",
    ),
    k(
        Dataplane,
        "private_network_name",
        Accepted,
        "nodes of one host share one underlay; its name changes nothing",
    ),
    k(
        Dataplane,
        "private_network_interface",
        Accepted,
        "a node's underlay interface is always eth0",
    ),
    k(
        Dataplane,
        "private_network_addr",
        Accepted,
        "a node's underlay address comes from its id and bridge_ip",
    ),
    k(
        Dataplane,
        "private_network_port",
        Mapped,
        "where nodes accept TCP links (--link-port)",
    ),
    k(
        Dataplane,
        "public_network_interface",
        Accepted,
        "hosts are joined by VXLAN (--peers); nodes have no public interface",
    ),
    k(
        Dataplane,
        "public_network_addr",
        Accepted,
        "hosts are joined by VXLAN (--peers); nodes have no public address",
    ),
    k(
        Dataplane,
        "public_network_port",
        Accepted,
        "hosts are joined by VXLAN (--peers); nodes have no public port",
    ),
    k(
        Dataplane,
        "tun_interface_name",
        Accepted,
        "a node's TUN device is tun0",
    ),
    k(
        Dataplane,
        "mtu",
        Accepted,
        "the TUN MTU is the experiment's ([node_settings] mtu, sent by the controller)",
    ),
    k(
        Dataplane,
        "enable_local_interface",
        Mapped,
        "false: nodes get no TUN device (as --no-dataplane)",
    ),
    k(
        Dataplane,
        "num_tun_queues",
        Accepted,
        "sizes the seeds' per-node TUN queues; nextmini's nodes share one runtime",
    ),
    k(
        Dataplane,
        "num_packet_processors",
        Accepted,
        "sizes the seeds' per-node workers; nextmini's nodes share one runtime",
    ),
    k(
        Dataplane,
        "channel_capacity",
        Accepted,
        "the seeds' internal channels; link queues are set per link ([links] queue)",
    ),
    k(
        Dataplane,
        "queue_capacity",
        Accepted,
        "the seeds' scheduler queues; link queues are set per link ([links] queue, default 1,000 packets)",
    ),
    k(
        Dataplane,
        "channel_backpressure",
        Accepted,
        "the seeds' internal channels; a full link queue drops, as on a wire",
    ),
    k(
        Dataplane,
        "feature",
        Accepted,
        "sequential or concurrent processing in the seeds' nodes; nextmini keeps each link direction in order",
    ),
    k(
        Dataplane,
        "protocol",
        Accepted,
        "the link protocol is the experiment's (the controller config's protocol)",
    ),
    k(
        Dataplane,
        "quic_congestion_control",
        Accepted,
        "both ends of a QUIC link must agree, so the experiment file's quic_congestion_control (beside protocol = \"quic\") sets it for the run",
    ),
    k(
        Dataplane,
        "scheduler_type",
        ByValue,
        "\"fifo\": accepted; \"wrr\" is refused here: the links are the experiment's, so set scheduler_type = \"wrr\" in the experiment file",
    ),
    k(
        Dataplane,
        "scheduler_drop_strategy",
        ByValue,
        "\"taildrop\": the default; \"red\" is refused here: set aqm = \"red\" in the experiment's [links]",
    ),
    k(
        Dataplane,
        "enforce_tcp_order",
        Accepted,
        "the seeds' reorder buffer; nextmini never reorders a link direction",
    ),
    k(
        Dataplane,
        "delay_tolerance",
        Accepted,
        "the seeds' reorder buffer; nextmini never reorders a link direction",
    ),
    k(
        Dataplane,
        "backlog_tolerance",
        Accepted,
        "the seeds' reorder buffer; nextmini never reorders a link direction",
    ),
    k(
        Dataplane,
        "user_space_client_port",
        Accepted,
        "ports of the seeds' smoltcp flows; nextmini generates no flows yet",
    ),
    k(
        Dataplane,
        "user_space_server_port",
        Accepted,
        "ports of the seeds' smoltcp flows; nextmini generates no flows yet",
    ),
    k(
        Dataplane,
        "metrics_collection_interval",
        Accepted,
        "the experiment file's metrics_collection_interval sets it for every node",
    ),
    k(
        Dataplane,
        "restart_on_disconnect",
        Accepted,
        "an agent whose controller goes away tears its nodes down",
    ),
    k(
        Dataplane,
        "auto_enable_ip_forward",
        Accepted,
        "forwarding is enabled on nextmini's own bridges only, when it needs it",
    ),
    k(
        Dataplane,
        "auto_add_forward_rules",
        Accepted,
        "nextmini adds no firewall rules: emulated traffic never leaves the host",
    ),
    k(
        Dataplane,
        "auto_add_nat",
        ByValue,
        "false: accepted; true is refused: nextmini never adds NAT (emulated traffic stays on this machine)",
    ),
    k(
        Dataplane,
        "bridge_name",
        Accepted,
        "bridges are named <prefix>br<k>, one per /22 shard",
    ),
    k(
        Dataplane,
        "bridge_ip",
        Mapped,
        "the underlay: its /22 is the first shard (the bridge holds .1)",
    ),
    k(
        Dataplane,
        "subnet",
        Accepted,
        "shards are /22, 1,021 nodes each",
    ),
    k(
        Dataplane,
        "interval_between_spawn",
        Accepted,
        "no fixed sleeps: nodes start when the kernel reports them ready",
    ),
    k(
        Dataplane,
        "carrier_max_wait_ms",
        Accepted,
        "no polling: link events say when a port is up",
    ),
    k(
        Dataplane,
        "carrier_poll_interval_ms",
        Accepted,
        "no polling: link events say when a port is up",
    ),
    k(
        Dataplane,
        "child_start_delay_ms",
        Accepted,
        "no child processes: nodes are tasks of one agent",
    ),
    k(
        Dataplane,
        "handshake_timeout_ms",
        Accepted,
        "no child processes: nodes are tasks of one agent",
    ),
    k(
        Dataplane,
        "lossless_runtime_config",
        Accepted,
        "the sender of a flow must know them, so the experiment file's [lossless_runtime_config] (default_chunk_size, fec_enabled, fec_default_symbols_per_block) sets them for the run",
    ),
];

/// The table's row for a key.
pub fn rule(file: SeedsFile, key: &str) -> &'static SeedKey {
    SEED_KEYS
        .iter()
        .find(|r| r.file == file && r.key == key)
        .unwrap_or_else(|| panic!("{key} is missing from SEED_KEYS"))
}

/// The message for a refused key (with its value, unless it is a table).
fn refused(file: SeedsFile, key: &str, value: Option<&str>) -> String {
    match value {
        Some(v) => format!("{key} = {v}: {}", rule(file, key).what),
        None => format!("{key}: {}", rule(file, key).what),
    }
}

/// Checks the seeds' keys of an experiment file: the byte offset and message of the first
/// refused one.
pub(crate) fn check_controller(f: &ExperimentFile) -> Result<(), (usize, String)> {
    if let Some(c) = &f.quic_congestion_control {
        let quic = f
            .protocol
            .as_ref()
            .is_some_and(|p| p.get_ref().as_str() == "quic")
            || f.link_overrides
                .iter()
                .flatten()
                .any(|o| o.protocol.as_deref() == Some("quic"));
        if !matches!(c.get_ref().as_str(), "cubic" | "bbr") {
            return Err((
                c.span().start,
                format!(
                    "quic_congestion_control = {:?}: use \"cubic\" or \"bbr\"",
                    c.get_ref()
                ),
            ));
        }
        if !quic {
            return Err((
                c.span().start,
                "quic_congestion_control is for QUIC links: add protocol = \"quic\" or remove it"
                    .into(),
            ));
        }
    }
    if let Some(p) = &f.protocol
        && !matches!(p.get_ref().as_str(), "tcp" | "udp" | "quic")
    {
        return Err((
            p.span().start,
            refused(Controller, "protocol", Some(&format!("{:?}", p.get_ref()))),
        ));
    }
    if let Some(v) = &f.flow_transport
        && !matches!(v.get_ref().as_str(), "tcp" | "lossless_unicast")
    {
        return Err((
            v.span().start,
            refused(
                Controller,
                "flow_transport",
                Some(&format!("{:?}", v.get_ref())),
            ),
        ));
    }
    if let Some(v) = &f.scheduler_type
        && !matches!(v.get_ref().as_str(), "fifo" | "wrr")
    {
        return Err((
            v.span().start,
            refused(
                Controller,
                "scheduler_type",
                Some(&format!("{:?}", v.get_ref())),
            ),
        ));
    }
    if let Some(nodes) = &f.nodes
        && let Some(n) = nodes.get_ref().iter().find(|n| {
            n.operating_mode
                .as_deref()
                .is_some_and(|m| !matches!(m, "normal" | "max"))
        })
    {
        return Err((
            nodes.span().start,
            format!(
                "[[nodes]] node {}: operating_mode = {:?}: {}",
                n.node_id,
                n.operating_mode.as_deref().unwrap_or_default(),
                rule(Controller, "[[nodes]]").what
            ),
        ));
    }
    Ok(())
}

/// The accepted keys of an experiment file, for the log.
pub(crate) fn controller_notes(f: &ExperimentFile) -> Vec<Note> {
    let present = [
        ("max_server_port", f.max_server_port.is_some()),
        ("user_space_base_addr", f.user_space_base_addr.is_some()),
        ("external_base_addr", f.external_base_addr.is_some()),
        ("multicast_pool_base", f.multicast_pool_base.is_some()),
        ("multicast_pool_mask", f.multicast_pool_mask.is_some()),
        ("flow_transport", f.flow_transport.is_some()),
    ];
    present
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(key, _)| {
            let r = rule(Controller, key);
            Note { key, what: r.what }
        })
        .collect()
}

/// The table as Markdown, one section per file.
pub fn markdown() -> String {
    let mut out = String::from(
        "# The seeds' config keys in nextmini\n\n\
         Generated from `crates/experiment/src/seeds.rs` (`SEED_KEYS`); a test keeps it equal.\n\
         **acted on**: nextmini does what the seeds' system does; **mapped**: to a setting of\n\
         nextmini's own with the same effect; **accepted**: it can't change what an experiment\n\
         means here; **refused**: an error that says why; **by value**: acted on for some values,\n\
         refused for others.\n",
    );
    for (file, title) in [
        (
            Controller,
            "Controller config (`controller-config.toml`, the experiment file)",
        ),
        (
            Dataplane,
            "Dataplane config (`config.toml`, `nextmini agent --config-path`)",
        ),
    ] {
        let _ = write!(
            out,
            "\n## {title}\n\n| key | fate | what nextmini does |\n|---|---|---|\n"
        );
        for r in SEED_KEYS.iter().filter(|r| r.file == file) {
            let fate = match r.fate {
                Acted => "acted on",
                Mapped => "mapped",
                Accepted => "accepted",
                Refused => "refused",
                ByValue => "by value",
            };
            let _ = writeln!(
                out,
                "| `{}` | {fate} | {} |",
                r.key,
                r.what.replace('|', "\\|")
            );
        }
    }
    out
}
