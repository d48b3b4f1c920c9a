//! Pure, serialisable topologies: which nodes exist and which pairs are linked. No I/O besides
//! parsing text handed in; building a topology on hosts is someone else's job.
//!
//! Nodes are numbered `1..=n` (the `node_id` of the rest of nextmini). Links are undirected,
//! stored once as `(a, b)` with `a < b`, sorted and without duplicates.

pub mod ids;
mod import;
pub mod multicast;
mod presets;
pub mod routing;
mod spec;

pub use import::{from_graphml, from_node_link_json};
pub use presets::Preset;
pub use spec::{TopologySpec, resolve_file};

use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TopologyError {
    #[error("{0}")]
    Invalid(String),
    #[error("edge ({0}, {1}) names a node outside 1..={2}")]
    NodeOutOfRange(u32, u32, u32),
    #[error("edge ({0}, {0}) links a node to itself")]
    SelfLoop(u32),
    #[error("could not parse {what}: {message}")]
    Parse { what: &'static str, message: String },
}

/// A node's geographic position, in degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoPoint {
    pub lat: f64,
    pub lon: f64,
}

/// An undirected graph over nodes `1..=n`, with optional names, coordinates and link lengths.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    /// What it is, for summaries: `ring(100)`, `fat_tree(k=4)`, `file(Abilene.graphml)`.
    pub label: String,
    n_nodes: u32,
    edges: Vec<(u32, u32)>,
    /// Per node (index `id - 1`), when imported.
    pub names: Vec<Option<String>>,
    pub coords: Vec<Option<GeoPoint>>,
    /// Length in km of a link, when the file gives one (`dist`); same order as `edges`.
    pub lengths_km: Vec<Option<f64>>,
}

impl Topology {
    /// Builds a topology from `n_nodes` and edges in any order and orientation; duplicates
    /// (either way round) are merged.
    pub fn new(
        label: impl Into<String>,
        n_nodes: u32,
        edges: impl IntoIterator<Item = (u32, u32)>,
    ) -> Result<Self, TopologyError> {
        let mut set = BTreeSet::new();
        for (a, b) in edges {
            if a == 0 || b == 0 || a > n_nodes || b > n_nodes {
                return Err(TopologyError::NodeOutOfRange(a, b, n_nodes));
            }
            if a == b {
                return Err(TopologyError::SelfLoop(a));
            }
            set.insert((a.min(b), a.max(b)));
        }
        let edges: Vec<_> = set.into_iter().collect();
        Ok(Topology {
            label: label.into(),
            n_nodes,
            lengths_km: vec![None; edges.len()],
            edges,
            names: vec![None; n_nodes as usize],
            coords: vec![None; n_nodes as usize],
        })
    }

    pub fn n_nodes(&self) -> u32 {
        self.n_nodes
    }

    /// Links as `(a, b)`, `a < b`, sorted.
    pub fn edges(&self) -> &[(u32, u32)] {
        &self.edges
    }

    pub fn n_links(&self) -> usize {
        self.edges.len()
    }

    pub fn has_edge(&self, a: u32, b: u32) -> bool {
        self.edges.binary_search(&(a.min(b), a.max(b))).is_ok()
    }

    /// Neighbours of every node: `adjacency()[id - 1]`, ascending.
    pub fn adjacency(&self) -> Vec<Vec<u32>> {
        let mut adj = vec![Vec::new(); self.n_nodes as usize];
        for &(a, b) in &self.edges {
            adj[a as usize - 1].push(b);
            adj[b as usize - 1].push(a);
        }
        for list in &mut adj {
            list.sort_unstable();
        }
        adj
    }

    /// Adds the edges of `other` (same node count), as the seeds' system unions a preset with
    /// custom `edges`.
    pub fn union_edges(&mut self, extra: &[(u32, u32)]) -> Result<(), TopologyError> {
        let merged = Topology::new(
            self.label.clone(),
            self.n_nodes,
            self.edges.iter().copied().chain(extra.iter().copied()),
        )?;
        let mut lengths = Vec::with_capacity(merged.edges.len());
        for e in &merged.edges {
            lengths.push(
                self.edges
                    .binary_search(e)
                    .ok()
                    .and_then(|i| self.lengths_km[i]),
            );
        }
        self.edges = merged.edges;
        self.lengths_km = lengths;
        Ok(())
    }

    /// A link's length: the file's `dist` if given, else the great-circle distance between its
    /// ends' coordinates, if both have them.
    pub fn length_km(&self, a: u32, b: u32) -> Option<f64> {
        let i = self.edges.binary_search(&(a.min(b), a.max(b))).ok()?;
        if let Some(km) = self.lengths_km[i] {
            return Some(km);
        }
        let (p, q) = (self.coords[a as usize - 1]?, self.coords[b as usize - 1]?);
        Some(great_circle_km(p, q))
    }

    /// Whether every node can reach every other.
    pub fn is_connected(&self) -> bool {
        if self.n_nodes <= 1 {
            return true;
        }
        let adj = self.adjacency();
        let mut seen = vec![false; self.n_nodes as usize];
        let mut stack = vec![1u32];
        seen[0] = true;
        let mut count = 1;
        while let Some(v) = stack.pop() {
            for &w in &adj[v as usize - 1] {
                if !seen[w as usize - 1] {
                    seen[w as usize - 1] = true;
                    count += 1;
                    stack.push(w);
                }
            }
        }
        count == self.n_nodes
    }
}

/// Haversine distance on a sphere of the Earth's mean radius.
pub fn great_circle_km(p: GeoPoint, q: GeoPoint) -> f64 {
    const EARTH_RADIUS_KM: f64 = 6371.0088;
    let (la1, la2) = (p.lat.to_radians(), q.lat.to_radians());
    let dlat = la2 - la1;
    let dlon = (q.lon - p.lon).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_are_normalised_and_deduplicated() {
        let t = Topology::new("t", 4, [(2, 1), (1, 2), (3, 4), (4, 3), (1, 4)]).unwrap();
        assert_eq!(t.edges(), &[(1, 2), (1, 4), (3, 4)]);
        assert!(t.has_edge(4, 1));
        assert_eq!(t.adjacency()[0], vec![2, 4]);
    }

    #[test]
    fn bad_edges_are_refused() {
        assert_eq!(
            Topology::new("t", 3, [(1, 4)]),
            Err(TopologyError::NodeOutOfRange(1, 4, 3))
        );
        assert_eq!(
            Topology::new("t", 3, [(2, 2)]),
            Err(TopologyError::SelfLoop(2))
        );
        assert!(Topology::new("t", 3, [(0, 1)]).is_err());
    }

    #[test]
    fn great_circle_matches_a_known_distance() {
        // New York (JFK) to London (LHR) is about 5,540 km.
        let jfk = GeoPoint {
            lat: 40.6413,
            lon: -73.7781,
        };
        let lhr = GeoPoint {
            lat: 51.4700,
            lon: -0.4543,
        };
        let d = great_circle_km(jfk, lhr);
        assert!((d - 5540.0).abs() < 15.0, "{d}");
    }

    #[test]
    fn union_keeps_lengths() {
        let mut t = Topology::new("t", 3, [(1, 2)]).unwrap();
        t.lengths_km[0] = Some(10.0);
        t.union_edges(&[(2, 3), (2, 1)]).unwrap();
        assert_eq!(t.edges(), &[(1, 2), (2, 3)]);
        assert_eq!(t.length_km(1, 2), Some(10.0));
        assert_eq!(t.length_km(2, 3), None);
    }
}
