//! Precise wake-ups for the link emulators.
//!
//! tokio's timer wheel has a granularity of one millisecond, too coarse for exact delays at
//! high rates. One thread keeps every pending deadline in a heap, sleeps in the kernel until
//! shortly before the earliest, spins the last stretch, and wakes the waiting task.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// The kernel wakes a sleeping thread up to about this late; spin the rest.
const SPIN: Duration = Duration::from_micros(150);

#[derive(Clone)]
pub struct Pacer {
    tx: mpsc::Sender<(Instant, oneshot::Sender<()>)>,
}

impl Pacer {
    pub fn start() -> std::io::Result<Pacer> {
        let (tx, rx) = mpsc::channel::<(Instant, oneshot::Sender<()>)>();
        std::thread::Builder::new()
            .name("nm-pacer".into())
            .spawn(move || run(rx))?;
        Ok(Pacer { tx })
    }

    /// Resolves at `at`, within microseconds. The wake-up is registered when the future is
    /// first polled; the future does not borrow the pacer.
    pub fn sleep_until(
        &self,
        at: Instant,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let tx = self.tx.clone();
        async move {
            if at <= Instant::now() {
                return;
            }
            let (done, rx) = oneshot::channel();
            if tx.send((at, done)).is_err() {
                return;
            }
            let _ = rx.await;
        }
    }
}

fn run(rx: mpsc::Receiver<(Instant, oneshot::Sender<()>)>) {
    let mut heap: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut waiting: HashMap<u64, oneshot::Sender<()>> = HashMap::new();
    let mut seq = 0u64;
    let mut add = |heap: &mut BinaryHeap<_>, waiting: &mut HashMap<_, _>, (at, tx)| {
        seq += 1;
        heap.push(Reverse((at, seq)));
        waiting.insert(seq, tx);
    };
    loop {
        let now = Instant::now();
        while let Some(Reverse((at, id))) = heap.peek().copied() {
            if at > now {
                break;
            }
            heap.pop();
            if let Some(tx) = waiting.remove(&id) {
                let _ = tx.send(());
            }
        }
        let next = heap.peek().map(|Reverse((at, _))| *at);
        let incoming = match next {
            None => match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => return,
            },
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                if left > SPIN {
                    match rx.recv_timeout(left - SPIN) {
                        Ok(m) => Some(m),
                        Err(mpsc::RecvTimeoutError::Timeout) => None,
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                } else {
                    std::hint::spin_loop();
                    rx.try_recv().ok()
                }
            }
        };
        if let Some(m) = incoming {
            add(&mut heap, &mut waiting, m);
            while let Ok(m) = rx.try_recv() {
                add(&mut heap, &mut waiting, m);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn never_wakes_early_and_serves_many_waiters() {
        let pacer = Pacer::start().unwrap();
        let start = Instant::now();
        let mut tasks = Vec::new();
        // Deadlines registered out of order all fire, none before its time.
        for i in (1..=50u64).rev() {
            let pacer = pacer.clone();
            let at = start + Duration::from_micros(200 * i);
            tasks.push(tokio::spawn(async move {
                pacer.sleep_until(at).await;
                Instant::now() >= at
            }));
        }
        for t in tasks {
            assert!(t.await.unwrap());
        }
    }
}
