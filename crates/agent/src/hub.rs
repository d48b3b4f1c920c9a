//! In-process links between nodes of one agent: a pair of bounded channels, handed out when
//! both ends have asked for the link. No socket, no kernel, no fd.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::{mpsc, oneshot};

use crate::frame::Frame;

/// Frames in flight per direction of a local link.
const LOCAL_LINK_DEPTH: usize = 256;

/// One end of a local link.
#[derive(Debug)]
#[allow(dead_code)] // the dataplane's forwarding carries frames over these
pub struct LocalEnd {
    pub peer: u32,
    pub tx: mpsc::Sender<Frame>,
    pub rx: mpsc::Receiver<Frame>,
}

/// Pairs the two ends of each local link.
#[derive(Default)]
pub struct Hub {
    waiting: Mutex<HashMap<(u32, u32), oneshot::Sender<LocalEnd>>>,
}

impl Hub {
    /// Resolves with `me`'s end once `peer` has asked too.
    pub async fn connect(&self, me: u32, peer: u32) -> Option<LocalEnd> {
        let key = (me.min(peer), me.max(peer));
        let rx = {
            let mut waiting = self.waiting.lock().expect("no panics hold it");
            match waiting.remove(&key) {
                Some(first) => {
                    let (a_tx, a_rx) = mpsc::channel(LOCAL_LINK_DEPTH);
                    let (b_tx, b_rx) = mpsc::channel(LOCAL_LINK_DEPTH);
                    let theirs = LocalEnd {
                        peer: me,
                        tx: a_tx,
                        rx: b_rx,
                    };
                    let mine = LocalEnd {
                        peer,
                        tx: b_tx,
                        rx: a_rx,
                    };
                    // If the first side is gone (its node failed), the link is not up.
                    return first.send(theirs).ok().map(|()| mine);
                }
                None => {
                    let (tx, rx) = oneshot::channel();
                    waiting.insert(key, tx);
                    rx
                }
            }
        };
        rx.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn both_ends_meet_and_carry_frames() {
        let hub = std::sync::Arc::new(Hub::default());
        let h = hub.clone();
        let first = tokio::spawn(async move { h.connect(1, 2).await });
        tokio::task::yield_now().await;
        let second = hub.connect(2, 1).await.unwrap();
        let first = first.await.unwrap().unwrap();
        assert_eq!((first.peer, second.peer), (2, 1));
        first.tx.send(Frame::from_ip(b"hello")).await.unwrap();
        let mut second = second;
        assert_eq!(second.rx.recv().await.unwrap().ip(), b"hello");
    }
}
