//! A node's packet forwarding: TUN → route lookup → emulated link → neighbour → … → TUN.
//!
//! Packets an application sends to an overlay address come out of the node's TUN device and
//! are routed hop by hop in user space. Each outgoing link direction runs a [`linkem::Link`]
//! that decides when each packet reaches the far end; the [`Pacer`] wakes it on time. A transit
//! node decrements the TTL and answers an expired one with ICMP time exceeded (so traceroute
//! shows the emulated path); no route gives ICMP host unreachable.

use std::collections::HashMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use proto::{LinkChange, LinkParams};
use tokio::sync::mpsc;
use topology::routing::RouteTable;

use crate::frame::{self, Frame};
use crate::pacer::Pacer;
use crate::wire::{self, IcmpError};

/// Packets queued between the forwarder and a link's emulator; the emulator's own queue limit
/// is what a user configures.
const EGRESS_CHANNEL: usize = 4096;
thread_local! {
    /// Where TUN reads land: a header and up to 64 KB of TCP segment.
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(vec![0u8; frame::HEADER + usize::from(u16::MAX)]);
}

/// Frames a link's inbound side takes from its channel at once.
const INBOUND_BATCH: usize = 64;
/// The time from a link's departure to the packet reaching the next node's forwarder (a
/// cross-thread wake-up and a channel), measured with ping over paths of 6 and 10 link
/// traversals: both land within 0.3 ms of their configured delay.
const HANDOFF: Duration = Duration::from_micros(60);

/// Aborts a task when dropped: a node's tasks end with the node (they hold its TUN device,
/// which keeps its namespace alive).
pub struct AbortOnDrop(pub tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A link's two directions as channels: frames to the peer, frames from it.
pub struct LinkIo {
    pub tx: mpsc::Sender<Frame>,
    pub rx: mpsc::Receiver<Frame>,
}

pub struct Dataplane {
    me: u32,
    my_addr: Ipv4Addr,
    base: u32,
    mask: u32,
    tun: tun_rs::AsyncDevice,
    routes: RwLock<RouteTable>,
    egress: RwLock<HashMap<u32, mpsc::Sender<Frame>>>,
    /// Parameter changes for each link's emulator.
    emulators: RwLock<HashMap<u32, mpsc::UnboundedSender<LinkChange>>>,
    /// Each link's counters, kept current by its emulator.
    counters: RwLock<HashMap<u32, Arc<Mutex<proto::LinkCounters>>>>,
    pacer: Pacer,
}

/// What to do with a packet.
enum Action {
    Tun,
    Link(mpsc::Sender<Frame>),
    /// Send this (an ICMP error) instead, from here.
    Reply(Frame),
    Drop,
}

impl Dataplane {
    pub fn new(
        me: u32,
        my_addr: Ipv4Addr,
        prefix_len: u8,
        tun: tun_rs::AsyncDevice,
        pacer: Pacer,
    ) -> Arc<Self> {
        let mask = if prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - prefix_len)
        };
        Arc::new(Dataplane {
            me,
            my_addr,
            base: u32::from(my_addr).wrapping_sub(me) & mask,
            mask,
            tun,
            routes: RwLock::new(RouteTable::default()),
            egress: RwLock::new(HashMap::new()),
            emulators: RwLock::new(HashMap::new()),
            counters: RwLock::new(HashMap::new()),
            pacer,
        })
    }

    pub fn set_routes(&self, routes: Vec<proto::Route>, pinned: Vec<proto::PinnedRoute>) {
        *self.routes.write().expect("no panics hold it") = RouteTable {
            entries: routes,
            pinned,
        };
    }

    /// Starts forwarding: the TUN reader.
    pub fn start(self: &Arc<Self>) -> AbortOnDrop {
        let dp = self.clone();
        let task = tokio::spawn(async move {
            let mut writer = TunWriter::default();
            loop {
                if let Err(e) = dp.tun.readable().await {
                    tracing::warn!("node {}: TUN read failed: {e}", dp.me);
                    return;
                }
                // Read what is there into the worker thread's buffer (one per thread, not one
                // per node: with offloads a read can be 64 KB) and keep exact-size copies.
                let mut frames = Vec::new();
                let failed = READ_BUFFER.with_borrow_mut(|buf| {
                    loop {
                        match dp.tun.try_recv(buf) {
                            Ok(n) => frames.extend(Frame::from_bytes(buf[..n].to_vec())),
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break None,
                            Err(e) => break Some(e),
                        }
                        if frames.len() >= INBOUND_BATCH {
                            break None;
                        }
                    }
                });
                for f in frames {
                    dp.forward(f, false, &mut writer);
                }
                writer.flush(&dp.tun).await;
                if let Some(e) = failed {
                    tracing::warn!("node {}: TUN read failed: {e}", dp.me);
                    return;
                }
            }
        });
        AbortOnDrop(task.abort_handle())
    }

    /// Carries traffic over a link that came up: an emulator for the way out, a reader for
    /// the way in.
    pub fn attach(
        self: &Arc<Self>,
        peer: u32,
        params: LinkParams,
        io: LinkIo,
        seed: u64,
    ) -> [AbortOnDrop; 2] {
        let (to_emulator, from_forwarder) = mpsc::channel(EGRESS_CHANNEL);
        let (params_tx, params_rx) = mpsc::unbounded_channel();
        self.emulators
            .write()
            .expect("no panics hold it")
            .insert(peer, params_tx);
        self.egress
            .write()
            .expect("no panics hold it")
            .insert(peer, to_emulator);
        let link = linkem::Link::new(params, seed);
        let counters = Arc::new(Mutex::new(proto::LinkCounters {
            peer,
            ..Default::default()
        }));
        self.counters
            .write()
            .expect("no panics hold it")
            .insert(peer, counters.clone());
        let out = tokio::spawn(emulate(
            link,
            from_forwarder,
            params_rx,
            io.tx,
            self.pacer.clone(),
            counters,
        ));
        let dp = self.clone();
        let mut rx = io.rx;
        let inbound = tokio::spawn(async move {
            // What has arrived by the time we look is forwarded together, and what is for this
            // node is written to the TUN device coalesced.
            let mut batch = Vec::with_capacity(INBOUND_BATCH);
            let mut writer = TunWriter::default();
            while rx.recv_many(&mut batch, INBOUND_BATCH).await > 0 {
                for p in batch.drain(..) {
                    dp.forward(p, true, &mut writer);
                }
                writer.flush(&dp.tun).await;
            }
        });
        [
            AbortOnDrop(out.abort_handle()),
            AbortOnDrop(inbound.abort_handle()),
        ]
    }

    /// Changes the link to `peer` from the next packet on; the link's connection stays as it
    /// is.
    pub fn set_link(&self, peer: u32, change: LinkChange) {
        if let Some(tx) = self.emulators.read().expect("no panics hold it").get(&peer) {
            let _ = tx.send(change);
        }
    }

    /// Every link's counters, by peer.
    pub fn link_counters(&self) -> Vec<proto::LinkCounters> {
        let mut all: Vec<_> = self
            .counters
            .read()
            .expect("no panics hold it")
            .values()
            .map(|c| *c.lock().expect("no panics hold it"))
            .collect();
        all.sort_by_key(|c| c.peer);
        all
    }

    pub fn detach(&self, peer: u32) {
        self.emulators
            .write()
            .expect("no panics hold it")
            .remove(&peer);
        self.egress
            .write()
            .expect("no panics hold it")
            .remove(&peer);
    }

    /// The node an overlay address belongs to (0, which is no node, for any other address).
    fn node_of(&self, addr: Ipv4Addr) -> u32 {
        let a = u32::from(addr);
        if a & self.mask == self.base {
            a - self.base
        } else {
            0
        }
    }

    /// The address errors about a node's own packets come from: the overlay's last usable
    /// address (10.0.255.254 in a /16), which no node has unless the overlay is full.
    fn network_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from((self.base | !self.mask).wrapping_sub(1))
    }

    fn decide(&self, frame: &mut Frame, from_link: bool) -> Action {
        let packet = frame.ip_mut();
        let Some(info) = wire::parse(packet) else {
            return Action::Drop; // not IPv4 (the kernel's IPv6 chatter on tun0)
        };
        let dst = u32::from(info.dst);
        if dst & self.mask != self.base {
            return Action::Drop; // outside the overlay: never leaves the emulated network
        }
        let id = dst - self.base;
        if id == self.me {
            return if from_link { Action::Tun } else { Action::Drop };
        }
        if from_link {
            if info.ttl <= 1 {
                return wire::icmp_error(self.my_addr, packet, IcmpError::TimeExceeded)
                    .map_or(Action::Drop, |p| Action::Reply(Frame::from_ip(&p)));
            }
            wire::decrement_ttl(packet);
        }
        let hop = self
            .routes
            .read()
            .expect("no panics hold it")
            .next_hop_from(self.node_of(info.src), id, wire::flow_hash(packet, &info));
        let tx = hop.and_then(|h| {
            self.egress
                .read()
                .expect("no panics hold it")
                .get(&h)
                .cloned()
        });
        // A packet of our own with no way on is answered in the name of the network: the
        // kernel drops errors that carry its own address as their source.
        let from = if from_link {
            self.my_addr
        } else {
            self.network_addr()
        };
        match tx {
            Some(tx) => Action::Link(tx),
            None => wire::icmp_error(from, packet, IcmpError::HostUnreachable)
                .map_or(Action::Drop, |p| Action::Reply(Frame::from_ip(&p))),
        }
    }

    /// Routes one packet, from the TUN device or from a link; what is for this node's TUN
    /// device is left in `to_tun`.
    pub fn forward(&self, mut packet: Frame, mut from_link: bool, to_tun: &mut TunWriter) {
        loop {
            match self.decide(&mut packet, from_link) {
                Action::Tun => to_tun.push(packet),
                // A full emulator input is a drop, as a full interface queue is.
                Action::Link(tx) => {
                    let _ = tx.try_send(packet);
                }
                Action::Reply(icmp) => {
                    // An error about our own packet goes back up our own TUN; any other is
                    // routed from here like a packet of ours (no TTL decrement).
                    if wire::parse(icmp.ip()).is_some_and(|i| i.dst == self.my_addr) {
                        to_tun.push(icmp);
                        return;
                    }
                    packet = icmp;
                    from_link = false;
                    continue;
                }
                Action::Drop => {}
            }
            return;
        }
    }
}

/// Frames on their way into a node's TUN device, written in arrival order. Runs of ordinary
/// packets with complete checksums are coalesced by flow into TSO segments (the kernel's GRO,
/// done before the write), so a paced stream costs the receiving kernel one write per run
/// instead of one per packet; segments and packets that carry a partial checksum are written
/// as they are.
#[derive(Default)]
pub struct TunWriter {
    pending: Vec<Frame>,
    run: Vec<Frame>,
    /// Made on the first run to coalesce: tun-rs sizes its flow tables for a full batch
    /// (about 1 MB), which idle nodes should not carry.
    gro: Option<Box<tun_rs::GROTable>>,
}

impl TunWriter {
    pub fn push(&mut self, frame: Frame) {
        self.pending.push(frame);
    }

    pub async fn flush(&mut self, tun: &tun_rs::AsyncDevice) {
        for f in self.pending.drain(..) {
            if f.coalescable() {
                self.run.push(f);
                continue;
            }
            if !self.run.is_empty() {
                write_run(tun, &mut self.gro, &mut self.run).await;
            }
            // A full TUN queue drops, as a full receive queue does.
            let _ = tun.send(f.as_bytes()).await;
        }
        if !self.run.is_empty() {
            write_run(tun, &mut self.gro, &mut self.run).await;
        }
    }
}

async fn write_run(
    tun: &tun_rs::AsyncDevice,
    gro: &mut Option<Box<tun_rs::GROTable>>,
    run: &mut Vec<Frame>,
) {
    if run.len() == 1 {
        let _ = tun.send(run[0].as_bytes()).await;
    } else {
        let gro = gro.get_or_insert_with(Box::default);
        if let Err(e) = tun.send_multiple(gro, run, frame::HEADER).await {
            tracing::debug!("coalesced TUN write failed: {e}");
        }
    }
    run.clear();
}

/// A pending pacer wake-up.
type Wake = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One link direction: packets in from the forwarder, out to the peer when the emulator says.
async fn emulate(
    mut link: linkem::Link<Frame>,
    mut from_forwarder: mpsc::Receiver<Frame>,
    mut changes: mpsc::UnboundedReceiver<LinkChange>,
    to_peer: mpsc::Sender<Frame>,
    pacer: Pacer,
    counters: Arc<Mutex<proto::LinkCounters>>,
) {
    let peer = counters.lock().expect("no panics hold it").peer;
    // One pending wake-up for the current deadline, kept while the deadline stays: arrivals
    // that don't change it register nothing new with the pacer.
    let mut timer: Option<(Instant, Wake)> = None;
    loop {
        let due = link
            .poll_timeout()
            .map(|d| d.checked_sub(HANDOFF).unwrap_or(d));
        if due != timer.as_ref().map(|(at, _)| *at) {
            timer = due.map(|at| {
                let wake: Pin<Box<dyn Future<Output = ()> + Send>> =
                    Box::pin(pacer.sleep_until(at));
                (at, wake)
            });
        }
        let mut fired = false;
        tokio::select! {
            packet = from_forwarder.recv() => match packet {
                // A link that only delays carries a segment whole; one that shapes or drops
                // sees the packets the wire would carry.
                Some(p) if p.is_segment() && link.params().shapes() => {
                    let now = Instant::now();
                    for p in p.segment() {
                        let _ = link.handle_arrival(now, p);
                    }
                }
                Some(p) => {
                    let _ = link.handle_arrival(Instant::now(), p);
                }
                None => return,
            },
            Some(change) = changes.recv() => link.apply(&change),
            () = async { timer.as_mut().expect("guarded by is_some").1.as_mut().await }, if timer.is_some() => fired = true,
        }
        // A fired wake-up is spent: its future must not be polled again.
        if fired {
            timer = None;
        }
        // Packets due within the runtime's own hand-off latency leave now, so that they reach
        // the peer's TUN on time rather than that much late.
        let clock = Instant::now();
        let now = clock + HANDOFF;
        while let Some(p) = link.poll_departure(now) {
            if to_peer.send(p).await.is_err() {
                return;
            }
        }
        // What `nextmini link show` reports: kept current here, read about once a second.
        let queue_packets = link.queue_depth(clock) as u64;
        *counters.lock().expect("no panics hold it") = proto::LinkCounters {
            peer,
            counters: link.counters(),
            queue_packets,
        };
    }
}
