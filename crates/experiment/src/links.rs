//! Link parameters per direction: a default for every link and overrides for some directions.

use std::collections::HashMap;

use linkem::{LinkChange, LinkParams};

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

    /// Makes `change` to the direction `from` → `to`; returns its new parameters.
    pub fn change(&mut self, from: u32, to: u32, change: &LinkChange) -> LinkParams {
        let params = change.apply(self.params(from, to));
        self.overrides.insert((from, to), params);
        params
    }
}
