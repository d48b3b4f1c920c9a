//! What a node's dataplane measures for the store, as plain state: bytes per flow on each
//! link direction ([`FlowMeter`]), and the applications' connections that start at this node
//! ([`AppFlows`]: a TCP SYN opens one, FIN or RST closes it; a UDP flow opens with its first
//! datagram and closes after a silence).

use std::collections::HashMap;

use proto::monitor::{AppFlowEvent, FlowBytes, FlowKey};

use crate::packet::{Ipv4Packet, TCP, UDP};

/// The 5-tuple of an IPv4 packet (ports 0 where the protocol has none).
pub fn flow_key(ip: &[u8]) -> Option<FlowKey> {
    let p = Ipv4Packet::new_checked(ip).ok()?;
    let (sport, dport) = p.ports().unwrap_or((0, 0));
    Some(FlowKey {
        src: p.src_addr(),
        dst: p.dst_addr(),
        protocol: p.protocol(),
        sport,
        dport,
    })
}

/// A TCP segment's flags byte.
fn tcp_flags(ip: &[u8]) -> Option<u8> {
    let p = Ipv4Packet::new_checked(ip).ok()?;
    (p.protocol() == TCP)
        .then(|| p.payload().get(13).copied())
        .flatten()
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;

/// Flows a link direction tells apart in one interval; past this many, the rest are summed
/// under the zero key (a bound on memory for scans and floods).
pub const MAX_FLOWS_PER_INTERVAL: usize = 65_536;

/// Bytes and packets per flow on one link direction since they were last taken.
#[derive(Debug, Default)]
pub struct FlowMeter {
    flows: HashMap<FlowKey, (u64, u64)>,
}

impl FlowMeter {
    pub fn record(&mut self, key: FlowKey, bytes: u64) {
        let full = self.flows.len() >= MAX_FLOWS_PER_INTERVAL;
        let key = if full && !self.flows.contains_key(&key) {
            FlowKey {
                src: [0, 0, 0, 0].into(),
                dst: [0, 0, 0, 0].into(),
                protocol: 0,
                sport: 0,
                dport: 0,
            }
        } else {
            key
        };
        let e = self.flows.entry(key).or_default();
        e.0 += bytes;
        e.1 += 1;
    }

    /// What was counted, for the link to `peer`, and a fresh start.
    pub fn take(&mut self, peer: u32, out: &mut Vec<FlowBytes>) {
        out.extend(self.flows.drain().map(|(key, (bytes, packets))| FlowBytes {
            peer,
            key,
            bytes,
            packets,
        }));
        // A burst of flows should not keep its memory for good.
        if self.flows.capacity() > 1024 {
            self.flows.shrink_to(64);
        }
    }
}

/// A connection seen opening.
#[derive(Debug, Clone, Copy)]
struct Open {
    bytes: u64,
    last_ns: u64,
}

/// The applications' connections from this node.
#[derive(Debug, Default)]
pub struct AppFlows {
    open: HashMap<FlowKey, Open>,
    events: Vec<AppFlowEvent>,
}

/// A UDP flow is over after this much silence; a TCP connection that closes unseen (its
/// namespace went away) after this much.
pub const UDP_IDLE_NS: u64 = 10_000_000_000;
pub const TCP_IDLE_NS: u64 = 300_000_000_000;

impl AppFlows {
    /// A packet from this node's own applications (read from its TUN device).
    pub fn observe(&mut self, now_ns: u64, ip: &[u8]) {
        let Some(key) = flow_key(ip) else { return };
        let len = ip.len() as u64;
        match key.protocol {
            TCP => {
                let flags = tcp_flags(ip).unwrap_or(0);
                if flags & SYN != 0 && flags & ACK == 0 {
                    if !self.open.contains_key(&key) {
                        self.events
                            .push(AppFlowEvent::Started { key, at_ns: now_ns });
                    }
                    self.open.insert(
                        key,
                        Open {
                            bytes: len,
                            last_ns: now_ns,
                        },
                    );
                    return;
                }
                let Some(o) = self.open.get_mut(&key) else {
                    return;
                };
                o.bytes += len;
                o.last_ns = now_ns;
                if flags & (FIN | RST) != 0 {
                    let bytes = o.bytes;
                    self.open.remove(&key);
                    self.events.push(AppFlowEvent::Finished {
                        key,
                        at_ns: now_ns,
                        bytes,
                    });
                }
            }
            UDP => {
                let o = self.open.entry(key).or_insert_with(|| {
                    self.events
                        .push(AppFlowEvent::Started { key, at_ns: now_ns });
                    Open {
                        bytes: 0,
                        last_ns: now_ns,
                    }
                });
                o.bytes += len;
                o.last_ns = now_ns;
            }
            _ => {}
        }
    }

    /// A packet for this node (written to its TUN device): a reset from the far end closes
    /// a connection that started here (its own FIN comes out through [`AppFlows::observe`]).
    pub fn observe_incoming(&mut self, now_ns: u64, ip: &[u8]) {
        if tcp_flags(ip).is_none_or(|f| f & RST == 0) {
            return;
        }
        let Some(k) = flow_key(ip) else { return };
        let key = FlowKey {
            src: k.dst,
            dst: k.src,
            protocol: k.protocol,
            sport: k.dport,
            dport: k.sport,
        };
        if let Some(o) = self.open.remove(&key) {
            self.events.push(AppFlowEvent::Finished {
                key,
                at_ns: now_ns,
                bytes: o.bytes,
            });
        }
    }

    /// Whether an incoming packet may close a connection (so is worth the lock).
    pub fn closes(ip: &[u8]) -> bool {
        tcp_flags(ip).is_some_and(|f| f & RST != 0)
    }

    /// Closes the connections silent for too long, and hands over what happened.
    pub fn take(&mut self, now_ns: u64, out: &mut Vec<AppFlowEvent>) {
        let events = &mut self.events;
        self.open.retain(|key, o| {
            let idle = if key.protocol == UDP {
                UDP_IDLE_NS
            } else {
                TCP_IDLE_NS
            };
            let alive = now_ns.saturating_sub(o.last_ns) < idle;
            if !alive {
                events.push(AppFlowEvent::Finished {
                    key: *key,
                    at_ns: o.last_ns,
                    bytes: o.bytes,
                });
            }
            alive
        });
        out.append(&mut self.events);
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(sport: u16, flags: u8, payload: usize) -> Vec<u8> {
        let total = 40 + payload;
        let mut ip = vec![0u8; total];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = TCP;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        ip[20..22].copy_from_slice(&sport.to_be_bytes());
        ip[22..24].copy_from_slice(&5201u16.to_be_bytes());
        ip[32] = 0x50;
        ip[33] = flags;
        ip
    }

    #[test]
    fn a_connection_opens_with_its_syn_and_closes_with_its_fin() {
        let mut a = AppFlows::default();
        a.observe(1, &tcp(40000, SYN, 0));
        a.observe(2, &tcp(40000, ACK, 1000));
        // Segments of connections opened before (or answers to others') are not ours.
        a.observe(2, &tcp(40001, ACK, 1000));
        a.observe(3, &tcp(40000, FIN | ACK, 0));
        let mut events = Vec::new();
        a.take(4, &mut events);
        let key = flow_key(&tcp(40000, 0, 0)).unwrap();
        assert_eq!(
            events,
            vec![
                AppFlowEvent::Started { key, at_ns: 1 },
                AppFlowEvent::Finished {
                    key,
                    at_ns: 3,
                    bytes: 40 + 1040 + 40
                }
            ]
        );
        assert_eq!(a.open(), 0);
    }

    #[test]
    fn a_reset_from_the_far_end_closes_a_connection() {
        let mut a = AppFlows::default();
        a.observe(1, &tcp(40000, SYN, 0));
        let mut rst = tcp(5201, RST, 0);
        // The far end's reset: addresses and ports the other way round.
        rst[12..16].copy_from_slice(&[10, 0, 0, 2]);
        rst[16..20].copy_from_slice(&[10, 0, 0, 1]);
        rst[22..24].copy_from_slice(&40000u16.to_be_bytes());
        assert!(AppFlows::closes(&rst));
        a.observe_incoming(5, &rst);
        let mut events = Vec::new();
        a.take(6, &mut events);
        assert!(matches!(events[1], AppFlowEvent::Finished { at_ns: 5, .. }));
        assert_eq!(a.open(), 0);
    }

    #[test]
    fn a_silent_connection_is_closed_after_the_idle_time() {
        let mut a = AppFlows::default();
        a.observe(0, &tcp(40000, SYN, 0));
        let mut events = Vec::new();
        a.take(TCP_IDLE_NS - 1, &mut events);
        assert_eq!(events.len(), 1);
        a.take(TCP_IDLE_NS, &mut events);
        assert!(matches!(
            events[1],
            AppFlowEvent::Finished {
                at_ns: 0,
                bytes: 40,
                ..
            }
        ));
    }

    #[test]
    fn a_meter_counts_per_flow_and_starts_afresh() {
        let mut m = FlowMeter::default();
        let (a, b) = (
            flow_key(&tcp(1, 0, 0)).unwrap(),
            flow_key(&tcp(2, 0, 0)).unwrap(),
        );
        m.record(a, 100);
        m.record(a, 50);
        m.record(b, 10);
        let mut out = Vec::new();
        m.take(7, &mut out);
        out.sort_by_key(|f| f.key);
        assert_eq!(
            out,
            vec![
                FlowBytes {
                    peer: 7,
                    key: a,
                    bytes: 150,
                    packets: 2
                },
                FlowBytes {
                    peer: 7,
                    key: b,
                    bytes: 10,
                    packets: 1
                },
            ]
        );
        out.clear();
        m.take(7, &mut out);
        assert!(out.is_empty());
    }
}
