//! Weighted round robin by flow: deficit round robin (Shreedhar and Varghese) over one queue per
//! flow, each flow's quantum its weight times a full-size packet. Two backlogged flows of
//! weights 1 and 3 get a quarter and three quarters of the transmitter.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use crate::Packet;

/// Bytes a flow of weight 1 may send per round: one full-size Ethernet frame.
const QUANTUM: usize = 1514;

struct FlowQueue<P> {
    packets: VecDeque<(Instant, P)>,
    bytes: usize,
    deficit: usize,
    weight: u32,
    /// This visit's quantum was added (a flow is visited until its credit runs out).
    granted: bool,
}

/// Packets waiting for the transmitter, one queue per flow.
pub(crate) struct Drr<P> {
    flows: HashMap<u64, FlowQueue<P>>,
    /// Flows with packets, in service order.
    active: VecDeque<u64>,
    packets: usize,
    bytes: usize,
}

impl<P> Default for Drr<P> {
    fn default() -> Self {
        Drr {
            flows: HashMap::new(),
            active: VecDeque::new(),
            packets: 0,
            bytes: 0,
        }
    }
}

impl<P: Packet> Drr<P> {
    pub fn is_empty(&self) -> bool {
        self.packets == 0
    }

    pub fn packets(&self) -> usize {
        self.packets
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn push(&mut self, arrived: Instant, packet: P) {
        let (flow, weight) = packet.flow();
        let len = packet.len_bytes();
        let q = self.flows.entry(flow).or_insert_with(|| FlowQueue {
            packets: VecDeque::new(),
            bytes: 0,
            deficit: 0,
            weight,
            granted: false,
        });
        q.weight = weight.max(1);
        if q.packets.is_empty() {
            self.active.push_back(flow);
        }
        q.packets.push_back((arrived, packet));
        q.bytes += len;
        self.packets += 1;
        self.bytes += len;
    }

    /// The flow whose backlog is the largest for its weight, and that backlog (bytes/weight).
    pub fn longest(&self) -> Option<(u64, f64)> {
        self.flows
            .iter()
            .map(|(&f, q)| (f, q.bytes as f64 / f64::from(q.weight)))
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
    }

    /// What a flow's backlog would be for its weight with `extra` more bytes.
    pub fn weighted_backlog(&self, flow: u64, weight: u32, extra: usize) -> f64 {
        let (bytes, w) = self
            .flows
            .get(&flow)
            .map_or((0, weight), |q| (q.bytes, q.weight));
        (bytes + extra) as f64 / f64::from(w.max(1))
    }

    /// Drops the last packet of `flow`'s queue.
    pub fn drop_tail(&mut self, flow: u64) -> Option<P> {
        let q = self.flows.get_mut(&flow)?;
        let (_, p) = q.packets.pop_back()?;
        let len = p.len_bytes();
        q.bytes -= len;
        self.packets -= 1;
        self.bytes -= len;
        if q.packets.is_empty() {
            self.flows.remove(&flow);
            self.active.retain(|&f| f != flow);
        }
        Some(p)
    }

    /// The next packet to transmit, with the time it arrived.
    pub fn pop(&mut self) -> Option<(Instant, P)> {
        loop {
            let &flow = self.active.front()?;
            let q = self.flows.get_mut(&flow).expect("active flows have queues");
            if !q.granted {
                q.deficit += QUANTUM * q.weight as usize;
                q.granted = true;
            }
            let head = q.packets.front().map(|(_, p)| p.len_bytes())?;
            if q.deficit < head {
                // This visit's credit is spent: the next flow's turn (a packet larger than a
                // quantum waits for the credit of several visits).
                q.granted = false;
                self.active.rotate_left(1);
                continue;
            }
            let (arrived, p) = q.packets.pop_front().expect("has a head");
            let len = p.len_bytes();
            q.deficit -= len;
            q.bytes -= len;
            self.packets -= 1;
            self.bytes -= len;
            if q.packets.is_empty() {
                // An idle flow keeps no credit.
                self.flows.remove(&flow);
                self.active.pop_front();
            }
            return Some((arrived, p));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq)]
    struct P {
        flow: u64,
        weight: u32,
    }

    impl Packet for P {
        fn len_bytes(&self) -> usize {
            1500
        }
        fn flow(&self) -> (u64, u32) {
            (self.flow, self.weight)
        }
    }

    #[test]
    fn backlogged_flows_share_by_weight() {
        let t = Instant::now();
        let mut d = Drr::default();
        for _ in 0..4000 {
            d.push(t, P { flow: 1, weight: 1 });
            d.push(t, P { flow: 2, weight: 3 });
        }
        let served: Vec<u64> = (0..4000).map(|_| d.pop().unwrap().1.flow).collect();
        let two = served.iter().filter(|&&f| f == 2).count();
        assert_eq!(two, 3000, "three of every four packets are flow 2's");
        assert_eq!(d.packets(), 4000);
    }

    #[test]
    fn one_flow_alone_gets_everything_and_drops_come_from_the_longest() {
        let t = Instant::now();
        let mut d = Drr::default();
        for _ in 0..10 {
            d.push(t, P { flow: 7, weight: 2 });
        }
        d.push(t, P { flow: 8, weight: 1 });
        assert_eq!(d.longest().map(|(f, _)| f), Some(7));
        assert!(d.drop_tail(7).is_some());
        assert_eq!((d.packets(), d.bytes()), (10, 15000));
        let order: Vec<u64> = std::iter::from_fn(|| d.pop().map(|(_, p)| p.flow)).collect();
        assert_eq!(order.len(), 10);
        assert!(d.is_empty());
        assert!(d.pop().is_none());
    }
}
