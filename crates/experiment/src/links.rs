//! Link parameters per direction: a default for every link and overrides for some directions.

use std::collections::HashMap;

use linkem::{LinkChange, LinkParams};

/// The placement weight of an unshaped link: as a 100 Gbit/s one (what a host can carry).
pub const UNSHAPED_WEIGHT: u64 = 100_000;

/// Link parameters: a default, and overrides per direction `(from, to)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkPlan {
    pub default: LinkParams,
    pub overrides: HashMap<(u32, u32), LinkParams>,
}

impl LinkPlan {
    /// Unshaped, up links everywhere.
    pub fn unshaped() -> Self {
        LinkPlan::default()
    }

    /// The parameters of the direction `from` → `to`.
    pub fn params(&self, from: u32, to: u32) -> LinkParams {
        self.overrides
            .get(&(from, to))
            .copied()
            .unwrap_or(self.default)
    }

    /// What cutting the link `a`–`b` costs a placement: its rate in Mbit/s (the faster
    /// direction; at least 1), an unshaped link as [`UNSHAPED_WEIGHT`]. Placing a 10 Gbit/s
    /// link across hosts then weighs a thousand 10 Mbit/s ones.
    pub fn cut_weight(&self, a: u32, b: u32) -> u64 {
        let rate = |from, to| {
            self.params(from, to)
                .rate
                .map_or(UNSHAPED_WEIGHT, |r| (r.bps() / 1_000_000).max(1))
        };
        rate(a, b).max(rate(b, a))
    }

    /// Makes `change` to the direction `from` → `to`; returns its new parameters.
    pub fn change(&mut self, from: u32, to: u32, change: &LinkChange) -> LinkParams {
        let params = change.apply(self.params(from, to));
        self.overrides.insert((from, to), params);
        params
    }
}
