//! The nodes' host stacks, as far as the simulator needs them: answering pings, noting the
//! answers to its own probes (echo replies and ICMP errors), and streams: a window-limited
//! sender whose every packet the receiver acknowledges. A bulk transfer is a stream without an
//! end; a generated flow is a stream of its bytes (or its duration) that reports to its node's
//! session as the agent's real flows do. Streams do not recover losses: simulations give their
//! links queues deep enough for their windows. Lossless flows (`transport =
//! "lossless_unicast"`) are the agent's: the `lossless` crate's sender and receiver, planned and
//! reported by `agent::lossless`, their datagrams in UDP packets, woken by the simulator's clock.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use agent::session::FlowEvent;
use dataplane::packet::{ICMP, Ipv4Packet, TCP, UDP};

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

/// Data bytes a stream packet carries (1,500 bytes in all: IP, TCP and the stream header).
const DATA: u64 = 1500 - 20 - packets::TCP_HEADER as u64 - HEADER as u64;
/// Stream header: kind (1), last (1), data length (4), stream port (2).
const HEADER: usize = 8;
const ACK: usize = 48;
const KIND_DATA: u8 = 1;
const KIND_ACK: u8 = 2;

/// A finished lossless flow's receiver still answers late datagrams for this long, as the
/// agent's does (the sender may have missed the word that it is done).
const LOSSLESS_LINGER: Duration = Duration::from_secs(10);

/// The sending end of a lossless flow.
struct LosslessOut {
    node: u32,
    id: u64,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    dport: u16,
    total: u64,
    sender: lossless::Sender,
}

/// The receiving end of a lossless flow, keyed by (node, sender's address and port, flow).
struct LosslessIn {
    receiver: lossless::Receiver,
    first_ns: u64,
    done_at: Option<Instant>,
}

type LosslessKey = (u32, Ipv4Addr, u16, u64);

/// Unix time of the simulation's start, so flows' times look like the real ones.
pub(crate) const EPOCH_NS: u64 = 1_800_000_000_000_000_000;

struct Stream {
    src_node: u32,
    dst_node: u32,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    /// A generated flow's id (it reports); none for a bulk transfer.
    flow: Option<u64>,
    /// Bytes to send; none: without end.
    total: Option<u64>,
    /// Sending stops at this time (a flow given by duration).
    until: Option<Instant>,
    tos: u8,
    window: u32,
    cwnd: u32,
    in_flight: u32,
    sent: u64,
    acked: u64,
    done_sending: bool,
    // The receiver's side: data bytes, and whole IP packets' bytes.
    received: u64,
    received_wire: u64,
    first_at: Option<Instant>,
}

/// What a host stack does in answer to a packet: packets to send, and flow events for the
/// sessions of these nodes.
#[derive(Default)]
pub struct Answer {
    pub packets: Vec<(u32, Vec<u8>)>,
    pub events: Vec<(u32, FlowEvent)>,
}

#[derive(Default)]
pub struct HostStack {
    t0: Option<Instant>,
    next_seq: u16,
    sent: HashMap<ProbeKey, Instant>,
    answers: HashMap<ProbeKey, PingReply>,
    /// Streams by their source port (unique in a simulation).
    streams: HashMap<u16, Stream>,
    next_bulk: u16,
    /// Nodes whose host stack takes flows.
    listening: HashMap<u32, u16>,
    /// Lossless flows' senders by their source port, and receivers.
    lossless_out: HashMap<u16, LosslessOut>,
    lossless_in: HashMap<LosslessKey, LosslessIn>,
}

impl HostStack {
    pub fn start_clock(&mut self, t0: Instant) {
        self.t0 = Some(t0);
    }

    fn unix_ns(&self, now: Instant) -> u64 {
        EPOCH_NS + self.t0.map_or(0, |t0| (now - t0).as_nanos() as u64)
    }

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

    /// Starts a bulk transfer without end: the first packets to send.
    pub fn start_bulk(&mut self, src: u32, dst: u32, window: u32) -> (BulkId, Vec<Vec<u8>>) {
        let id = BulkId(self.next_bulk);
        self.next_bulk += 1;
        let sport = 10_000 + id.0;
        let first = self.open(Stream::new(
            src, dst, sport, 5002, None, None, None, 0, window,
        ));
        (id, first)
    }

    pub fn bulk_received(&self, id: BulkId) -> u64 {
        self.streams
            .get(&(10_000 + id.0))
            .map_or(0, |s| s.received_wire)
    }

    /// `node` takes flows on `port`.
    pub fn listen(&mut self, node: u32, port: u16) {
        self.listening.insert(node, port);
    }

    /// Starts a generated flow from `src`: the first packets, and its start for the session.
    pub fn start_flow(
        &mut self,
        now: Instant,
        src: u32,
        order: &proto::FlowOrder,
        window: u32,
    ) -> Answer {
        let sport = 20_000 + (order.id % 40_000) as u16;
        if order.spec.transport == proto::FlowTransport::LosslessUnicast {
            return self.start_lossless(now, src, sport, order);
        }
        let (total, until) = match order.spec.flow_len {
            proto::FlowLen::Bytes(b) => (Some(b), None),
            proto::FlowLen::Duration(s) => (None, Some(now + Duration::from_secs_f64(s))),
        };
        let tos = order.spec.flow_weight.map_or(0, |w| (w << 2) as u8);
        let first = self.open(Stream::new(
            src,
            order.dst,
            sport,
            order.port,
            Some(order.id),
            total,
            until,
            tos,
            window,
        ));
        Answer {
            packets: first.into_iter().map(|p| (src, p)).collect(),
            events: vec![(
                src,
                FlowEvent::Started {
                    id: order.id,
                    local_port: sport,
                    start_ns: self.unix_ns(now),
                },
            )],
        }
    }

    fn open(&mut self, mut s: Stream) -> Vec<Vec<u8>> {
        let first = (0..s.cwnd).filter_map(|_| s.next_packet(None)).collect();
        self.streams.insert(s.sport, s);
        first
    }

    /// `node` received `packet`: what happens in answer.
    pub fn receive(&mut self, now: Instant, node: u32, packet: &[u8]) -> Answer {
        let mut answer = Answer::default();
        let Ok(p) = Ipv4Packet::new_checked(packet) else {
            return answer;
        };
        match p.protocol() {
            ICMP => {
                if let Some(reply) = self.icmp(now, node, &p) {
                    answer.packets.push((node, reply));
                }
            }
            TCP => self.stream_packet(now, node, &p, &mut answer),
            UDP => self.lossless_datagram(now, node, &p, &mut answer),
            _ => {}
        }
        answer
    }

    fn start_lossless(
        &mut self,
        now: Instant,
        src: u32,
        sport: u16,
        order: &proto::FlowOrder,
    ) -> Answer {
        let (config, total) = match agent::lossless::plan(order) {
            Ok(plan) => plan,
            Err(reason) => {
                return Answer {
                    events: vec![(
                        src,
                        FlowEvent::Failed {
                            id: order.id,
                            reason,
                        },
                    )],
                    ..Default::default()
                };
            }
        };
        self.lossless_out.insert(
            sport,
            LosslessOut {
                node: src,
                id: order.id,
                src: crate::overlay(src),
                dst: order.dst_addr,
                dport: order.port,
                total,
                sender: lossless::Sender::new(order.id, total, config, now),
            },
        );
        let mut answer = Answer {
            events: vec![(
                src,
                FlowEvent::Started {
                    id: order.id,
                    local_port: sport,
                    start_ns: self.unix_ns(now),
                },
            )],
            ..Default::default()
        };
        self.pump_sender(now, sport, &mut answer);
        answer
    }

    /// A UDP datagram for `node`: feedback for one of its lossless senders, or data for a
    /// flow it takes.
    fn lossless_datagram(
        &mut self,
        now: Instant,
        node: u32,
        p: &Ipv4Packet<&[u8]>,
        answer: &mut Answer,
    ) {
        let udp = p.payload();
        if udp.len() < 8 {
            return;
        }
        let sport = u16::from_be_bytes([udp[0], udp[1]]);
        let dport = u16::from_be_bytes([udp[2], udp[3]]);
        let datagram = &udp[8..];
        if let Some(out) = self.lossless_out.get_mut(&dport)
            && out.node == node
            && out.dst == p.src_addr()
        {
            out.sender.handle_datagram(now, datagram);
            self.pump_sender(now, dport, answer);
            return;
        }
        if self.listening.get(&node) != Some(&dport) {
            return; // nobody takes flows here
        }
        let Ok(lossless::Packet::Data { header, .. }) = lossless::Packet::decode(datagram) else {
            return;
        };
        let key = (node, p.src_addr(), sport, header.flow);
        let unix = self.unix_ns(now);
        let entry = match self.lossless_in.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let Some(receiver) = lossless::Receiver::for_datagram(datagram) else {
                    return;
                };
                v.insert(LosslessIn {
                    receiver,
                    first_ns: unix,
                    done_at: None,
                })
            }
        };
        entry.receiver.handle_datagram(now, datagram);
        if entry.done_at.is_none() && entry.receiver.is_done() {
            entry.done_at = Some(now);
            let event = agent::lossless::received(&entry.receiver, entry.first_ns, unix);
            answer.events.push((node, event));
        }
        Self::pump_receiver(now, key, entry, dport, answer);
    }

    /// Sends what a lossless sender has due; reports it once it is done.
    fn pump_sender(&mut self, now: Instant, sport: u16, answer: &mut Answer) {
        let unix = self.unix_ns(now);
        let Some(out) = self.lossless_out.get_mut(&sport) else {
            return;
        };
        while let Some(datagram) = out.sender.poll_transmit(now) {
            let packet = packets::udp(out.src, out.dst, (sport, out.dport), &datagram);
            answer.packets.push((out.node, packet));
        }
        if out.sender.is_done() {
            let out = self.lossless_out.remove(&sport).expect("found above");
            answer.events.push((
                out.node,
                agent::lossless::sent(out.id, out.total, &out.sender, unix),
            ));
        }
    }

    /// Sends what a lossless receiver has to say to its sender.
    fn pump_receiver(
        now: Instant,
        (node, peer, peer_port, _): LosslessKey,
        flow: &mut LosslessIn,
        port: u16,
        answer: &mut Answer,
    ) {
        while let Some(feedback) = flow.receiver.poll_transmit(now) {
            let packet = packets::udp(crate::overlay(node), peer, (port, peer_port), &feedback);
            answer.packets.push((node, packet));
        }
    }

    /// When a lossless flow next has something to do (pacing, repairs, feedback).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let senders = self
            .lossless_out
            .values()
            .filter_map(|o| o.sender.poll_timeout());
        let receivers = self
            .lossless_in
            .values()
            .filter(|f| f.done_at.is_none())
            .filter_map(|f| f.receiver.poll_timeout());
        senders.chain(receivers).min()
    }

    /// Time has come for what [`HostStack::poll_timeout`] said.
    pub fn handle_timeout(&mut self, now: Instant) -> Answer {
        let mut answer = Answer::default();
        let due: Vec<u16> = self
            .lossless_out
            .iter()
            .filter(|(_, o)| o.sender.poll_timeout().is_some_and(|t| t <= now))
            .map(|(&sport, _)| sport)
            .collect();
        for sport in due {
            self.pump_sender(now, sport, &mut answer);
        }
        for (&key, flow) in self.lossless_in.iter_mut() {
            if let Some(&port) = self.listening.get(&key.0) {
                Self::pump_receiver(now, key, flow, port, &mut answer);
            }
        }
        self.lossless_in.retain(|_, f| {
            f.done_at
                .is_none_or(|t| now.duration_since(t) < LOSSLESS_LINGER)
        });
        answer
    }

    fn icmp(&mut self, now: Instant, node: u32, p: &Ipv4Packet<&[u8]>) -> Option<Vec<u8>> {
        let icmp = p.payload();
        if icmp.len() < 8 {
            return None;
        }
        let word = |at: usize| u16::from_be_bytes([icmp[at], icmp[at + 1]]);
        match icmp[0] {
            // The kernel answers echo requests.
            8 => Some(packets::echo(
                p.dst_addr(),
                p.src_addr(),
                64,
                0,
                word(4),
                word(6),
            )),
            0 => {
                self.note(now, (node, word(4), word(6)), p.src_addr(), true);
                None
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
                None
            }
            _ => None,
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

    fn stream_packet(
        &mut self,
        now: Instant,
        node: u32,
        p: &Ipv4Packet<&[u8]>,
        answer: &mut Answer,
    ) {
        let u = p.payload();
        const AT: usize = packets::TCP_HEADER;
        if u.len() < AT + HEADER {
            return;
        }
        let h = &u[AT..AT + HEADER];
        let (kind, last) = (h[0], h[1] == 1);
        let data = u64::from(u32::from_be_bytes([h[2], h[3], h[4], h[5]]));
        let sport = u16::from_be_bytes([h[6], h[7]]);
        let unix = self.unix_ns(now);
        let Some(s) = self.streams.get_mut(&sport) else {
            return;
        };
        match kind {
            KIND_DATA if node == s.dst_node => {
                if s.flow.is_some() && self.listening.get(&node) != Some(&s.dport) {
                    return; // nobody takes flows here
                }
                s.first_at.get_or_insert(now);
                s.received += data;
                s.received_wire += (p.header().len() + p.payload().len()) as u64;
                answer.packets.push((node, s.ack()));
                if last && let Some(id) = s.flow {
                    let first = s.first_at.unwrap_or(now);
                    answer.events.push((
                        node,
                        FlowEvent::Received {
                            id,
                            bytes: s.received,
                            first_ns: unix - (now - first).as_nanos() as u64,
                            last_ns: unix,
                        },
                    ));
                }
            }
            KIND_ACK if node == s.src_node => {
                s.in_flight = s.in_flight.saturating_sub(1);
                s.acked += 1;
                // The window moves, and grows until it is full.
                let mut sends = 1;
                if s.cwnd < s.window {
                    s.cwnd += 1;
                    sends = 2;
                }
                for _ in 0..sends {
                    if let Some(packet) = s.next_packet(Some(now)) {
                        answer.packets.push((node, packet));
                    }
                }
                if s.done_sending
                    && s.in_flight == 0
                    && let Some(id) = s.flow
                {
                    answer.events.push((
                        node,
                        FlowEvent::Sent {
                            id,
                            bytes: s.sent,
                            end_ns: unix,
                            tcp: proto::TcpStats::default(),
                        },
                    ));
                    s.flow = None; // reported once
                }
            }
            _ => {}
        }
    }
}

impl Stream {
    #[allow(clippy::too_many_arguments)]
    fn new(
        src_node: u32,
        dst_node: u32,
        sport: u16,
        dport: u16,
        flow: Option<u64>,
        total: Option<u64>,
        until: Option<Instant>,
        tos: u8,
        window: u32,
    ) -> Stream {
        Stream {
            src_node,
            dst_node,
            src: crate::overlay(src_node),
            dst: crate::overlay(dst_node),
            sport,
            dport,
            flow,
            total,
            until,
            tos,
            window,
            cwnd: 10.min(window),
            in_flight: 0,
            sent: 0,
            acked: 0,
            done_sending: false,
            received: 0,
            received_wire: 0,
            first_at: None,
        }
    }

    /// The next data packet, unless the stream has sent everything (or its time is up).
    fn next_packet(&mut self, now: Option<Instant>) -> Option<Vec<u8>> {
        if self.done_sending || self.in_flight >= self.cwnd {
            return None;
        }
        let expired = matches!((self.until, now), (Some(until), Some(now)) if now >= until);
        let data = match self.total {
            Some(total) => (total - self.sent).min(DATA),
            None => DATA,
        };
        let last = expired || self.total.is_some_and(|t| self.sent + data >= t);
        let data = if expired { 0 } else { data };
        let first = self.sent == 0 && self.in_flight == 0;
        self.sent += data;
        self.in_flight += 1;
        if last {
            self.done_sending = true;
        }
        // The first segment opens the connection and the last closes it, as SYN and FIN do,
        // so that the dataplane's monitor sees it start and finish.
        let flags = match (first, last) {
            (_, true) => packets::FIN | packets::ACK,
            (true, false) => packets::SYN,
            _ => packets::ACK,
        };
        let mut header = [0u8; HEADER];
        header[0] = KIND_DATA;
        header[1] = u8::from(last);
        header[2..6].copy_from_slice(&(data as u32).to_be_bytes());
        header[6..8].copy_from_slice(&self.sport.to_be_bytes());
        let size = 20 + packets::TCP_HEADER + HEADER + data as usize;
        Some(packets::tcp_with(
            self.src,
            self.dst,
            (self.sport, self.dport),
            self.tos,
            flags,
            &header,
            size,
        ))
    }

    fn ack(&self) -> Vec<u8> {
        let mut header = [0u8; HEADER];
        header[0] = KIND_ACK;
        header[6..8].copy_from_slice(&self.sport.to_be_bytes());
        packets::tcp_with(
            self.dst,
            self.src,
            (self.dport, self.sport),
            self.tos,
            packets::ACK,
            &header,
            ACK,
        )
    }
}
