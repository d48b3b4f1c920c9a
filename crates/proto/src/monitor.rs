//! What nodes measure for the store: bytes per flow on each link direction, and the
//! applications' connections their dataplane saw open and close (the seeds' `metrics` and
//! `app_flows`).

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// A flow as the dataplane tells flows apart: its 5-tuple (ports 0 for protocols without).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FlowKey {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub sport: u16,
    pub dport: u16,
}

impl FlowKey {
    /// The seeds' 16-byte flow id: addresses, ports and protocol, big-endian.
    pub fn id(&self) -> u128 {
        (u128::from(u32::from(self.src)) << 96)
            | (u128::from(u32::from(self.dst)) << 64)
            | (u128::from(self.sport) << 48)
            | (u128::from(self.dport) << 32)
            | u128::from(self.protocol)
    }

    /// The flow's hash as the routes see it.
    pub fn hash(&self) -> u64 {
        let ports = matches!(self.protocol, 6 | 17).then_some((self.sport, self.dport));
        topology::routing::flow_hash(self.src, self.dst, self.protocol, ports)
    }
}

/// One flow's traffic on a link direction in an interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowBytes {
    /// The link direction's far end (the near end is the reporting node).
    pub peer: u32,
    pub key: FlowKey,
    pub bytes: u64,
    pub packets: u64,
}

/// An application's connection, seen by the dataplane of the node it starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppFlowEvent {
    /// Its first packet (a TCP SYN, or the first datagram), Unix time in nanoseconds.
    Started { key: FlowKey, at_ns: u64 },
    /// Its FIN or RST (TCP), or silence for a while (others); bytes it sent in all.
    Finished {
        key: FlowKey,
        at_ns: u64,
        bytes: u64,
    },
}

/// How often nodes report when the experiment does not say (the seeds' default is 5 s).
pub const DEFAULT_METRICS_INTERVAL_MS: u32 = 1000;
/// The shortest interval taken.
pub const MIN_METRICS_INTERVAL_MS: u32 = 100;

/// Serde's default for the interval field of the welcome.
pub(crate) fn metrics_interval_default() -> u32 {
    DEFAULT_METRICS_INTERVAL_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_ids_put_addresses_ports_and_protocol_in_order() {
        let k = FlowKey {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            protocol: 6,
            sport: 0x1234,
            dport: 0x5678,
        };
        assert_eq!(
            k.id().to_be_bytes(),
            [10, 0, 0, 1, 10, 0, 0, 2, 0x12, 0x34, 0x56, 0x78, 0, 0, 0, 6]
        );
    }
}
