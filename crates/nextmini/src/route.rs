//! `nextmini route set|clear|show`: routes changed while the experiment runs.

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use controller::coordinator::{RouteFilter, RouteRequest};

use crate::running::{LinkId, Target};

#[derive(Subcommand)]
pub enum RouteCommand {
    /// Pin the route from SRC to DST: --path 1,3,7,8 or --dag 1-3,3-8,1-2,2-8 [--flow ID]
    Set(RouteSetArgs),
    /// Unpin routes (all, those from SRC to DST, or one flow's); shortest paths again.
    Clear(RouteClearArgs),
    /// The pinned routes, or where traffic from SRC to DST goes now.
    Show(RouteShowArgs),
}

/// Node ids separated by commas: `1,3,7,8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePath(pub Vec<u32>);

impl std::str::FromStr for NodePath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',')
            .map(|n| n.trim().parse::<u32>())
            .collect::<Result<Vec<_>, _>>()
            .map(NodePath)
            .map_err(|_| format!("{s:?} is not a path: write node ids with commas, e.g. 1,3,7,8"))
    }
}

/// Directed edges separated by commas: `1-3,3-8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edges(pub Vec<(u32, u32)>);

impl std::str::FromStr for Edges {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',')
            .map(|e| e.parse::<LinkId>().map(|LinkId(a, b)| (a, b)))
            .collect::<Result<Vec<_>, _>>()
            .map(Edges)
            .map_err(|_| format!("{s:?} is not a list of edges: write them as 1-3,3-8"))
    }
}

#[derive(Args, Debug)]
pub struct RouteSetArgs {
    pub src: u32,
    pub dst: u32,
    /// The nodes in order, from SRC to DST.
    #[arg(long, conflicts_with = "dag", required_unless_present = "dag")]
    pub path: Option<NodePath>,
    /// Directed edges of a DAG from SRC to DST: flows split where it branches.
    #[arg(long)]
    pub dag: Option<Edges>,
    /// Only for this generated flow (`nextmini flow list`).
    #[arg(long)]
    pub flow: Option<u64>,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Args, Debug)]
pub struct RouteClearArgs {
    pub src: Option<u32>,
    #[arg(requires = "src")]
    pub dst: Option<u32>,
    #[arg(long)]
    pub flow: Option<u64>,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Args, Debug)]
pub struct RouteShowArgs {
    pub src: Option<u32>,
    #[arg(requires = "src")]
    pub dst: Option<u32>,
    /// With SRC DST: this flow's own path.
    #[arg(long, requires = "dst")]
    pub flow: Option<u64>,
    #[command(flatten)]
    pub target: Target,
}

impl RouteSetArgs {
    fn request(&self) -> Result<RouteRequest> {
        let edges = match (&self.path, &self.dag) {
            (Some(NodePath(nodes)), _) => {
                if nodes.first() != Some(&self.src) || nodes.last() != Some(&self.dst) {
                    bail!(
                        "the path must start at {} and end at {} (it is {})",
                        self.src,
                        self.dst,
                        nodes
                            .iter()
                            .map(u32::to_string)
                            .collect::<Vec<_>>()
                            .join(",")
                    );
                }
                RouteRequest::path(nodes, self.flow)
                    .map_err(anyhow::Error::msg)?
                    .edges
            }
            (None, Some(Edges(edges))) => edges.clone(),
            (None, None) => bail!("give the route: --path 1,3,7,8 or --dag 1-3,3-8"),
        };
        Ok(RouteRequest {
            src: self.src,
            dst: self.dst,
            edges,
            flow: self.flow,
        })
    }
}

pub fn run(cmd: RouteCommand) -> Result<()> {
    match cmd {
        RouteCommand::Set(args) => {
            let applied = args.target.client()?.set_route(&args.request()?)?;
            if applied.waits_for_flow {
                println!(
                    "route {} -> {} kept for flow {}: set once it opens its connection",
                    args.src,
                    args.dst,
                    args.flow.unwrap_or_default()
                );
            } else {
                println!(
                    "route {} -> {} in place: {} node(s) updated in {:.1} ms (version {})",
                    args.src, args.dst, applied.nodes, applied.applied_ms, applied.version
                );
            }
        }
        RouteCommand::Clear(args) => {
            let filter = RouteFilter {
                src: args.src,
                dst: args.dst,
                flow: args.flow,
            };
            let applied = args.target.client()?.clear_routes(&filter)?;
            println!(
                "routes cleared: {} node(s) updated in {:.1} ms",
                applied.nodes, applied.applied_ms
            );
        }
        RouteCommand::Show(args) => {
            let client = args.target.client()?;
            match (args.src, args.dst) {
                (Some(src), Some(dst)) => {
                    print!(
                        "{}",
                        controller::render::path(&client.route_path(src, dst, args.flow)?)
                    )
                }
                (Some(src), None) => {
                    let rows = client.routes()?;
                    print!(
                        "{}",
                        controller::render::routes(rows.iter().filter(|r| r.src == src))
                    );
                }
                _ => print!("{}", controller::render::routes(&client.routes()?)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_edges_read_as_written() {
        assert_eq!("1,3,7,8".parse(), Ok(NodePath(vec![1, 3, 7, 8])));
        assert!("1;3".parse::<NodePath>().is_err());
        assert_eq!("1-3,3-8".parse(), Ok(Edges(vec![(1, 3), (3, 8)])));
        assert!("1-3,3".parse::<Edges>().is_err());
    }
}
