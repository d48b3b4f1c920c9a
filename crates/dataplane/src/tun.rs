//! A node's TUN device: reads into one buffer per worker thread, and writes that coalesce
//! runs of packets into TSO segments.

use crate::frame::{self, Frame};

thread_local! {
    /// Where TUN reads land: a header and up to 64 KB of TCP segment. One per worker thread,
    /// not one per node: idle nodes should not each carry 64 KB.
    pub(crate) static READ_BUFFER: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(vec![0u8; frame::HEADER + usize::from(u16::MAX)]);
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
