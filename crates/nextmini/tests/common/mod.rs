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

/// A test's own state directory and prefix: when the test ends (also by a failed assertion)
/// its run is taken down, everything of its prefix swept and the directory removed.
pub struct Scratch {
    pub prefix: &'static str,
    pub dir: std::path::PathBuf,
}

impl Scratch {
    pub fn new(prefix: &'static str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("nextmini-test-{prefix}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { prefix, dir }
    }

    pub fn state(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    /// `nextmini up --topo TOPO` detached in this test's state directory, with its prefix,
    /// underlay `base`, controller `port` and `extra` flags.
    pub fn up(&self, topo: &str, base: &str, port: &str, extra: &[&str]) -> Output {
        let mut args = vec![
            "up",
            "--topo",
            topo,
            "--prefix",
            self.prefix,
            "--base",
            base,
            "--port",
            port,
            "--state-dir",
            self.state(),
            "--detach",
        ];
        args.extend_from_slice(extra);
        nextmini(&args)
    }

    /// `nextmini exec NODE -- ARGS…` in this test's run.
    pub fn exec(&self, node: u32, args: &[&str]) -> Output {
        let node = node.to_string();
        let mut all = vec!["exec", node.as_str(), "--state-dir", self.state(), "--"];
        all.extend_from_slice(args);
        nextmini(&all)
    }
}

/// Runs `args` in the network namespace `netns` (a node of a run not started by `up`).
pub fn in_netns(netns: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", netns])
        .args(args)
        .output()
        .expect("running ip netns exec")
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.dir.join("run.json").exists() {
            let _ = nextmini(&["down", "--state-dir", self.state()]);
        }
        let _ = hostnet::cleanup::sweep(&Prefix::new(self.prefix).unwrap(), Path::new(NETNS_DIR));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A child stopped (by its PID) when the test ends, also on failure.
pub struct Kill(pub std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A counter of the TUN device in a node's namespace (`rx_packets`: what its dataplane wrote
/// up to its kernel; `tx_packets`: what its kernel sent out of it).
pub fn tun_counter(netns: &str, counter: &str) -> u64 {
    let out = in_netns(
        netns,
        &["cat", &format!("/sys/class/net/tun0/statistics/{counter}")],
    );
    text(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{netns}'s tun0 {counter}: {}", text(&out.stderr)))
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

/// `iperf3 -s -1` in a node of the run in `state`, returned once it listens (it prints its
/// banner then).
pub fn iperf3_server(state: &str, node: u32) -> std::process::Child {
    let mut server = Command::new(env!("CARGO_BIN_EXE_nextmini"))
        .args(["exec", &node.to_string(), "--state-dir", state, "--"])
        .args(["iperf3", "-s", "-1", "--forceflush"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(server.stdout.take().unwrap());
    let mut banner = String::new();
    while !banner.contains("Server listening") {
        let mut line = String::new();
        assert!(
            std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0,
            "iperf3 -s exited"
        );
        banner.push_str(&line);
    }
    // The rest is read and dropped: a closed pipe would end the server at its next line.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    server
}

/// A Python program for inside a node: asks the controller at the node's gateway and the
/// port given as its argument what a hostile program would, and prints `<what> <status>` per
/// line (`kept N`: of 40 idle connections, how many were still open 3 s later).
pub const NODE_PROBE: &str = r#"
import ipaddress, socket, subprocess, sys, time, urllib.request, urllib.error
port = int(sys.argv[1])
# The gateway: .1 of the node's underlay subnet (the interface that is not lo or the TUN).
gateway = None
for line in subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True).stdout.splitlines():
    f = line.split()
    iface = ipaddress.ip_interface(f[3])
    if f[1] != "lo" and iface.ip not in ipaddress.ip_network("10.0.0.0/8"):
        gateway = str(iface.network.network_address + 1)
api = "http://%s:%d" % (gateway, port)
def ask(method, path, body=None):
    req = urllib.request.Request(api + path, data=body, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError as e:
        return type(e).__name__
print("nodes", ask("GET", "/api/nodes"))
print("down", ask("POST", "/api/down", b"{}"))
print("link", ask("POST", "/api/links/1/2", b'{"up": false}'))
print("agent", ask("GET", "/agent"))
print("status", ask("GET", "/api/status"))
held = [socket.create_connection((gateway, port), timeout=5) for _ in range(40)]
time.sleep(3)
kept = 0
for c in held:
    c.setblocking(False)
    try:
        kept += c.recv(1) != b""
    except BlockingIOError:
        kept += 1
    except OSError:
        pass
print("kept", kept)
"#;

/// Checks what [`NODE_PROBE`] printed: the status only, and a few connections at a time.
pub fn assert_probe_saw_the_status_only(said: &str) {
    assert_probe_said(
        said,
        &[
            "nodes 404",
            "down 404",
            "link 404",
            "agent 404",
            "status 200",
        ],
    );
}

/// Checks that a probe printed each of `lines` and kept at most a node's few connections
/// (its `kept N` line).
pub fn assert_probe_said(said: &str, lines: &[&str]) {
    for line in lines {
        assert!(said.lines().any(|l| l == *line), "{line}: {said}");
    }
    let kept: usize = said
        .lines()
        .find_map(|l| l.strip_prefix("kept "))
        .unwrap_or_else(|| panic!("{said}"))
        .parse()
        .unwrap();
    assert!(kept <= controller::bounded::PER_PEER, "{said}");
}
