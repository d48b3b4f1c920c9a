//! Lossless transfer over datagrams (`transport = "lossless_unicast"`): a sans-IO sender and
//! receiver, driven by whoever owns the socket and the clock (the agent in a node's namespace,
//! or a test in virtual time).
//!
//! The object is cut into blocks of `k` symbols of `symbol_size` bytes. Without forward error
//! correction a block is one chunk (`k = 1`), and a lost chunk is sent again. With it
//! ([`Fec`]), a block is `k` source symbols and RaptorQ (RFC 6330, the `raptorq` crate) makes
//! as many repair symbols as wanted: the sender adds a few to every block, as many as the loss
//! it has seen lately calls for, and the receiver decodes a block from any `k` (or slightly more) of
//! its symbols, so a loss is repaired without a round trip most of the time. The receiver says
//! what it has (every few packets and every few milliseconds); the sender repairs a block it
//! has not heard complete for a while (more repair symbols, or the chunk again) until every
//! block is.
//!
//! There is no congestion control: the sender paces at the flow's rate. The bytes are a
//! pattern known to both sides ([`payload`]), so the receiver checks every block it decodes.

mod wire;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub use wire::{DATA_OVERHEAD, Feedback, Header, Packet};

/// Forward error correction: `symbols_per_block` source symbols per block (the seeds'
/// `fec_default_symbols_per_block`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fec {
    pub symbols_per_block: u16,
}

/// How a flow is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Bytes of the object in each datagram (the seeds' `default_chunk_size`; with FEC, the
    /// symbol size).
    pub chunk_size: u16,
    pub fec: Option<Fec>,
    /// Pacing: the sender sends this many bytes of datagrams per second.
    pub bytes_per_sec: u64,
}

/// Symbols over which the sender averages the loss it sees: recent enough that a burst (a
/// link down for a while) stops weighing on every later block's repair symbols once it is
/// over, long enough to measure a steady loss rate within a few percent.
const LOSS_MEMORY: f64 = 256.0;

/// What the largest symbol and block may be (RaptorQ's limits are far above).
pub const MAX_CHUNK: u16 = 16_384;
pub const MAX_SYMBOLS_PER_BLOCK: u16 = 1_024;

impl Config {
    pub fn check(&self) -> Result<(), String> {
        if !(64..=MAX_CHUNK).contains(&self.chunk_size) {
            return Err(format!(
                "default_chunk_size = {}: use 64 to {MAX_CHUNK} bytes",
                self.chunk_size
            ));
        }
        if let Some(f) = self.fec
            && !(1..=MAX_SYMBOLS_PER_BLOCK).contains(&f.symbols_per_block)
        {
            return Err(format!(
                "fec_default_symbols_per_block = {}: use 1 to {MAX_SYMBOLS_PER_BLOCK}",
                f.symbols_per_block
            ));
        }
        if self.bytes_per_sec == 0 {
            return Err("a lossless flow sends at its rate: give it one".into());
        }
        Ok(())
    }
}

/// The object's bytes at `offset..offset + len`: a pattern of the flow id and the offset, so
/// that the receiver can check what it decodes without the sender storing anything.
pub fn payload(flow: u64, offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| {
            let x = (offset + i) ^ flow.rotate_left(17);
            let x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            (x >> 56) as u8
        })
        .collect()
}

/// A block's place in the object.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    total: u64,
    symbol_size: u16,
    /// Source symbols per block (1 without FEC).
    k: u16,
}

impl Geometry {
    fn block_bytes(&self) -> u64 {
        u64::from(self.symbol_size) * u64::from(self.k)
    }
    fn blocks(&self) -> u32 {
        self.total.div_ceil(self.block_bytes()) as u32
    }
    /// Offset and length of block `b`.
    fn block(&self, b: u32) -> (u64, usize) {
        let start = u64::from(b) * self.block_bytes();
        (start, (self.total - start).min(self.block_bytes()) as usize)
    }
    /// Source symbols block `b` has (the last may have fewer).
    fn symbols(&self, b: u32) -> u16 {
        self.block(b).1.div_ceil(usize::from(self.symbol_size)) as u16
    }
    fn fec(&self) -> bool {
        self.k > 1
    }
    fn oti(&self, b: u32) -> raptorq::ObjectTransmissionInformation {
        raptorq::ObjectTransmissionInformation::new(
            self.block(b).1 as u64,
            self.symbol_size,
            1,
            1,
            1,
        )
    }
}

#[derive(Debug, Clone, Default)]
struct SentBlock {
    done: bool,
    /// Symbols the receiver last said it had, and whether it said.
    have: u16,
    heard: bool,
    /// Symbols sent.
    sent: u32,
    /// The next repair symbol's id (FEC).
    next_repair: u32,
    last_sent: Option<Instant>,
    last_repair: Option<Instant>,
}

/// What a sender has done, for the flow's report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderStats {
    pub datagrams: u64,
    pub bytes: u64,
    /// Datagrams sent to repair: chunks again, or repair symbols beyond the first ones.
    pub repairs: u64,
    pub srtt: Option<Duration>,
}

pub struct Sender {
    flow: u64,
    geometry: Geometry,
    bytes_per_sec: u64,
    start: Instant,
    blocks: Vec<SentBlock>,
    /// The next block to send the first time.
    next_block: u32,
    /// Every block below this one is done.
    first_open: u32,
    /// What the latest feedback covers (blocks below are decoded or said missing), and the
    /// highest block the receiver has had a symbol of; None before any feedback.
    covered_until: u32,
    highest_heard: Option<u32>,
    /// Symbols waiting to go: (block, encoding symbol id).
    queue: VecDeque<(u32, u32)>,
    /// The current block's RaptorQ encoder.
    encoder: Option<(u32, raptorq::SourceBlockEncoder)>,
    next_send: Instant,
    /// Loss seen in feedback: symbols the receiver counted against those sent, averaged over
    /// about the last [`LOSS_MEMORY`] symbols.
    loss: f64,
    /// The latest feedback's counts (symbols received, symbols sent as far as seen): the loss
    /// of the next feedback is counted from here.
    last_counts: (u64, u64),
    srtt: Option<Duration>,
    done_blocks: u32,
    stats: SenderStats,
}

/// How far behind its pace a sender may catch up at once: a few timer ticks (50 KB at
/// 100 Mbit/s, well within a link's queue).
const CATCH_UP: Duration = Duration::from_millis(4);

/// How long a block may go without word of it before it is repaired: a few round trips.
fn repair_wait(srtt: Option<Duration>) -> Duration {
    srtt.map_or(Duration::from_millis(200), |s| {
        (s * 3).max(Duration::from_millis(10))
    })
}

impl Sender {
    pub fn new(flow: u64, total: u64, config: Config, now: Instant) -> Sender {
        let geometry = Geometry {
            total: total.max(1),
            symbol_size: config.chunk_size,
            k: config.fec.map_or(1, |f| f.symbols_per_block.max(1)),
        };
        Sender {
            flow,
            geometry,
            bytes_per_sec: config.bytes_per_sec.max(1),
            start: now,
            blocks: vec![SentBlock::default(); geometry.blocks() as usize],
            next_block: 0,
            first_open: 0,
            covered_until: 0,
            highest_heard: None,
            queue: VecDeque::new(),
            encoder: None,
            next_send: now,
            loss: 0.0,
            last_counts: (0, 0),
            srtt: None,
            done_blocks: 0,
            stats: SenderStats::default(),
        }
    }

    pub fn is_done(&self) -> bool {
        self.done_blocks as usize == self.blocks.len()
    }

    pub fn stats(&self) -> SenderStats {
        SenderStats {
            srtt: self.srtt,
            ..self.stats
        }
    }

    /// Repair symbols a block gets from the start: as many as the loss seen calls for, and
    /// one more.
    fn first_repairs(&self, k: u16) -> u32 {
        if !self.geometry.fec() {
            return 0;
        }
        let p = self.loss.min(0.5);
        (f64::from(k) * p / (1.0 - p)).ceil() as u32 + 1
    }

    /// The next datagram to send, if its time has come.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        if now < self.next_send || self.is_done() {
            return None;
        }
        if self.queue.is_empty() {
            self.schedule_repairs(now);
        }
        if self.queue.is_empty() && self.next_block < self.geometry.blocks() {
            let b = self.next_block;
            self.next_block += 1;
            let k = self.geometry.symbols(b);
            let total = u32::from(k) + self.first_repairs(k);
            self.queue.extend((0..total).map(|esi| (b, esi)));
            self.blocks[b as usize].next_repair = total.saturating_sub(u32::from(k));
        }
        let (b, esi) = loop {
            let (b, esi) = self.queue.pop_front()?;
            if !self.blocks[b as usize].done {
                break (b, esi);
            }
        };
        let data = self.symbol(b, esi);
        self.blocks[b as usize].last_sent = Some(now);
        self.blocks[b as usize].sent += 1;
        let packet = Packet::Data {
            header: Header {
                flow: self.flow,
                total: self.geometry.total,
                symbol_size: self.geometry.symbol_size,
                k: self.geometry.k,
                sent_ns: now.duration_since(self.start).as_nanos() as u64,
                seq: self.stats.datagrams,
            },
            block: b,
            esi,
            data: &data,
        }
        .encode();
        let gap = Duration::from_nanos(
            (packet.len() as u64 + wire::UDP_IP_HEADERS) * 1_000_000_000 / self.bytes_per_sec,
        );
        // A sender woken late (timers tick by the millisecond) catches up by up to
        // `CATCH_UP` in a burst; beyond that, the time is lost rather than sent all at once.
        self.next_send = self.next_send.max(now - CATCH_UP) + gap;
        self.stats.datagrams += 1;
        self.stats.bytes += packet.len() as u64;
        Some(packet)
    }

    /// Symbol `esi` of block `b`: a source symbol (or the chunk), or a repair symbol.
    fn symbol(&mut self, b: u32, esi: u32) -> Vec<u8> {
        let g = self.geometry;
        let (offset, len) = g.block(b);
        let size = usize::from(g.symbol_size);
        if !g.fec() {
            return payload(self.flow, offset, len);
        }
        let k = u32::from(g.symbols(b));
        if esi < k {
            // Source symbols are whole: the block's last is padded with zeros, as RaptorQ
            // pads it.
            let start = esi as usize * size;
            let mut symbol = payload(self.flow, offset + start as u64, size.min(len - start));
            symbol.resize(size, 0);
            return symbol;
        }
        if self.encoder.as_ref().is_none_or(|(eb, _)| *eb != b) {
            let mut data = payload(self.flow, offset, len);
            data.resize(k as usize * size, 0);
            self.encoder = Some((b, raptorq::SourceBlockEncoder::new(0, &g.oti(b), &data)));
        }
        let (_, encoder) = self.encoder.as_ref().expect("made above");
        let repair = encoder.repair_packets(esi - k, 1);
        repair
            .into_iter()
            .next()
            .map(|p| p.split().1)
            .unwrap_or_default()
    }

    /// When block `b` is due for repair (None: it is done). What the receiver says it misses,
    /// and what it has not seen the end of, a few round trips after it was last sent; a block
    /// between what its word covers and the highest it has seen is most likely there and
    /// waits for the word, but not for ever (the word may be lost).
    fn repair_due(&self, b: u32, wait: Duration) -> Option<Instant> {
        let block = &self.blocks[b as usize];
        if block.done {
            return None;
        }
        let last = block.last_sent.max(block.last_repair)?;
        let unknown = b >= self.covered_until && self.highest_heard.is_some_and(|h| b <= h);
        Some(last + if unknown { wait * 4 } else { wait })
    }

    /// Queues repairs for blocks the receiver has not completed in a while.
    fn schedule_repairs(&mut self, now: Instant) {
        let wait = repair_wait(self.srtt);
        let extra = |have: u16, k: u16, loss: f64| -> u32 {
            let missing = u32::from(k.saturating_sub(have));
            let p = loss.min(0.5);
            missing + (f64::from(missing) * p / (1.0 - p)).ceil() as u32 + 1
        };
        let mut queued = 0;
        for b in self.first_open..self.next_block {
            let Some(due) = self.repair_due(b, wait) else {
                continue;
            };
            let never_repaired = self.blocks[b as usize].last_repair.is_none();
            if due > now {
                // Blocks go out in order: past the first sent too recently (and never
                // repaired), every later one was too.
                if never_repaired {
                    break;
                }
                continue;
            }
            let k = self.geometry.symbols(b);
            let fec = self.geometry.fec();
            let loss = self.loss;
            let block = &mut self.blocks[b as usize];
            block.last_repair = Some(now);
            if fec {
                // Unheard of: what was sent, less what the loss seen so far took.
                let have = if block.heard {
                    block.have
                } else {
                    (f64::from(block.sent) * (1.0 - loss))
                        .floor()
                        .min(f64::from(k)) as u16
                };
                let n = extra(have, k, loss);
                let first = u32::from(k) + block.next_repair;
                block.next_repair += n;
                self.queue.extend((first..first + n).map(|esi| (b, esi)));
                self.stats.repairs += u64::from(n);
                queued += n;
            } else {
                self.queue.push_back((b, 0));
                self.stats.repairs += 1;
                queued += 1;
            }
            // A burst of repairs at most a round trip's worth at a time.
            if queued >= 256 {
                break;
            }
        }
    }

    /// The receiver's word.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) {
        let Ok(Packet::Feedback(f)) = Packet::decode(datagram) else {
            return;
        };
        if f.flow != self.flow {
            return;
        }
        let echoed = self.start + Duration::from_nanos(f.echo_ns);
        if echoed <= now {
            let rtt = now - echoed;
            self.srtt = Some(self.srtt.map_or(rtt, |s| (s * 7 + rtt) / 8));
        }
        if f.symbols_sent_seen > self.last_counts.1 && self.stats.datagrams > 0 {
            let sent = (f.symbols_sent_seen - self.last_counts.1) as f64;
            let received = f.symbols_received.saturating_sub(self.last_counts.0) as f64;
            let since = (1.0 - received / sent).clamp(0.0, 1.0);
            let weight = (sent / LOSS_MEMORY).min(1.0);
            self.loss = (self.loss + (since - self.loss) * weight).clamp(0.0, 0.9);
            self.last_counts = (f.symbols_received, f.symbols_sent_seen);
        }
        let complete_below = f.complete_below.min(self.next_block);
        while self.first_open < complete_below {
            self.complete(self.first_open);
            self.first_open += 1;
        }
        for (i, byte) in f.decoded.iter().enumerate() {
            for bit in 0..8 {
                let b = complete_below as usize + i * 8 + bit;
                if byte & (1 << bit) != 0 && b < self.next_block as usize {
                    self.complete(b as u32);
                }
            }
        }
        for &(b, have) in &f.partial {
            if let Some(block) = self.blocks.get_mut(b as usize) {
                block.have = block.have.max(have);
                block.heard = true;
            }
        }
        self.covered_until = complete_below + 8 * f.decoded.len() as u32;
        self.highest_heard = Some(self.highest_heard.map_or(f.highest, |h| h.max(f.highest)));
        while (self.first_open as usize) < self.blocks.len()
            && self.blocks[self.first_open as usize].done
        {
            self.first_open += 1;
        }
    }

    fn complete(&mut self, b: u32) {
        let block = &mut self.blocks[b as usize];
        if !block.done {
            block.done = true;
            self.done_blocks += 1;
        }
    }

    /// When to call [`Self::poll_transmit`] next: the pacing gap, or when a repair is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_done() {
            return None;
        }
        if !self.queue.is_empty() || self.next_block < self.geometry.blocks() {
            return Some(self.next_send);
        }
        // The blocks `schedule_repairs` looks at, as it looks at them: up to the first never
        // repaired (those after it were sent later still).
        let wait = repair_wait(self.srtt);
        let mut due: Option<Instant> = None;
        for b in self.first_open..self.next_block {
            let Some(at) = self.repair_due(b, wait) else {
                continue;
            };
            due = Some(due.map_or(at, |d| d.min(at)));
            if self.blocks[b as usize].last_repair.is_none() {
                break;
            }
        }
        Some(due.unwrap_or(self.next_send).max(self.next_send))
    }
}

struct ReceivedBlock {
    done: bool,
    /// Distinct symbols received.
    have: u16,
    seen: Vec<u64>,
    decoder: Option<raptorq::SourceBlockDecoder>,
}

/// What a receiver has, for the flow's report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    /// Bytes decoded and found as the sender made them.
    pub bytes: u64,
    /// Blocks decoded wrong (never, unless something corrupts datagrams).
    pub corrupt_blocks: u32,
    pub datagrams: u64,
}

pub struct Receiver {
    flow: u64,
    geometry: Geometry,
    blocks: Vec<ReceivedBlock>,
    complete_below: u32,
    highest: u32,
    done_blocks: u32,
    symbols_received: u64,
    /// One past the highest datagram number seen: what the sender has sent, as far as we know.
    seq_seen: u64,
    /// The sender's timestamp of the latest datagram, echoed for its round-trip time.
    echo_ns: u64,
    since_feedback: u32,
    next_feedback: Option<Instant>,
    stats: ReceiverStats,
}

/// Feedback after this many datagrams, or this long after the first unanswered one.
const FEEDBACK_EVERY: u32 = 16;
const FEEDBACK_AFTER: Duration = Duration::from_millis(5);
/// Blocks one feedback covers past the first one missing (a bit each: 512 bytes), and partly
/// received blocks it lists at most (FEC): a feedback fits one 1,500-byte packet.
const FEEDBACK_BITS: usize = 4096;
const FEEDBACK_PARTIAL: usize = 128;

impl Receiver {
    /// A receiver for the flow whose first datagram this is; None when it is not a data
    /// datagram or its geometry is not one a sender makes.
    pub fn for_datagram(datagram: &[u8]) -> Option<Receiver> {
        let Ok(Packet::Data { header, .. }) = Packet::decode(datagram) else {
            return None;
        };
        let geometry = Geometry {
            total: header.total,
            symbol_size: header.symbol_size,
            k: header.k,
        };
        if !(64..=MAX_CHUNK).contains(&header.symbol_size)
            || !(1..=MAX_SYMBOLS_PER_BLOCK).contains(&header.k)
            || header.total == 0
            || header.total > 1 << 40
        {
            return None;
        }
        let blocks = (0..geometry.blocks())
            .map(|_| ReceivedBlock {
                done: false,
                have: 0,
                seen: Vec::new(),
                decoder: None,
            })
            .collect();
        Some(Receiver {
            flow: header.flow,
            geometry,
            blocks,
            complete_below: 0,
            highest: 0,
            done_blocks: 0,
            symbols_received: 0,
            seq_seen: 0,
            echo_ns: 0,
            since_feedback: 0,
            next_feedback: None,
            stats: ReceiverStats::default(),
        })
    }

    pub fn flow(&self) -> u64 {
        self.flow
    }

    pub fn total(&self) -> u64 {
        self.geometry.total
    }

    pub fn is_done(&self) -> bool {
        self.done_blocks as usize == self.blocks.len()
    }

    pub fn stats(&self) -> ReceiverStats {
        self.stats
    }

    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) {
        let Ok(Packet::Data {
            header,
            block,
            esi,
            data,
        }) = Packet::decode(datagram)
        else {
            return;
        };
        if header.flow != self.flow || block as usize >= self.blocks.len() {
            return;
        }
        self.stats.datagrams += 1;
        self.symbols_received += 1;
        self.seq_seen = self.seq_seen.max(header.seq + 1);
        self.echo_ns = self.echo_ns.max(header.sent_ns);
        self.highest = self.highest.max(block);
        self.since_feedback += 1;
        self.next_feedback.get_or_insert(now + FEEDBACK_AFTER);
        // After the last block, every datagram is answered: the sender may have missed it.
        if self.is_done() {
            self.next_feedback = Some(now);
            return;
        }
        let g = self.geometry;
        let b = &mut self.blocks[block as usize];
        let word = esi as usize / 64;
        if b.done || esi > 1 << 20 {
            return;
        }
        if b.seen.len() <= word {
            b.seen.resize(word + 1, 0);
        }
        if b.seen[word] & (1 << (esi % 64)) != 0 {
            return;
        }
        b.seen[word] |= 1 << (esi % 64);
        b.have = b.have.saturating_add(1);
        let (offset, len) = g.block(block);
        let decoded = if !g.fec() {
            Some(data.to_vec())
        } else {
            let decoder = b.decoder.get_or_insert_with(|| {
                raptorq::SourceBlockDecoder::new(0, &g.oti(block), len as u64)
            });
            // RaptorQ decodes once it holds about k symbols; before, it keeps them.
            decoder.decode([raptorq::EncodingPacket::new(
                raptorq::PayloadId::new(0, esi),
                data.to_vec(),
            )])
        };
        if let Some(bytes) = decoded {
            let b = &mut self.blocks[block as usize];
            b.done = true;
            b.decoder = None;
            b.seen = Vec::new();
            self.done_blocks += 1;
            if bytes.len() >= len && bytes[..len] == payload(self.flow, offset, len)[..] {
                self.stats.bytes += len as u64;
            } else {
                self.stats.corrupt_blocks += 1;
            }
            while (self.complete_below as usize) < self.blocks.len()
                && self.blocks[self.complete_below as usize].done
            {
                self.complete_below += 1;
            }
            if self.is_done() {
                self.next_feedback = Some(now);
            }
        }
        if self.since_feedback >= FEEDBACK_EVERY {
            self.next_feedback = Some(now);
        }
    }

    /// Feedback for the sender, when it is due.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        let due = self.next_feedback?;
        if now < due {
            return None;
        }
        self.next_feedback = None;
        self.since_feedback = 0;
        let start = self.complete_below as usize;
        let end = (self.highest as usize + 1)
            .min(self.blocks.len())
            .min(start + FEEDBACK_BITS);
        let mut decoded = vec![0u8; end.saturating_sub(start).div_ceil(8)];
        let mut partial = Vec::new();
        for b in start..end {
            if self.blocks[b].done {
                decoded[(b - start) / 8] |= 1 << ((b - start) % 8);
            } else if self.geometry.fec() && partial.len() < FEEDBACK_PARTIAL {
                partial.push((b as u32, self.blocks[b].have));
            }
        }
        Some(
            Packet::Feedback(Feedback {
                flow: self.flow,
                echo_ns: self.echo_ns,
                complete_below: self.complete_below,
                highest: self.highest,
                symbols_received: self.symbols_received,
                symbols_sent_seen: self.seq_seen,
                decoded,
                partial,
            })
            .encode(),
        )
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_feedback
    }
}

/// RaptorQ's speed here: `blocks` blocks of `k` symbols of `symbol_size` bytes encoded with
/// `repair` repair symbols each, then decoded from the source symbols minus `repair` of them
/// plus every repair symbol (the work of a block that lost as many as it got in repair).
/// Returns (seconds encoding, seconds decoding, bytes of source data), for the caller's table.
pub fn fec_rate(k: u16, symbol_size: u16, repair: u32, blocks: u32) -> (f64, f64, u64) {
    let g = Geometry {
        total: u64::from(k) * u64::from(symbol_size),
        symbol_size,
        k,
    };
    let data = payload(1, 0, g.total as usize);
    let mut encoded = Vec::with_capacity(blocks as usize);
    let start = Instant::now();
    for _ in 0..blocks {
        let encoder = raptorq::SourceBlockEncoder::new(0, &g.oti(0), &data);
        let mut packets = encoder.source_packets();
        packets.drain(..(repair as usize).min(packets.len()));
        packets.extend(encoder.repair_packets(0, repair));
        encoded.push(packets);
    }
    let encoding = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for packets in encoded {
        let mut decoder = raptorq::SourceBlockDecoder::new(0, &g.oti(0), g.total);
        let decoded = decoder.decode(packets);
        assert_eq!(
            decoded.as_deref(),
            Some(&data[..]),
            "RaptorQ decoded a block wrong"
        );
    }
    let decoding = start.elapsed().as_secs_f64();
    (encoding, decoding, g.total * u64::from(blocks))
}

#[cfg(test)]
mod tests;
