//! The `[topology]` table, written the seeds' way: `type = "<name>"` and
//! `<name>_config = { … }`; custom `edges` with `n_nodes`; bare `n_nodes`; or `type = "file"`
//! with `file = "path"` (GraphML or node-link JSON).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Preset, Topology, TopologyError};

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologySpec {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub n_nodes: Option<u32>,
    pub edges: Option<Vec<[u32; 2]>>,
    pub ring_config: Option<NodesConfig>,
    pub line_config: Option<NodesConfig>,
    pub star_config: Option<NodesConfig>,
    pub full_mesh_config: Option<NodesConfig>,
    pub tree_config: Option<TreeConfig>,
    pub fat_tree_config: Option<FatTreeConfig>,
    pub torus_config: Option<TorusConfig>,
    pub random_config: Option<RandomConfig>,
    /// For `type = "file"`: a GraphML (`.graphml`, `.xml`) or node-link JSON (`.json`) file,
    /// relative to the config file.
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodesConfig {
    pub n_nodes: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeConfig {
    pub depth: u32,
    pub fanout: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FatTreeConfig {
    pub k: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TorusConfig {
    pub dim: u32,
    pub n: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomConfig {
    pub n_nodes: u32,
    pub degree: Option<u32>,
    pub p: Option<f64>,
    #[serde(default)]
    pub seed: u64,
}

pub const KNOWN_TYPES: &str = "ring, line, star, full_mesh, tree, fat_tree, torus, random, file";

fn invalid(msg: String) -> TopologyError {
    TopologyError::Invalid(msg)
}

impl TopologySpec {
    /// A preset from the command line, e.g. `ring,100`, `fat_tree,4`, `torus,2,10`,
    /// `tree,3,2`, `random,100,4`, `line,8`.
    pub fn from_short(s: &str) -> Result<Self, TopologyError> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        let num = |i: usize| -> Result<u32, TopologyError> {
            parts
                .get(i)
                .ok_or_else(|| invalid(format!("`{s}`: {} needs more numbers", parts[0])))?
                .parse()
                .map_err(|_| invalid(format!("`{s}`: `{}` is not a number", parts[i])))
        };
        let mut spec = TopologySpec {
            kind: Some(parts[0].to_owned()),
            ..Default::default()
        };
        match parts[0] {
            "ring" => spec.ring_config = Some(NodesConfig { n_nodes: num(1)? }),
            "line" => spec.line_config = Some(NodesConfig { n_nodes: num(1)? }),
            "star" => spec.star_config = Some(NodesConfig { n_nodes: num(1)? }),
            "full_mesh" => spec.full_mesh_config = Some(NodesConfig { n_nodes: num(1)? }),
            "tree" => {
                spec.tree_config = Some(TreeConfig {
                    depth: num(1)?,
                    fanout: num(2)?,
                })
            }
            "fat_tree" => spec.fat_tree_config = Some(FatTreeConfig { k: num(1)? }),
            "torus" => {
                spec.torus_config = Some(TorusConfig {
                    dim: num(1)?,
                    n: num(2)?,
                })
            }
            "random" => {
                spec.random_config = Some(RandomConfig {
                    n_nodes: num(1)?,
                    degree: Some(num(2)?),
                    p: None,
                    seed: parts.get(3).and_then(|x| x.parse().ok()).unwrap_or(0),
                })
            }
            "n_nodes" | "bare" => {
                spec.kind = None;
                spec.n_nodes = Some(num(1)?);
            }
            other => {
                return Err(invalid(format!(
                    "unknown topology type `{other}`: use one of {KNOWN_TYPES}, or n_nodes"
                )));
            }
        }
        Ok(spec)
    }

    /// Builds the topology. `file` is the text of `self.file` when the type is `file` (the
    /// caller reads it; this crate does no I/O).
    pub fn build(&self, file: Option<&str>) -> Result<Topology, TopologyError> {
        let missing = |name: &str| {
            invalid(format!(
                "topology type `{name}` needs `{name}_config = {{ … }}` in [topology]"
            ))
        };
        let mut topology = match self.kind.as_deref() {
            None => {
                let n = self
                    .n_nodes
                    .ok_or_else(|| invalid("[topology] needs `type` or `n_nodes`".to_owned()))?;
                Preset::Bare { n }.build()?
            }
            Some("ring") => {
                let c = self.ring_config.ok_or_else(|| missing("ring"))?;
                Preset::Ring { n: c.n_nodes }.build()?
            }
            Some("line") => {
                let c = self.line_config.ok_or_else(|| missing("line"))?;
                Preset::Line { n: c.n_nodes }.build()?
            }
            Some("star") => {
                let c = self.star_config.ok_or_else(|| missing("star"))?;
                Preset::Star { n: c.n_nodes }.build()?
            }
            Some("full_mesh") => {
                let c = self.full_mesh_config.ok_or_else(|| missing("full_mesh"))?;
                Preset::FullMesh { n: c.n_nodes }.build()?
            }
            Some("tree") => {
                let c = self.tree_config.ok_or_else(|| missing("tree"))?;
                Preset::Tree {
                    depth: c.depth,
                    fanout: c.fanout,
                }
                .build()?
            }
            Some("fat_tree") => {
                let c = self.fat_tree_config.ok_or_else(|| missing("fat_tree"))?;
                Preset::FatTree { k: c.k }.build()?
            }
            Some("torus") => {
                let c = self.torus_config.ok_or_else(|| missing("torus"))?;
                Preset::Torus { dim: c.dim, n: c.n }.build()?
            }
            Some("random") => {
                let c = self.random_config.ok_or_else(|| missing("random"))?;
                Preset::Random {
                    n: c.n_nodes,
                    degree: c.degree,
                    p: c.p,
                    seed: c.seed,
                }
                .build()?
            }
            Some("file") => {
                let path = self.file.as_ref().ok_or_else(|| {
                    invalid("topology type `file` needs `file = \"path\"`".to_owned())
                })?;
                let text = file.ok_or_else(|| {
                    invalid(format!("the contents of {} were not read", path.display()))
                })?;
                resolve_file(path, text)?
            }
            Some(other) => {
                return Err(invalid(format!(
                    "unknown topology type `{other}`: use one of {KNOWN_TYPES}"
                )));
            }
        };
        if let Some(n) = self.n_nodes
            && self.kind.is_some()
            && n != topology.n_nodes()
        {
            return Err(invalid(format!(
                "[topology] n_nodes = {n} but the {} has {} nodes",
                topology.label,
                topology.n_nodes()
            )));
        }
        if let Some(edges) = &self.edges {
            let extra: Vec<(u32, u32)> = edges.iter().map(|[a, b]| (*a, *b)).collect();
            // One link per pair: a pair listed twice is a slip (or a second link we can't
            // make), not something to merge quietly.
            let mut seen = std::collections::HashMap::new();
            for (i, &(a, b)) in extra.iter().enumerate() {
                if let Some(first) = seen.insert((a.min(b), a.max(b)), i) {
                    let [fa, fb] = edges[first];
                    return Err(invalid(format!(
                        "edges lists the link {}-{} twice ([{fa}, {fb}] and [{a}, {b}]): there is one link per pair of nodes; remove one",
                        a.min(b),
                        a.max(b)
                    )));
                }
            }
            if self.kind.is_none() {
                topology.label = format!("edges({} nodes)", topology.n_nodes());
            }
            topology.union_edges(&extra)?;
        }
        Ok(topology)
    }
}

/// Parses a topology file by its extension: `.graphml`/`.xml` as GraphML, `.json` as networkx
/// node-link JSON.
pub fn resolve_file(path: &Path, text: &str) -> Result<Topology, TopologyError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let mut t = match ext.as_str() {
        "graphml" | "xml" => crate::from_graphml(text)?,
        "json" => crate::from_node_link_json(text)?,
        _ => {
            return Err(invalid(format!(
                "{name}: use a .graphml (Internet Topology Zoo) or .json (networkx node-link) file"
            )));
        }
    };
    t.label = format!("file({name})");
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TopologySpec, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn the_seeds_forms_parse() {
        let t = parse("type = \"ring\"\nring_config = { n_nodes = 600 }").unwrap();
        assert_eq!(t.build(None).unwrap().n_links(), 600);
        let t = parse("type = \"fat_tree\"\nfat_tree_config = { k = 4 }").unwrap();
        assert_eq!(t.build(None).unwrap().n_nodes(), 36);
        let t = parse("type = \"torus\"\ntorus_config = { dim = 2, n = 4 }").unwrap();
        assert_eq!(t.build(None).unwrap().n_nodes(), 16);
        let t = parse("n_nodes = 10000").unwrap();
        let built = t.build(None).unwrap();
        assert_eq!((built.n_nodes(), built.n_links()), (10000, 0));
        let t = parse("n_nodes = 4\nedges = [[2, 1], [2, 3], [3, 4]]").unwrap();
        assert_eq!(t.build(None).unwrap().edges(), &[(1, 2), (2, 3), (3, 4)]);
        let t = parse("n_nodes = 4\nedges = [[1, 2], [2, 3], [3, 4], [2, 1]]").unwrap();
        let e = t.build(None).unwrap_err().to_string();
        assert!(
            e.contains("edges lists the link 1-2 twice ([1, 2] and [2, 1])"),
            "{e}"
        );
        let t = parse("type = \"line\"\nline_config = { n_nodes = 4 }").unwrap();
        assert_eq!(t.build(None).unwrap().n_links(), 3);
    }

    #[test]
    fn preset_and_edges_are_unioned() {
        let t = parse("type = \"line\"\nline_config = { n_nodes = 4 }\nedges = [[4, 1]]").unwrap();
        assert_eq!(
            t.build(None).unwrap().edges(),
            &[(1, 2), (1, 4), (2, 3), (3, 4)]
        );
    }

    #[test]
    fn mistakes_are_named() {
        let e = parse("type = \"ring\"\nring_confg = { n_nodes = 4 }").unwrap_err();
        assert!(e.to_string().contains("ring_confg"), "{e}");
        let e = parse("type = \"ring\"\nring_config = { n_nodes = \"four\" }").unwrap_err();
        assert!(
            e.to_string().contains("n_nodes") || e.to_string().contains("integer"),
            "{e}"
        );
        let t = parse("type = \"hypercube\"").unwrap();
        let e = t.build(None).unwrap_err().to_string();
        assert!(e.contains("unknown topology type `hypercube`"), "{e}");
        let t = parse("type = \"ring\"").unwrap();
        assert!(
            t.build(None)
                .unwrap_err()
                .to_string()
                .contains("ring_config")
        );
        let t = parse("type = \"ring\"\nring_config = { n_nodes = 5 }\nn_nodes = 6").unwrap();
        assert!(
            t.build(None)
                .unwrap_err()
                .to_string()
                .contains("n_nodes = 6")
        );
        let t = parse("n_nodes = 3\nedges = [[1, 9]]").unwrap();
        assert!(t.build(None).is_err());
    }

    #[test]
    fn short_forms() {
        let t = TopologySpec::from_short("ring,100")
            .unwrap()
            .build(None)
            .unwrap();
        assert_eq!(t.n_nodes(), 100);
        let t = TopologySpec::from_short("fat_tree,4")
            .unwrap()
            .build(None)
            .unwrap();
        assert_eq!(t.n_nodes(), 36);
        let t = TopologySpec::from_short("torus,2,5")
            .unwrap()
            .build(None)
            .unwrap();
        assert_eq!(t.n_nodes(), 25);
        let t = TopologySpec::from_short("n_nodes,50")
            .unwrap()
            .build(None)
            .unwrap();
        assert_eq!(t.n_links(), 0);
        assert!(TopologySpec::from_short("ring").is_err());
        assert!(TopologySpec::from_short("ring,x").is_err());
        assert!(TopologySpec::from_short("blob,3").is_err());
    }
}
