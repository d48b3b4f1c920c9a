//! Flows: what a generated flow is (the seeds' `FlowSpec`, with nextmini's additions), the
//! order that starts one, and what its ends report.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// A flow's length: so many bytes, or so long.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum FlowLen {
    Bytes(u64),
    /// Seconds.
    Duration(f64),
}

/// How a flow's data travels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowTransport {
    /// A TCP connection between the two nodes' namespaces.
    #[default]
    Tcp,
    /// UDP datagrams paced at the flow's rate, acknowledged and repaired, optionally with
    /// RaptorQ forward error correction (`[lossless_runtime_config]`).
    LosslessUnicast,
}

/// How lossless flows are cut and protected: the experiment's `[lossless_runtime_config]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LosslessConfig {
    /// Bytes of the flow in each datagram (`default_chunk_size`).
    pub chunk_size: u16,
    /// Source symbols per RaptorQ block (`fec_default_symbols_per_block`, when
    /// `fec_enabled`); None: lost chunks are sent again.
    pub fec_symbols_per_block: Option<u16>,
}

impl Default for LosslessConfig {
    /// Chunks that fit a 1,500-byte packet with their headers, no FEC.
    fn default() -> Self {
        LosslessConfig {
            chunk_size: DEFAULT_LOSSLESS_CHUNK,
            fec_symbols_per_block: None,
        }
    }
}

/// A chunk, its 47 bytes of header (`lossless::DATA_OVERHEAD`), UDP and IP fill a 1,500-byte
/// packet: a larger one travels as two IP fragments, and a lost fragment loses the chunk.
pub const DEFAULT_LOSSLESS_CHUNK: u16 = 1_425;

/// A flow as the seeds write it (`flow_spec = { flow_len = { Bytes = n }, flow_rate = …,
/// flow_weight = …, transport = "tcp" }`), with nextmini's `cc`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSpec {
    pub flow_len: FlowLen,
    /// Pacing, in bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_rate: Option<u64>,
    /// Its weight under weighted round robin (1 to 63; sent as the packets' DSCP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_weight: Option<u32>,
    #[serde(default)]
    pub transport: FlowTransport,
    /// TCP congestion control (`cubic`, `bbr`, `reno`, …: whatever the kernel has).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cc: Option<String>,
}

impl FlowSpec {
    /// A flow of `bytes`, with defaults for the rest.
    pub fn bytes(bytes: u64) -> FlowSpec {
        FlowSpec {
            flow_len: FlowLen::Bytes(bytes),
            flow_rate: None,
            flow_weight: None,
            transport: FlowTransport::Tcp,
            cc: None,
        }
    }

    /// Checks what a flow may be; the message says what is wrong.
    pub fn check(&self) -> Result<(), String> {
        match self.flow_len {
            FlowLen::Bytes(0) => return Err("flow_len: a flow of 0 bytes".into()),
            FlowLen::Duration(d) if !(d > 0.0 && d <= 86_400.0) => {
                return Err(format!("flow_len: a duration of {d} s: give 0 to 86400"));
            }
            _ => {}
        }
        if self.flow_rate == Some(0) {
            return Err("flow_rate: 0 bytes/s; leave it out for no pacing".into());
        }
        if self.transport == FlowTransport::LosslessUnicast && self.flow_rate.is_none() {
            return Err(
                "a lossless_unicast flow has no congestion control and sends at its rate: give it flow_rate (--rate)"
                    .into(),
            );
        }
        if let Some(w) = self.flow_weight
            && !(1..=63).contains(&w)
        {
            return Err(format!(
                "flow_weight = {w}: weights are 1 to 63 (a packet's DSCP carries it)"
            ));
        }
        if let Some(cc) = &self.cc
            && (cc.is_empty()
                || cc.len() > 15
                || !cc
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
        {
            return Err(format!("cc = {cc:?} is not a congestion control name"));
        }
        Ok(())
    }
}

/// A flow for a source node to start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowOrder {
    pub id: u64,
    pub dst: u32,
    /// The destination's overlay address and the port its flows are taken on.
    pub dst_addr: Ipv4Addr,
    pub port: u16,
    pub spec: FlowSpec,
    /// How a lossless flow is cut and protected.
    #[serde(default)]
    pub lossless: LosslessConfig,
}

/// What the kernel says of a TCP connection at its end (`TCP_INFO`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpStats {
    /// Segments retransmitted over the connection's life.
    pub retransmits: u64,
    /// Smoothed round-trip time, microseconds.
    pub srtt_us: u32,
    /// The congestion window at the end, in segments.
    pub cwnd: u32,
}

/// Where flows are taken on every node, on its overlay address, unless the experiment says.
pub const DEFAULT_FLOW_PORT: u16 = 47_000;
