//! nextmini's head: pools the hosts whose agents register with it, and runs experiments on
//! them side by side (minimega's namespaces).
//!
//! - [`state`]: the bookkeeping, a state machine without sockets or clocks: hosts, experiments,
//!   their host sets, placement by the scheduler, launches, clears.
//! - [`server`]: `nextmini serve`, the HTTP API and the host agents' WebSocket sessions around
//!   it; each launched experiment gets a controller of its own.
//! - [`api`]: the requests and answers of the HTTP API, shared with [`client`].

pub mod api;
pub mod client;
pub mod offline;
pub mod render;
pub mod server;
pub mod state;
