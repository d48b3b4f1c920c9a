//! nextmini's controller: the coordinator (a state machine: registration, dialling, readiness),
//! the server that drives it (WebSocket sessions, HTTP API), the store, starting a run, and the
//! HTTP client every command uses.

pub mod bounded;
pub mod client;
pub mod coordinator;
pub mod flows;
pub mod local;
pub mod metrics;
pub mod render;
pub mod run;
pub mod server;
pub mod store;
pub mod view;
