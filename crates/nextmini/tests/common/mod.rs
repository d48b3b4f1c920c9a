//! Helpers shared by the integration tests: running the binary and looking for leftovers.
#![allow(dead_code)] // each test file uses its own subset

pub mod cluster;

use std::path::Path;
use std::process::{Command, Output};

use hostnet::Prefix;

pub const NETNS_DIR: &str = "/run/netns";

pub fn nextmini(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nextmini"))
        .args(args)
        .output()
        .expect("running nextmini")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Everything of `prefix` still on the host (namespaces, mounts, veths, bridges).
pub fn leftovers(prefix: &str) -> Vec<String> {
    hostnet::cleanup::find(&Prefix::new(prefix).unwrap(), Path::new(NETNS_DIR)).unwrap()
}

/// A free TCP port (the kernel's choice), for a test's controller.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The addresses of traceroute's hops, in order.
pub fn hops(traceroute: &[u8]) -> Vec<String> {
    text(traceroute)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .collect()
}
