//! Host plumbing for nextmini: the namespaces, veths, bridges, addresses and routes that give
//! each emulated node its place on a host's underlay, created and removed in bulk over
//! rtnetlink, plus the host tuning a large run needs and the sweep that removes what a crashed
//! run left.
//!
//! [`plan`] is pure arithmetic (addresses and names); [`Fabric`] builds a plan on the kernel;
//! [`cleanup::sweep`] removes a prefix's leftovers.

pub mod addresses;
pub mod bench;
pub mod claim;
pub mod cleanup;
pub mod fabric;
pub mod kernel;
pub mod monitor;
pub mod msg;
pub mod netns;
pub mod plan;
pub mod procfs;
pub mod rtnl;
pub mod tuning;

pub use fabric::{
    AdoptError, CreateError, Fabric, FabricSpec, Node, Step, TeardownStats, TunnelSpec,
};
pub use netns::NetNs;
pub use plan::{NodePlan, Prefix, UnderlayPlan};
