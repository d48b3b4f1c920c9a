//! The seeds' dataplane config (`examples/namespace/config.toml`), read by `nextmini agent
//! --config-path` and `nextmini --config-path`: the keys nextmini acts on or maps, and every
//! other key of that file accepted or refused as [`crate::seeds::SEED_KEYS`] says.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::file::PortValue;
use crate::seeds::{self, Note, SeedsFile};
use crate::{ConfigError, at, read, toml_error};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataplaneFile {
    #[serde(skip)]
    pub source: String,
    pub controller_addr: Option<String>,
    pub n_nodes: Option<u32>,
    pub node_id_offset: Option<u32>,
    /// One node's id (the seeds' single-node mode).
    pub node_id: Option<u32>,
    pub bridge_ip: Option<Ipv4Addr>,
    pub private_network_port: Option<PortValue>,
    pub enable_local_interface: Option<bool>,
    pub auto_add_nat: Option<Spanned<bool>>,
    pub scheduler_type: Option<Spanned<String>>,
    pub scheduler_drop_strategy: Option<Spanned<String>>,
    // Accepted: each can't change what an experiment means here (see SEED_KEYS).
    pub controller_connect_timeout_ms: Option<toml::Value>,
    pub private_network_name: Option<toml::Value>,
    pub private_network_interface: Option<toml::Value>,
    pub private_network_addr: Option<toml::Value>,
    pub public_network_interface: Option<toml::Value>,
    pub public_network_addr: Option<toml::Value>,
    pub public_network_port: Option<toml::Value>,
    pub tun_interface_name: Option<toml::Value>,
    pub mtu: Option<toml::Value>,
    pub num_tun_queues: Option<toml::Value>,
    pub num_packet_processors: Option<toml::Value>,
    pub channel_capacity: Option<toml::Value>,
    pub queue_capacity: Option<toml::Value>,
    pub channel_backpressure: Option<toml::Value>,
    pub feature: Option<toml::Value>,
    pub protocol: Option<toml::Value>,
    pub quic_congestion_control: Option<toml::Value>,
    pub enforce_tcp_order: Option<toml::Value>,
    pub delay_tolerance: Option<toml::Value>,
    pub backlog_tolerance: Option<toml::Value>,
    pub user_space_client_port: Option<toml::Value>,
    pub user_space_server_port: Option<toml::Value>,
    pub metrics_collection_interval: Option<toml::Value>,
    pub restart_on_disconnect: Option<toml::Value>,
    pub auto_enable_ip_forward: Option<toml::Value>,
    pub auto_add_forward_rules: Option<toml::Value>,
    pub bridge_name: Option<toml::Value>,
    pub subnet: Option<toml::Value>,
    pub interval_between_spawn: Option<toml::Value>,
    pub carrier_max_wait_ms: Option<toml::Value>,
    pub carrier_poll_interval_ms: Option<toml::Value>,
    pub child_start_delay_ms: Option<toml::Value>,
    pub handshake_timeout_ms: Option<toml::Value>,
    pub lossless_runtime_config: Option<toml::Value>,
}

impl DataplaneFile {
    pub fn parse(file: &str, text: &str) -> Result<Self, ConfigError> {
        let mut f: DataplaneFile = toml::from_str(text).map_err(|e| toml_error(file, text, &e))?;
        f.source = file.to_owned();
        let refuse = |key: &str, offset: usize, value: String| {
            let what = seeds::rule(SeedsFile::Dataplane, key).what;
            Err(at(file, text, offset, format!("{key} = {value}: {what}")))
        };
        if let Some(nat) = &f.auto_add_nat
            && *nat.get_ref()
        {
            return refuse("auto_add_nat", nat.span().start, "true".into());
        }
        if let Some(s) = &f.scheduler_type
            && s.get_ref() != "fifo"
        {
            return refuse(
                "scheduler_type",
                s.span().start,
                format!("{:?}", s.get_ref()),
            );
        }
        if let Some(s) = &f.scheduler_drop_strategy
            && s.get_ref() != "taildrop"
        {
            return refuse(
                "scheduler_drop_strategy",
                s.span().start,
                format!("{:?}", s.get_ref()),
            );
        }
        Ok(f)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&path.display().to_string(), &read(path)?)
    }

    fn meaning(&self, message: String) -> ConfigError {
        ConfigError::Meaning {
            file: self.source.clone(),
            message,
        }
    }

    /// The underlay base for a bridge address: the /22 that holds it.
    pub fn underlay_base(&self) -> Option<Ipv4Addr> {
        self.bridge_ip
            .map(|ip| Ipv4Addr::from(u32::from(ip) & !0x3ff))
    }

    /// Where nodes accept TCP links (`private_network_port`).
    pub fn link_port(&self) -> Result<Option<u16>, ConfigError> {
        self.private_network_port
            .as_ref()
            .map(|p| p.port("private_network_port"))
            .transpose()
            .map_err(|m| self.meaning(m))
    }

    /// The controller from `controller_addr` (`ws://host:port`, `host:port`).
    pub fn controller(&self) -> Result<Option<SocketAddr>, ConfigError> {
        let Some(addr) = &self.controller_addr else {
            return Ok(None);
        };
        let bare = addr
            .trim_start_matches("ws://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        bare.parse()
            .map(Some)
            .map_err(|_| self.meaning(format!("controller_addr = {addr:?} is not host:port")))
    }

    /// The node ids this agent hosts when the file names one node (`node_id`, the seeds'
    /// single-node mode); `None` when it gives a count (`n_nodes`, `node_id_offset`).
    pub fn single_node(&self) -> Result<Option<u32>, ConfigError> {
        match (self.node_id, self.n_nodes) {
            (None | Some(0), _) => Ok(None),
            (Some(id), None | Some(1)) => Ok(Some(id)),
            (Some(id), Some(n)) => Err(self.meaning(format!(
                "node_id = {id} with n_nodes = {n}: give one node's id, or a count and node_id_offset"
            ))),
        }
    }

    /// Whether nodes get TUN devices (`enable_local_interface`, default true).
    pub fn local_interface(&self) -> bool {
        self.enable_local_interface.unwrap_or(true)
    }

    /// The accepted keys present in the file, for the log.
    pub fn notes(&self) -> Vec<Note> {
        let present = [
            (
                "controller_connect_timeout_ms",
                self.controller_connect_timeout_ms.is_some(),
            ),
            ("private_network_name", self.private_network_name.is_some()),
            (
                "private_network_interface",
                self.private_network_interface.is_some(),
            ),
            ("private_network_addr", self.private_network_addr.is_some()),
            (
                "public_network_interface",
                self.public_network_interface.is_some(),
            ),
            ("public_network_addr", self.public_network_addr.is_some()),
            ("public_network_port", self.public_network_port.is_some()),
            ("tun_interface_name", self.tun_interface_name.is_some()),
            ("mtu", self.mtu.is_some()),
            ("num_tun_queues", self.num_tun_queues.is_some()),
            (
                "num_packet_processors",
                self.num_packet_processors.is_some(),
            ),
            ("channel_capacity", self.channel_capacity.is_some()),
            ("queue_capacity", self.queue_capacity.is_some()),
            ("channel_backpressure", self.channel_backpressure.is_some()),
            ("feature", self.feature.is_some()),
            ("protocol", self.protocol.is_some()),
            (
                "quic_congestion_control",
                self.quic_congestion_control.is_some(),
            ),
            ("enforce_tcp_order", self.enforce_tcp_order.is_some()),
            ("delay_tolerance", self.delay_tolerance.is_some()),
            ("backlog_tolerance", self.backlog_tolerance.is_some()),
            (
                "user_space_client_port",
                self.user_space_client_port.is_some(),
            ),
            (
                "user_space_server_port",
                self.user_space_server_port.is_some(),
            ),
            (
                "metrics_collection_interval",
                self.metrics_collection_interval.is_some(),
            ),
            (
                "restart_on_disconnect",
                self.restart_on_disconnect.is_some(),
            ),
            (
                "auto_enable_ip_forward",
                self.auto_enable_ip_forward.is_some(),
            ),
            (
                "auto_add_forward_rules",
                self.auto_add_forward_rules.is_some(),
            ),
            ("bridge_name", self.bridge_name.is_some()),
            ("subnet", self.subnet.is_some()),
            (
                "interval_between_spawn",
                self.interval_between_spawn.is_some(),
            ),
            ("carrier_max_wait_ms", self.carrier_max_wait_ms.is_some()),
            (
                "carrier_poll_interval_ms",
                self.carrier_poll_interval_ms.is_some(),
            ),
            ("child_start_delay_ms", self.child_start_delay_ms.is_some()),
            ("handshake_timeout_ms", self.handshake_timeout_ms.is_some()),
            (
                "lossless_runtime_config",
                self.lossless_runtime_config.is_some(),
            ),
        ];
        present
            .into_iter()
            .filter(|(_, set)| *set)
            .map(|(key, _)| Note {
                key,
                what: seeds::rule(SeedsFile::Dataplane, key).what,
            })
            .collect()
    }
}
