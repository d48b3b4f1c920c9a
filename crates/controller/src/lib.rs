//! nextmini's controller: the coordinator (a state machine: registration, dialling, readiness),
//! the server that drives it (WebSocket sessions, HTTP API), and the store.

pub mod coordinator;
pub mod head;
pub mod server;
pub mod store;
