//! One link direction's emulator as a task: packets in from the forwarder, out to the peer
//! when the [`linkem::Link`] says, woken on time by the [`Pacer`].

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::LinkChange;
use tokio::sync::mpsc;

use crate::frame::Frame;
use crate::pacer::Pacer;

/// The time from a link's departure to the packet reaching the next node's forwarder (a
/// cross-thread wake-up and a channel), measured with ping over paths of 6 and 10 link
/// traversals: both land within 0.3 ms of their configured delay.
const HANDOFF: Duration = Duration::from_micros(60);

/// A pending pacer wake-up.
type Wake = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One link direction: packets in from the forwarder, out to the peer when the emulator says.
pub(crate) async fn emulate(
    mut link: linkem::Link<Frame>,
    mut from_forwarder: mpsc::Receiver<Frame>,
    mut changes: mpsc::UnboundedReceiver<Box<LinkChange>>,
    to_peer: mpsc::Sender<Frame>,
    pacer: Pacer,
    meter: Arc<Mutex<crate::LinkMeter>>,
) {
    let peer = meter.lock().expect("no panics hold it").counters.peer;
    // What left in one pass, by flow: counted under one lock after the pass.
    let mut departed: Vec<(proto::monitor::FlowKey, u64)> = Vec::new();
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
            Some(change) = changes.recv() => link.apply(Instant::now(), &change),
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
            if let Some(key) = crate::monitor::flow_key(p.ip()) {
                departed.push((key, linkem::Packet::len_bytes(&p) as u64));
            }
            if to_peer.send(p).await.is_err() {
                return;
            }
        }
        // What `nextmini link show` and the metrics report: kept current here, read every
        // metrics interval.
        let queue_packets = link.queue_depth(clock) as u64;
        let mut m = meter.lock().expect("no panics hold it");
        m.counters = proto::LinkCounters {
            peer,
            counters: link.counters(),
            queue_packets,
        };
        for (key, bytes) in departed.drain(..) {
            m.flows.record(key, bytes);
        }
    }
}
