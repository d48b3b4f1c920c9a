//! nextmini's dataplane: what carries an emulated node's packets.
//!
//! Packets an application sends to an overlay address come out of the node's TUN device
//! ([`tun`]), are routed hop by hop in user space by the pure forwarding decision
//! ([`forward::Forwarder`]), wait in each outgoing link direction's emulator ([`emulator`],
//! a [`linkem::Link`] woken on time by the [`pacer::Pacer`]), cross the link
//! ([`transport`]: an in-process channel or a TCP connection), and at the destination go up
//! its TUN device. [`packet`] holds the header views, [`frame`] the TUN frames with their
//! offload header, [`sockets`] makes sockets and TUN devices inside node namespaces.
//!
//! [`Dataplane`] is one node's: its TUN device, forwarding state and links.

pub mod emulator;
pub mod forward;
pub mod frame;
pub mod kernel;
pub mod monitor;
pub mod pacer;
pub mod packet;
pub mod sockets;
pub mod transport;
pub mod tun;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, RwLock};

use proto::monitor::{AppFlowEvent, FlowBytes};
use proto::{LinkChange, LinkParams};
use tokio::sync::mpsc;
use topology::routing::RouteTable;

use crate::forward::{Forwarder, Hop};
use crate::frame::Frame;
use crate::pacer::Pacer;
use crate::transport::LinkIo;
use crate::tun::{READ_BUFFER, TunWriter};

/// Packets queued between the forwarder and a link's emulator; the emulator's own queue limit
/// is what a user configures.
const EGRESS_CHANNEL: usize = 4096;
/// Frames a link's inbound side takes from its channel at once.
const INBOUND_BATCH: usize = 64;

/// Aborts a task when dropped: a node's tasks end with the node (they hold its TUN device,
/// which keeps its namespace alive).
pub struct AbortOnDrop(pub tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl forward::IpBuffer for Frame {
    fn ip(&self) -> &[u8] {
        Frame::ip(self)
    }
    fn ip_mut(&mut self) -> &mut [u8] {
        Frame::ip_mut(self)
    }
    fn from_ip(ip: &[u8]) -> Self {
        Frame::from_ip(ip)
    }
    fn duplicate(&self) -> Self {
        self.clone()
    }
}

/// A link direction's counters and per-flow bytes, shared by its emulator and the reports.
pub(crate) struct LinkMeter {
    pub counters: proto::LinkCounters,
    pub flows: monitor::FlowMeter,
}

/// Now, as Unix time in nanoseconds.
pub fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A node's TUN device, closed off the caller's thread.
///
/// Closing a TUN device's last descriptor unregisters the device, and the kernel then waits
/// for RCU callbacks (outside its rtnl lock): about 15 ms apiece, one after another when
/// thousands of nodes end on the runtime's few workers. Closed on the blocking pool instead,
/// many wait at once (300 devices: 4.9 s one by one, 0.7 s on 16 threads).
///
/// When its run is kept for the next (`down --keep`), the device is made persistent instead:
/// closing it then unregisters nothing, and the next run's node takes it over.
struct Tun {
    device: Option<tun_rs::AsyncDevice>,
    keep: Arc<std::sync::atomic::AtomicBool>,
}

impl std::ops::Deref for Tun {
    type Target = tun_rs::AsyncDevice;

    fn deref(&self) -> &Self::Target {
        self.device.as_ref().expect("present until dropped")
    }
}

impl Drop for Tun {
    fn drop(&mut self) {
        let Some(device) = self.device.take() else {
            return;
        };
        if self.keep.load(std::sync::atomic::Ordering::Relaxed) {
            match device.persist() {
                Ok(()) => return drop(device),
                Err(e) => tracing::warn!("could not keep a TUN device: {e}"),
            }
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || drop(device));
            }
            Err(_) => drop(device),
        }
    }
}

/// How packets leave for one neighbour.
enum Egress {
    /// Into the link's emulator.
    Emulator(mpsc::Sender<Frame>),
    /// A kernel link (max mode): handed to the node's kernel, which forwards it over the veth.
    Kernel,
}

/// One node's dataplane: its TUN device, its forwarding state, and an emulator per link.
pub struct Dataplane {
    tun: Tun,
    forwarder: RwLock<Forwarder>,
    /// Where packets for each neighbour go: its link's emulator, or the node's kernel.
    egress: RwLock<HashMap<u32, Egress>>,
    /// Parameter changes for each link's emulator. Boxed: a channel allocates room for 32
    /// messages up front, and a change is 160 bytes (two links a node, thousands of nodes).
    emulators: RwLock<HashMap<u32, mpsc::UnboundedSender<Box<LinkChange>>>>,
    /// Each link's counters, kept current by its emulator.
    counters: RwLock<HashMap<u32, Arc<Mutex<LinkMeter>>>>,
    /// The applications' connections from this node, seen as they leave its TUN device.
    app_flows: Mutex<monitor::AppFlows>,
    /// Where the memberships the node's kernel reports (IGMP) go: its session.
    memberships: Mutex<Option<mpsc::UnboundedSender<(Ipv4Addr, bool)>>>,
    /// A program sent to a group with a multicast TTL of 1 (said once per node).
    told_ttl: std::sync::atomic::AtomicBool,
    pacer: Pacer,
}

impl Dataplane {
    /// `keep`: when set as the dataplane ends, its TUN device is kept for the next run.
    pub fn new(
        me: u32,
        my_addr: Ipv4Addr,
        prefix_len: u8,
        tun: tun_rs::AsyncDevice,
        pacer: Pacer,
        keep: Arc<std::sync::atomic::AtomicBool>,
    ) -> Arc<Self> {
        Arc::new(Dataplane {
            tun: Tun {
                device: Some(tun),
                keep,
            },
            forwarder: RwLock::new(Forwarder::new(me, my_addr, prefix_len)),
            egress: RwLock::new(HashMap::new()),
            emulators: RwLock::new(HashMap::new()),
            counters: RwLock::new(HashMap::new()),
            app_flows: Mutex::new(monitor::AppFlows::default()),
            memberships: Mutex::new(None),
            told_ttl: std::sync::atomic::AtomicBool::new(false),
            pacer,
        })
    }

    fn me(&self) -> u32 {
        self.forwarder.read().expect("no panics hold it").node()
    }

    pub fn set_routes(&self, routes: Vec<proto::Route>, pinned: Vec<proto::PinnedRoute>) {
        self.forwarder
            .write()
            .expect("no panics hold it")
            .set_table(RouteTable {
                entries: routes,
                pinned,
            });
    }

    /// Sets the multicast groups' entries that changed and forgets those `removed`.
    pub fn set_groups(&self, set: Vec<proto::GroupRoute>, removed: &[Ipv4Addr]) {
        self.forwarder
            .write()
            .expect("no panics hold it")
            .set_groups(set, removed);
    }

    /// Sends the group memberships that programs in the node take up or give up (their
    /// kernel's IGMP reports) to `tx`.
    pub fn report_memberships(&self, tx: mpsc::UnboundedSender<(Ipv4Addr, bool)>) {
        *self.memberships.lock().expect("no panics hold it") = Some(tx);
    }

    /// Starts forwarding: the TUN reader.
    pub fn start(self: &Arc<Self>) -> AbortOnDrop {
        let dp = self.clone();
        let task = tokio::spawn(async move {
            let mut writer = TunWriter::default();
            loop {
                if let Err(e) = dp.tun.readable().await {
                    tracing::warn!("node {}: TUN read failed: {e}", dp.me());
                    return;
                }
                // Read what is there into the worker thread's buffer and keep exact-size
                // copies.
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
                    dp.forward(f, None, &mut writer);
                }
                writer.flush(&dp.tun).await;
                if let Some(e) = failed {
                    tracing::warn!("node {}: TUN read failed: {e}", dp.me());
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
        let (changes_tx, changes_rx) = mpsc::unbounded_channel();
        self.emulators
            .write()
            .expect("no panics hold it")
            .insert(peer, changes_tx);
        self.egress
            .write()
            .expect("no panics hold it")
            .insert(peer, Egress::Emulator(to_emulator));
        let link = linkem::Link::new(params, seed);
        let counters = Arc::new(Mutex::new(LinkMeter {
            counters: proto::LinkCounters {
                peer,
                ..Default::default()
            },
            flows: monitor::FlowMeter::default(),
        }));
        self.counters
            .write()
            .expect("no panics hold it")
            .insert(peer, counters.clone());
        let out = tokio::spawn(emulator::emulate(
            link,
            from_forwarder,
            changes_rx,
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
                    dp.forward(p, Some(peer), &mut writer);
                }
                writer.flush(&dp.tun).await;
            }
        });
        [
            AbortOnDrop(out.abort_handle()),
            AbortOnDrop(inbound.abort_handle()),
        ]
    }

    /// Routes what this node forwards to `peer` through its kernel: the link is a veth pair
    /// the kernel carries (max mode).
    pub fn attach_kernel(&self, peer: u32) {
        self.egress
            .write()
            .expect("no panics hold it")
            .insert(peer, Egress::Kernel);
    }

    /// Changes the link to `peer` from the next packet on; the link's connection stays as it
    /// is.
    pub fn set_link(&self, peer: u32, change: LinkChange) {
        if let Some(tx) = self.emulators.read().expect("no panics hold it").get(&peer) {
            let _ = tx.send(Box::new(change));
        }
    }

    /// Every link's counters, by peer.
    pub fn link_counters(&self) -> Vec<proto::LinkCounters> {
        let mut all: Vec<_> = self
            .counters
            .read()
            .expect("no panics hold it")
            .values()
            .map(|c| c.lock().expect("no panics hold it").counters)
            .collect();
        all.sort_by_key(|c| c.peer);
        all
    }

    /// What each link carried per flow since the last call, and the applications'
    /// connections that opened or closed; `now_ns` is Unix time.
    pub fn take_flows(&self, now_ns: u64) -> (Vec<FlowBytes>, Vec<AppFlowEvent>) {
        let mut flows = Vec::new();
        for c in self.counters.read().expect("no panics hold it").values() {
            let mut meter = c.lock().expect("no panics hold it");
            let peer = meter.counters.peer;
            meter.flows.take(peer, &mut flows);
        }
        let mut apps = Vec::new();
        self.app_flows
            .lock()
            .expect("no panics hold it")
            .take(now_ns, &mut apps);
        (flows, apps)
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

    /// Routes one packet, from the TUN device or from a link; what is for this node's TUN
    /// device is left in `to_tun`.
    pub fn forward(&self, packet: Frame, from: Option<u32>, to_tun: &mut TunWriter) {
        let from_link = from.is_some();
        if !from_link {
            self.app_flows
                .lock()
                .expect("no panics hold it")
                .observe(unix_ns(), packet.ip());
        }
        // Held while the packet is handed on: the forwarder asks whether a link is there, and
        // the same look-up finds it then (no sender cloned per packet).
        let egress = self.egress.read().expect("no panics hold it");
        let hop = self
            .forwarder
            .read()
            .expect("no panics hold it")
            .forward(packet, from, |peer| egress.contains_key(&peer));
        match hop {
            Hop::Tun(p) => {
                if from_link && monitor::AppFlows::closes(p.ip()) {
                    self.app_flows
                        .lock()
                        .expect("no panics hold it")
                        .observe_incoming(unix_ns(), p.ip());
                }
                to_tun.push(p)
            }
            Hop::Link(peer, mut p) => match egress.get(&peer) {
                // A full emulator input is a drop, as a full interface queue is.
                Some(Egress::Emulator(tx)) => {
                    let _ = tx.try_send(p);
                }
                // The kernel routes it on (its routes send this destination over a kernel
                // link) and takes off the hop's TTL itself.
                Some(Egress::Kernel) => {
                    if from_link && let Ok(mut ip) = packet::Ipv4Packet::new_checked(p.ip_mut()) {
                        ip.increment_ttl();
                    }
                    to_tun.push(p);
                }
                None => {}
            },
            Hop::Copies { tun, links } => {
                if let Some(p) = tun {
                    to_tun.push(p);
                }
                // Kernel links (max mode) do not carry groups: the kernel has no multicast
                // routes, and copies for them are dropped.
                for (peer, p) in links {
                    if let Some(Egress::Emulator(tx)) = egress.get(&peer) {
                        let _ = tx.try_send(p);
                    }
                }
            }
            Hop::Drop(forward::DropReason::MulticastTtl)
                if !from_link
                    && !self
                        .told_ttl
                        .swap(true, std::sync::atomic::Ordering::Relaxed) =>
            {
                tracing::warn!(
                    "node {}: a program sends to a group with a multicast TTL of 1, which ends at the first hop: set IP_MULTICAST_TTL above the hop count (iperf -T, socat ip-multicast-ttl)",
                    self.me()
                );
            }
            Hop::Membership(changes) => {
                if let Some(tx) = &*self.memberships.lock().expect("no panics hold it") {
                    for change in changes {
                        let _ = tx.send(change);
                    }
                }
            }
            _ => {}
        }
    }
}
