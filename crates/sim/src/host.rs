//! The nodes' host stacks, as far as the simulator needs them: answering pings, noting the
//! answers to its own probes (echo replies and ICMP errors), and a window-limited bulk sender
//! with a receiver that acknowledges every packet.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dataplane::packet::{ICMP, Ipv4Packet, UDP};

use crate::packets;

/// A probe's answer: who answered, after how long, and whether it was the echo reply (else an
/// ICMP error: time exceeded or unreachable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingReply {
    pub from: Ipv4Addr,
    pub rtt: Duration,
    pub echo: bool,
}

/// A bulk transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BulkId(u16);

/// Probes in flight are keyed by (sender, ident, seq).
pub type ProbeKey = (u32, u16, u16);

struct Bulk {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    window: u32,
    cwnd: u32,
    next_seq: u64,
    received_bytes: u64,
}

const DATA_PORT: u16 = 5002;
const PACKET: usize = 1500;
const ACK: usize = 48;

#[derive(Default)]
pub struct HostStack {
    next_seq: u16,
    sent: HashMap<ProbeKey, Instant>,
    answers: HashMap<ProbeKey, PingReply>,
    bulks: Vec<Bulk>,
}

impl HostStack {
    /// An echo request from `node` to `to`; the key finds its answer.
    pub fn echo_request(
        &mut self,
        now: Instant,
        node: u32,
        to: Ipv4Addr,
        ttl: u8,
    ) -> (ProbeKey, Vec<u8>) {
        self.next_seq = self.next_seq.wrapping_add(1);
        let key = (node, node as u16, self.next_seq);
        self.sent.insert(key, now);
        (
            key,
            packets::echo(crate::overlay(node), to, ttl, 8, key.1, key.2),
        )
    }

    pub fn answered(&self, key: ProbeKey) -> bool {
        self.answers.contains_key(&key)
    }

    pub fn answer(&mut self, key: ProbeKey) -> Option<PingReply> {
        self.sent.remove(&key);
        self.answers.remove(&key)
    }

    /// Starts a bulk transfer: the first packets to send.
    pub fn start_bulk(
        &mut self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        window: u32,
    ) -> (BulkId, Vec<Vec<u8>>) {
        let id = BulkId(self.bulks.len() as u16);
        let mut b = Bulk {
            src,
            dst,
            window,
            cwnd: 10.min(window),
            next_seq: 0,
            received_bytes: 0,
        };
        let first = (0..b.cwnd).map(|_| b.next_packet(id)).collect();
        self.bulks.push(b);
        (id, first)
    }

    pub fn bulk_received(&self, id: BulkId) -> u64 {
        self.bulks[id.0 as usize].received_bytes
    }

    /// `node` received `packet`: what it sends in answer.
    pub fn receive(&mut self, now: Instant, node: u32, packet: &[u8]) -> Vec<Vec<u8>> {
        let Ok(p) = Ipv4Packet::new_checked(packet) else {
            return Vec::new();
        };
        match p.protocol() {
            ICMP => self.icmp(now, node, &p),
            UDP => self.udp(&p),
            _ => Vec::new(),
        }
    }

    fn icmp(&mut self, now: Instant, node: u32, p: &Ipv4Packet<&[u8]>) -> Vec<Vec<u8>> {
        let icmp = p.payload();
        if icmp.len() < 8 {
            return Vec::new();
        }
        let word = |at: usize| u16::from_be_bytes([icmp[at], icmp[at + 1]]);
        match icmp[0] {
            // The kernel answers echo requests.
            8 => vec![packets::echo(
                p.dst_addr(),
                p.src_addr(),
                64,
                0,
                word(4),
                word(6),
            )],
            0 => {
                self.note(now, (node, word(4), word(6)), p.src_addr(), true);
                Vec::new()
            }
            // An error quotes the original header and 8 bytes: our echo's ident and seq.
            3 | 11 if icmp.len() >= 8 + 20 + 8 => {
                let quoted = &icmp[8..];
                let ihl = usize::from(quoted[0] & 0x0f) * 4;
                if quoted.len() >= ihl + 8 {
                    let q = &quoted[ihl..];
                    let key = (
                        node,
                        u16::from_be_bytes([q[4], q[5]]),
                        u16::from_be_bytes([q[6], q[7]]),
                    );
                    self.note(now, key, p.src_addr(), false);
                }
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn note(&mut self, now: Instant, key: ProbeKey, from: Ipv4Addr, echo: bool) {
        if let Some(sent) = self.sent.get(&key) {
            self.answers.entry(key).or_insert(PingReply {
                from,
                rtt: now - *sent,
                echo,
            });
        }
    }

    fn udp(&mut self, p: &Ipv4Packet<&[u8]>) -> Vec<Vec<u8>> {
        let Some((sport, dport)) = p.ports() else {
            return Vec::new();
        };
        if dport == DATA_PORT {
            // Data: count it and acknowledge it.
            let Some(b) = self.bulks.get_mut(usize::from(sport.wrapping_sub(10_000))) else {
                return Vec::new();
            };
            b.received_bytes += p.header().len() as u64 + p.payload().len() as u64;
            return vec![packets::udp(
                p.dst_addr(),
                p.src_addr(),
                (DATA_PORT, sport),
                0,
                ACK,
            )];
        }
        // An acknowledgement: the window moves, and grows until it is full.
        let Some(b) = self.bulks.get_mut(usize::from(dport.wrapping_sub(10_000))) else {
            return Vec::new();
        };
        let id = BulkId(dport - 10_000);
        let mut out = vec![b.next_packet(id)];
        if b.cwnd < b.window {
            b.cwnd += 1;
            out.push(b.next_packet(id));
        }
        out
    }
}

impl Bulk {
    fn next_packet(&mut self, id: BulkId) -> Vec<u8> {
        self.next_seq += 1;
        packets::udp(
            self.src,
            self.dst,
            (10_000 + id.0, DATA_PORT),
            self.next_seq,
            PACKET,
        )
    }
}
