//! `nextmini group create|list|join|leave|trees|delete`: multicast groups while the
//! experiment runs.

use std::net::Ipv4Addr;

use anyhow::Result;
use clap::{Args, Subcommand};
use controller::coordinator::GroupOp;
use topology::multicast::TreeSpec;

use crate::host::NodeIds;
use crate::route::Edges;
use crate::running::Target;

#[derive(Subcommand)]
pub enum GroupCommand {
    /// A group of SOURCE, at the pool's next address (or --address), with --members.
    Create(GroupCreateArgs),
    /// The groups: source, members, trees.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Nodes join GROUP (as a program in them joining it does).
    Join(GroupMembersArgs),
    /// Nodes leave GROUP.
    Leave(GroupMembersArgs),
    /// Set GROUP's trees: --tree ID:WEIGHT:EDGES (several for several trees), or --shortest.
    Trees(GroupTreesArgs),
    /// Remove GROUP.
    Delete {
        group: Ipv4Addr,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Args, Debug)]
pub struct GroupCreateArgs {
    /// The node that sends to the group.
    pub source: u32,
    /// Its members at once: 2-9,12.
    #[arg(long)]
    pub members: Option<NodeIds>,
    /// Its address, inside the run's multicast pool (239.255.0.0/16 unless the experiment
    /// says otherwise); else the pool's next free one.
    #[arg(long)]
    pub address: Option<Ipv4Addr>,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Args, Debug)]
pub struct GroupMembersArgs {
    pub group: Ipv4Addr,
    /// Node ids: 2-9,12.
    pub nodes: NodeIds,
    #[command(flatten)]
    pub target: Target,
}

/// One tree: `ID:WEIGHT:EDGES`, edges from parent to child (`1:2:1-3,3-8,3-9`).
#[derive(Debug, Clone, PartialEq)]
pub struct TreeArg(pub TreeSpec);

impl std::str::FromStr for TreeArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a tree: write ID:WEIGHT:EDGES, e.g. 1:2:1-3,3-8,3-9");
        let mut parts = s.splitn(3, ':');
        let (Some(id), Some(weight), Some(edges)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Ok(TreeArg(TreeSpec {
            tree_id: id.trim().parse().map_err(|_| bad())?,
            weight: weight.trim().parse().map_err(|_| bad())?,
            edges: edges.parse::<Edges>()?.0,
        }))
    }
}

#[derive(Args, Debug)]
pub struct GroupTreesArgs {
    pub group: Ipv4Addr,
    #[arg(long = "tree", required_unless_present = "shortest")]
    pub trees: Vec<TreeArg>,
    /// Back to the shortest-path tree.
    #[arg(long, conflicts_with = "trees")]
    pub shortest: bool,
    #[command(flatten)]
    pub target: Target,
}

pub fn run(cmd: GroupCommand) -> Result<()> {
    let (target, op) = match cmd {
        GroupCommand::List { target } => {
            print!(
                "{}",
                controller::render::groups(&target.client()?.groups()?)
            );
            return Ok(());
        }
        GroupCommand::Create(a) => (
            a.target,
            GroupOp::Create {
                source: a.source,
                address: a.address,
                members: a.members.map(|m| m.ids).unwrap_or_default(),
            },
        ),
        GroupCommand::Join(a) => (
            a.target,
            GroupOp::Join {
                group: a.group,
                nodes: a.nodes.ids,
            },
        ),
        GroupCommand::Leave(a) => (
            a.target,
            GroupOp::Leave {
                group: a.group,
                nodes: a.nodes.ids,
            },
        ),
        GroupCommand::Trees(a) => (
            a.target,
            GroupOp::Trees {
                group: a.group,
                trees: (!a.shortest).then(|| a.trees.into_iter().map(|t| t.0).collect()),
            },
        ),
        GroupCommand::Delete { group, target } => (target, GroupOp::Delete { group }),
    };
    let deleting = matches!(op, GroupOp::Delete { .. });
    let row = target.client()?.group(&op)?;
    if deleting {
        println!("group {} of node {} deleted", row.group, row.source);
    } else {
        print!("{}", controller::render::groups([&row]));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_read_as_written() {
        let TreeArg(t) = "2:1.5:1-3,3-8".parse().unwrap();
        assert_eq!(
            (t.tree_id, t.weight, t.edges),
            (2, 1.5, vec![(1, 3), (3, 8)])
        );
        assert!("1-3,3-8".parse::<TreeArg>().is_err());
        assert!("x:1:1-3".parse::<TreeArg>().is_err());
    }
}
