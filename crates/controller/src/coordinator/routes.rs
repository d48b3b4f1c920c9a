//! Routes changed while the run goes on: pinned for a pair of nodes or for one generated flow,
//! cleared, shown. Only the nodes whose tables change are sent theirs, each message with a
//! version that the node confirms once its table is in place; a change is applied when every
//! node it went to has confirmed it ([`Milestone::RoutesApplied`]).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use topology::routing::ExplicitRoute;

use super::{Coordinator, Milestone, Output};

/// A route asked for while the run goes on: `src` to `dst` over `edges` (a path's
/// consecutive pairs, or a DAG's edges: traffic splits per flow where it branches).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRequest {
    pub src: u32,
    pub dst: u32,
    pub edges: Vec<(u32, u32)>,
    /// Only for this generated flow (its id); else for all traffic from `src` to `dst`.
    #[serde(default)]
    pub flow: Option<u64>,
}

impl RouteRequest {
    /// A path through `nodes`, from the first to the last.
    pub fn path(nodes: &[u32], flow: Option<u64>) -> Result<RouteRequest, String> {
        let route = ExplicitRoute::path(nodes)?;
        Ok(RouteRequest {
            src: route.src,
            dst: route.dst,
            edges: route.edges,
            flow,
        })
    }
}

/// A route that can't be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("routes need the dataplane (the experiment runs without TUN devices)")]
    NoDataplane,
    #[error("the routes are still being computed: try again once the topology is ready")]
    NotYet,
    #[error("{0}")]
    Invalid(String),
    #[error("there is no link between nodes {a} and {b} in {topology}: a route follows links")]
    NoLink { a: u32, b: u32, topology: String },
    #[error("the route's edges go from {from} to {to}, not from {src} to {dst}")]
    Ends {
        src: u32,
        dst: u32,
        from: u32,
        to: u32,
    },
    #[error("no flow {0} in this run (see `nextmini flow list`)")]
    UnknownFlow(u64),
    #[error("flow {id} goes from {src} to {dst}: its route must too")]
    FlowEnds { id: u64, src: u32, dst: u32 },
    #[error(
        "node {0} is in max mode: its kernel forwards by destination only and can't follow a pinned route; pin a route that does not leave from it, or make it normal"
    )]
    ThroughMaxMode(u32),
}

/// Which pinned routes to clear (all that match every given field).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteFilter {
    pub src: Option<u32>,
    pub dst: Option<u32>,
    pub flow: Option<u64>,
}

/// Routes sent: the version and the nodes it went to (none: nothing changed, or a flow's
/// route waits for the flow to start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteChange {
    pub version: u64,
    pub nodes: Vec<u32>,
    /// A route for a flow that has not opened its connection yet: set once it does.
    #[serde(default)]
    pub waits_for_flow: bool,
}

/// A pinned route, as `route show` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRow {
    pub src: u32,
    pub dst: u32,
    pub flow: Option<u64>,
    pub edges: Vec<(u32, u32)>,
    /// Every edge is up, so the route is in the tables.
    pub live: bool,
    /// For a flow that has not started yet.
    pub waiting: bool,
}

/// Where traffic from `src` to `dst` goes now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathRow {
    pub src: u32,
    pub dst: u32,
    /// Every link direction it may take (all equal-cost branches).
    pub edges: Vec<(u32, u32)>,
    /// For one flow: its path, node by node.
    pub flow: Option<u64>,
    pub path: Option<Vec<u32>>,
}

/// A route change waiting for its nodes' confirmations.
#[derive(Debug, Clone)]
pub(super) struct RouteWait {
    since: std::time::Instant,
    waiting: BTreeSet<u32>,
    nodes: usize,
}

impl RouteFilter {
    fn matches(&self, src: u32, dst: u32, flow: Option<u64>) -> bool {
        self.src.is_none_or(|s| s == src)
            && self.dst.is_none_or(|d| d == dst)
            && self.flow.is_none_or(|f| Some(f) == flow)
    }
}

impl Coordinator {
    /// Sends their tables to `nodes` (those connected) under a new version; the change is
    /// applied once they all confirm.
    pub(super) fn send_routes(&mut self, now: std::time::Instant, nodes: Vec<u32>) -> RouteChange {
        self.route_version += 1;
        let version = self.route_version;
        let Some(router) = &self.router else {
            return RouteChange {
                version,
                nodes: Vec::new(),
                waits_for_flow: false,
            };
        };
        let mut sent = Vec::with_capacity(nodes.len());
        for id in nodes {
            let s = &self.nodes[id as usize - 1];
            if s.connected && !s.failed {
                let table = &router.tables()[id as usize - 1];
                self.out
                    .push_back(Output::Node(id, super::to_routes(table, version)));
                sent.push(id);
            }
        }
        self.route_waits.insert(
            version,
            RouteWait {
                since: now,
                waiting: sent.iter().copied().collect(),
                nodes: sent.len(),
            },
        );
        self.settle_route_waits(now);
        RouteChange {
            version,
            nodes: sent,
            waits_for_flow: false,
        }
    }

    /// A node has its table of `version` in place (and so every earlier one).
    pub fn handle_routes_applied(&mut self, now: std::time::Instant, node: u32, version: u64) {
        for (_, wait) in self.route_waits.range_mut(..=version) {
            wait.waiting.remove(&node);
        }
        self.settle_route_waits(now);
    }

    /// A node that failed confirms nothing more.
    pub(super) fn forget_route_waits(&mut self, now: std::time::Instant, node: u32) {
        for wait in self.route_waits.values_mut() {
            wait.waiting.remove(&node);
        }
        self.settle_route_waits(now);
    }

    fn settle_route_waits(&mut self, now: std::time::Instant) {
        let done: Vec<u64> = self
            .route_waits
            .iter()
            .filter(|(_, w)| w.waiting.is_empty())
            .map(|(v, _)| *v)
            .collect();
        for version in done {
            let w = self.route_waits.remove(&version).expect("listed");
            self.emit(Milestone::RoutesApplied {
                version,
                nodes: w.nodes,
                elapsed: now.saturating_duration_since(w.since),
            });
        }
    }

    /// Pins a route while the run goes on. The nodes whose tables change get them.
    pub fn handle_set_route(
        &mut self,
        now: std::time::Instant,
        req: RouteRequest,
    ) -> Result<RouteChange, RouteError> {
        if let Some(&(a, _)) = req.edges.iter().find(|&&(a, _)| self.forwards_in_kernel(a)) {
            return Err(RouteError::ThroughMaxMode(a));
        }
        if self.routes_pending.is_some() {
            return Err(RouteError::NotYet);
        }
        if self.router.is_none() {
            return Err(RouteError::NoDataplane);
        }
        for &(a, b) in &req.edges {
            if self.edge_index(a, b).is_none() {
                return Err(RouteError::NoLink {
                    a,
                    b,
                    topology: self.topology.label.clone(),
                });
            }
        }
        let mut route = ExplicitRoute::dag(req.edges.clone()).map_err(RouteError::Invalid)?;
        if (route.src, route.dst) != (req.src, req.dst) {
            return Err(RouteError::Ends {
                src: req.src,
                dst: req.dst,
                from: route.src,
                to: route.dst,
            });
        }
        if let Some(id) = req.flow {
            let f = self.flows.get(id).ok_or(RouteError::UnknownFlow(id))?;
            if (f.src, f.dst) != (req.src, req.dst) {
                return Err(RouteError::FlowEnds {
                    id,
                    src: f.src,
                    dst: f.dst,
                });
            }
            self.flow_routes.insert(id, req.clone());
            match self.flows.hash_of(id) {
                Some(hash) => route.flow = Some(hash),
                None => {
                    return Ok(RouteChange {
                        version: self.route_version,
                        nodes: Vec::new(),
                        waits_for_flow: true,
                    });
                }
            }
        }
        let router = self.router.as_mut().expect("checked");
        let changed = router.set_explicit(route);
        Ok(self.send_routes(now, changed))
    }

    /// A flow opened its connection: a route asked for it before is set now.
    pub(super) fn flow_started_route(&mut self, now: std::time::Instant, id: u64) {
        let (Some(req), Some(hash)) = (self.flow_routes.get(&id), self.flows.hash_of(id)) else {
            return;
        };
        let Ok(mut route) = ExplicitRoute::dag(req.edges.clone()) else {
            return;
        };
        route.flow = Some(hash);
        if let Some(router) = &mut self.router {
            let changed = router.set_explicit(route);
            self.send_routes(now, changed);
        }
    }

    /// Unpins the routes `filter` matches; traffic goes back to the shortest paths.
    pub fn handle_clear_routes(
        &mut self,
        now: std::time::Instant,
        filter: RouteFilter,
    ) -> RouteChange {
        self.flow_routes
            .retain(|&id, r| !filter.matches(r.src, r.dst, Some(id)));
        let flows = &self.flows;
        let changed = match &mut self.router {
            Some(router) => router.clear_explicit(|r| {
                let flow = r.flow.and_then(|h| flows.id_of_hash(h));
                !filter.matches(r.src, r.dst, flow)
            }),
            None => Vec::new(),
        };
        self.send_routes(now, changed)
    }

    /// Unpins `req`'s route if that is the one pinned for its ends and flow (a script
    /// deactivated its row; a newer route for the same ends stays).
    pub fn handle_unset_route(
        &mut self,
        now: std::time::Instant,
        req: &RouteRequest,
    ) -> RouteChange {
        let Ok(wanted) = ExplicitRoute::dag(req.edges.clone()) else {
            return self.send_routes(now, Vec::new());
        };
        if let Some(id) = req.flow
            && self.flow_routes.get(&id).is_some_and(|r| {
                ExplicitRoute::dag(r.edges.clone()).is_ok_and(|e| e.edges == wanted.edges)
            })
        {
            self.flow_routes.remove(&id);
        }
        let flows = &self.flows;
        let changed = match &mut self.router {
            Some(router) => router.clear_explicit(|r| {
                let flow = r.flow.and_then(|h| flows.id_of_hash(h));
                !((r.src, r.dst, flow) == (req.src, req.dst, req.flow) && r.edges == wanted.edges)
            }),
            None => Vec::new(),
        };
        self.send_routes(now, changed)
    }

    /// The pinned routes.
    pub fn route_rows(&self) -> Vec<RouteRow> {
        let Some(router) = &self.router else {
            return Vec::new();
        };
        let mut rows: Vec<RouteRow> = router
            .explicit()
            .iter()
            .map(|r| RouteRow {
                src: r.src,
                dst: r.dst,
                flow: r.flow.and_then(|h| self.flows.id_of_hash(h)),
                edges: r.edges.clone(),
                live: r.edges.iter().all(|&(a, b)| {
                    self.settings.links.params(a, b).up
                        && self
                            .edge_index(a, b)
                            .is_some_and(|i| self.link_ends[i] == 3)
                }),
                waiting: false,
            })
            .collect();
        for (&id, req) in &self.flow_routes {
            if self.flows.hash_of(id).is_none() {
                rows.push(RouteRow {
                    src: req.src,
                    dst: req.dst,
                    flow: Some(id),
                    edges: req.edges.clone(),
                    live: false,
                    waiting: true,
                });
            }
        }
        rows.sort_by_key(|r| (r.src, r.dst, r.flow));
        rows
    }

    /// Where traffic from `src` to `dst` (of one flow, if given) goes now.
    pub fn route_path(&self, src: u32, dst: u32, flow: Option<u64>) -> Result<PathRow, RouteError> {
        if self.routes_pending.is_some() {
            return Err(RouteError::NotYet);
        }
        let router = self.router.as_ref().ok_or(RouteError::NoDataplane)?;
        let n = self.topology.n_nodes();
        for id in [src, dst] {
            if id == 0 || id > n {
                return Err(RouteError::Invalid(format!(
                    "node {id} is not a node of {} (1..={n})",
                    self.topology.label
                )));
            }
        }
        let path = match flow {
            Some(id) => {
                let f = self.flows.get(id).ok_or(RouteError::UnknownFlow(id))?;
                if (f.src, f.dst) != (src, dst) {
                    return Err(RouteError::FlowEnds {
                        id,
                        src: f.src,
                        dst: f.dst,
                    });
                }
                self.flows
                    .hash_of(id)
                    .and_then(|h| router.path(src, dst, h))
            }
            None => None,
        };
        Ok(PathRow {
            src,
            dst,
            edges: router.edges(src, dst),
            flow,
            path,
        })
    }
}
