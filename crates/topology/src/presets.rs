//! Library topologies. Each is a few lines of arithmetic.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Topology, TopologyError};

/// A preset and its parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum Preset {
    /// `n` nodes, no links: the connection-only baseline.
    Bare {
        n: u32,
    },
    Ring {
        n: u32,
    },
    Line {
        n: u32,
    },
    /// Node 1 in the middle.
    Star {
        n: u32,
    },
    FullMesh {
        n: u32,
    },
    /// A complete tree: node 1 is the root, `depth` levels below it, `fanout` children each.
    Tree {
        depth: u32,
        fanout: u32,
    },
    /// A k-ary fat tree: (k/2)² core, k²/2 aggregation, k²/2 edge switches and k³/4 hosts, in
    /// that order of node ids.
    FatTree {
        k: u32,
    },
    /// `n^dim` nodes on a wrap-around grid, 1 to 3 dimensions.
    Torus {
        dim: u32,
        n: u32,
    },
    /// Seeded random graph: G(n, p) if `p` is given, else connected with mean degree `degree`.
    Random {
        n: u32,
        degree: Option<u32>,
        p: Option<f64>,
        seed: u64,
    },
}

fn invalid(msg: String) -> TopologyError {
    TopologyError::Invalid(msg)
}

/// Node counts are checked against this before anything is allocated.
const MAX_NODES: u64 = 1 << 24;

fn check_size(what: &str, nodes: u64) -> Result<u32, TopologyError> {
    if nodes == 0 {
        return Err(invalid(format!("{what} has no nodes")));
    }
    if nodes > MAX_NODES {
        return Err(invalid(format!(
            "{what} would have {nodes} nodes; at most {MAX_NODES} are supported"
        )));
    }
    Ok(nodes as u32)
}

impl Preset {
    pub fn build(&self) -> Result<Topology, TopologyError> {
        match *self {
            Preset::Bare { n } => {
                let n = check_size("n_nodes", n.into())?;
                Topology::new(format!("n_nodes({n})"), n, [])
            }
            Preset::Ring { n } => {
                let n = check_size("ring", n.into())?;
                let edges = (1..=n).filter_map(|i| {
                    let j = i % n + 1;
                    (i != j).then_some((i, j))
                });
                Topology::new(format!("ring({n})"), n, edges)
            }
            Preset::Line { n } => {
                let n = check_size("line", n.into())?;
                Topology::new(format!("line({n})"), n, (1..n).map(|i| (i, i + 1)))
            }
            Preset::Star { n } => {
                let n = check_size("star", n.into())?;
                Topology::new(format!("star({n})"), n, (2..=n).map(|i| (1, i)))
            }
            Preset::FullMesh { n } => {
                let n = check_size("full_mesh", n.into())?;
                if u64::from(n) * u64::from(n) / 2 > 50_000_000 {
                    return Err(invalid(format!(
                        "full_mesh of {n} nodes has too many links"
                    )));
                }
                let edges = (1..=n).flat_map(|a| (a + 1..=n).map(move |b| (a, b)));
                Topology::new(format!("full_mesh({n})"), n, edges)
            }
            Preset::Tree { depth, fanout } => tree(depth, fanout),
            Preset::FatTree { k } => fat_tree(k),
            Preset::Torus { dim, n } => torus(dim, n),
            Preset::Random { n, degree, p, seed } => random(n, degree, p, seed),
        }
    }
}

fn tree(depth: u32, fanout: u32) -> Result<Topology, TopologyError> {
    if fanout == 0 && depth > 0 {
        return Err(invalid("tree fanout must be at least 1".into()));
    }
    let mut total: u64 = 0;
    let mut level: u64 = 1;
    for _ in 0..=depth {
        total += level;
        level = level.saturating_mul(u64::from(fanout));
        if total > MAX_NODES {
            break;
        }
    }
    let n = check_size("tree", total)?;
    // In a complete tree numbered breadth-first from 1, node i's parent is (i - 2) / f + 1.
    let edges = (2..=n).map(|i| ((i - 2) / fanout + 1, i));
    Topology::new(format!("tree(depth={depth}, fanout={fanout})"), n, edges)
}

fn fat_tree(k: u32) -> Result<Topology, TopologyError> {
    if k < 2 || !k.is_multiple_of(2) {
        return Err(invalid(format!(
            "fat_tree k must be even and at least 2, not {k}"
        )));
    }
    let h = k / 2;
    let cores = h * h;
    let aggs = k * h;
    let edges_sw = k * h;
    let hosts = k * k * k / 4;
    let n = check_size("fat_tree", u64::from(cores + aggs + edges_sw + hosts))?;
    let core = |i: u32| 1 + i;
    let agg = |pod: u32, j: u32| 1 + cores + pod * h + j;
    let edge = |pod: u32, j: u32| 1 + cores + aggs + pod * h + j;
    let host = |pod: u32, j: u32, m: u32| 1 + cores + aggs + edges_sw + (pod * h + j) * h + m;
    let mut links = Vec::new();
    for pod in 0..k {
        for j in 0..h {
            // Aggregation switch j of a pod reaches core switches j·h .. j·h + h - 1.
            for c in 0..h {
                links.push((agg(pod, j), core(j * h + c)));
            }
            for e in 0..h {
                links.push((agg(pod, j), edge(pod, e)));
            }
            for m in 0..h {
                links.push((edge(pod, j), host(pod, j, m)));
            }
        }
    }
    Topology::new(format!("fat_tree(k={k})"), n, links)
}

fn torus(dim: u32, n: u32) -> Result<Topology, TopologyError> {
    if !(1..=3).contains(&dim) {
        return Err(invalid(format!("torus dim must be 1, 2 or 3, not {dim}")));
    }
    let total = check_size("torus", u64::from(n).pow(dim))?;
    let mut links = Vec::new();
    for id in 0..total {
        let mut stride = 1;
        for _ in 0..dim {
            let coord = (id / stride) % n;
            let next = (coord + 1) % n;
            let other = id - coord * stride + next * stride;
            if other != id {
                links.push((id + 1, other + 1));
            }
            stride *= n;
        }
    }
    Topology::new(format!("torus(dim={dim}, n={n})"), total, links)
}

fn random(
    n: u32,
    degree: Option<u32>,
    p: Option<f64>,
    seed: u64,
) -> Result<Topology, TopologyError> {
    let n = check_size("random", n.into())?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut links = Vec::new();
    match (degree, p) {
        (_, Some(p)) => {
            if !(0.0..=1.0).contains(&p) {
                return Err(invalid(format!("random p must be within 0..1, not {p}")));
            }
            if u64::from(n) * u64::from(n) > 100_000_000 {
                return Err(invalid(
                    "random with p is limited to 10,000 nodes; use degree".into(),
                ));
            }
            for a in 1..=n {
                for b in a + 1..=n {
                    if rng.random_bool(p) {
                        links.push((a, b));
                    }
                }
            }
            Topology::new(format!("random(n={n}, p={p}, seed={seed})"), n, links)
        }
        (Some(d), None) => {
            if d == 0 || d >= n {
                return Err(invalid(format!(
                    "random degree must be within 1..{n} for {n} nodes, not {d}"
                )));
            }
            // A random spanning path keeps it connected; random chords bring the mean degree
            // up to d.
            let mut order: Vec<u32> = (1..=n).collect();
            for i in (1..order.len()).rev() {
                let j = rng.random_range(0..=i);
                order.swap(i, j);
            }
            links.extend(order.windows(2).map(|w| (w[0], w[1])));
            let target = (u64::from(n) * u64::from(d) / 2).max(u64::from(n) - 1) as usize;
            let mut set: std::collections::BTreeSet<(u32, u32)> =
                links.iter().map(|&(a, b)| (a.min(b), a.max(b))).collect();
            let mut attempts = 0usize;
            while set.len() < target && attempts < target * 20 {
                attempts += 1;
                let a = rng.random_range(1..=n);
                let b = rng.random_range(1..=n);
                if a != b {
                    set.insert((a.min(b), a.max(b)));
                }
            }
            Topology::new(format!("random(n={n}, degree={d}, seed={seed})"), n, set)
        }
        (None, None) => Err(invalid("random needs `degree` or `p`".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn degrees(t: &Topology) -> Vec<usize> {
        t.adjacency().iter().map(Vec::len).collect()
    }

    #[test]
    fn rings_lines_stars_meshes() {
        let r = Preset::Ring { n: 5 }.build().unwrap();
        assert_eq!(r.edges(), &[(1, 2), (1, 5), (2, 3), (3, 4), (4, 5)]);
        assert!(degrees(&r).iter().all(|&d| d == 2));
        assert_eq!(Preset::Ring { n: 2 }.build().unwrap().edges(), &[(1, 2)]);
        assert_eq!(Preset::Ring { n: 1 }.build().unwrap().n_links(), 0);
        assert_eq!(
            Preset::Line { n: 4 }.build().unwrap().edges(),
            &[(1, 2), (2, 3), (3, 4)]
        );
        let s = Preset::Star { n: 4 }.build().unwrap();
        assert_eq!(s.edges(), &[(1, 2), (1, 3), (1, 4)]);
        assert_eq!(Preset::FullMesh { n: 5 }.build().unwrap().n_links(), 10);
        assert_eq!(Preset::Bare { n: 7 }.build().unwrap().n_links(), 0);
        assert!(Preset::Ring { n: 0 }.build().is_err());
    }

    #[test]
    fn trees() {
        let t = Preset::Tree {
            depth: 2,
            fanout: 2,
        }
        .build()
        .unwrap();
        assert_eq!(t.n_nodes(), 7);
        assert_eq!(t.edges(), &[(1, 2), (1, 3), (2, 4), (2, 5), (3, 6), (3, 7)]);
        let t = Preset::Tree {
            depth: 3,
            fanout: 3,
        }
        .build()
        .unwrap();
        assert_eq!(t.n_nodes(), 1 + 3 + 9 + 27);
        assert_eq!(t.n_links(), 39);
        assert!(t.is_connected());
        assert_eq!(
            Preset::Tree {
                depth: 0,
                fanout: 5
            }
            .build()
            .unwrap()
            .n_nodes(),
            1
        );
    }

    #[test]
    fn fat_tree_k4_has_the_textbook_shape() {
        let t = Preset::FatTree { k: 4 }.build().unwrap();
        assert_eq!(t.n_nodes(), 36); // 4 core + 8 agg + 8 edge + 16 hosts
        assert_eq!(t.n_links(), 48);
        let d = degrees(&t);
        assert!(
            d[..4].iter().all(|&x| x == 4),
            "core switches: {:?}",
            &d[..4]
        );
        assert!(d[4..20].iter().all(|&x| x == 4), "agg and edge switches");
        assert!(d[20..].iter().all(|&x| x == 1), "hosts");
        assert!(t.is_connected());
        let t = Preset::FatTree { k: 8 }.build().unwrap();
        assert_eq!(t.n_nodes(), 16 + 32 + 32 + 128);
        assert!(Preset::FatTree { k: 3 }.build().is_err());
    }

    #[test]
    fn tori() {
        let t = Preset::Torus { dim: 2, n: 3 }.build().unwrap();
        assert_eq!(t.n_nodes(), 9);
        assert!(degrees(&t).iter().all(|&d| d == 4));
        assert_eq!(t.n_links(), 18);
        let t = Preset::Torus { dim: 3, n: 4 }.build().unwrap();
        assert_eq!(t.n_nodes(), 64);
        assert!(degrees(&t).iter().all(|&d| d == 6));
        assert_eq!(Preset::Torus { dim: 1, n: 5 }.build().unwrap(), {
            let mut r = Preset::Ring { n: 5 }.build().unwrap();
            r.label = "torus(dim=1, n=5)".into();
            r
        });
        // n = 2 wraps onto the same neighbour: one link per pair.
        assert_eq!(Preset::Torus { dim: 2, n: 2 }.build().unwrap().n_links(), 4);
        assert!(Preset::Torus { dim: 4, n: 2 }.build().is_err());
    }

    #[test]
    fn random_graphs_are_seeded_and_connected() {
        let a = Preset::Random {
            n: 200,
            degree: Some(4),
            p: None,
            seed: 7,
        }
        .build()
        .unwrap();
        let b = Preset::Random {
            n: 200,
            degree: Some(4),
            p: None,
            seed: 7,
        }
        .build()
        .unwrap();
        let c = Preset::Random {
            n: 200,
            degree: Some(4),
            p: None,
            seed: 8,
        }
        .build()
        .unwrap();
        assert_eq!(a, b);
        assert_ne!(a.edges(), c.edges());
        assert!(a.is_connected());
        assert_eq!(a.n_links(), 400);
        let g = Preset::Random {
            n: 100,
            degree: None,
            p: Some(0.1),
            seed: 1,
        }
        .build()
        .unwrap();
        // Expected 495 links; a seeded draw lands well within ±25 %.
        assert!((370..620).contains(&g.n_links()), "{}", g.n_links());
        assert!(
            Preset::Random {
                n: 10,
                degree: None,
                p: None,
                seed: 1
            }
            .build()
            .is_err()
        );
        assert!(
            Preset::Random {
                n: 10,
                degree: Some(10),
                p: None,
                seed: 1
            }
            .build()
            .is_err()
        );
    }
}
