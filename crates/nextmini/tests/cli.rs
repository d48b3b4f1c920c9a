//! The `nextmini` binary as a user runs it, as root, on the real kernel. Each test owns a prefix
//! and subnet; a guard sweeps its prefix when the test ends, also on failure.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use hostnet::Prefix;

mod common;
use common::{NETNS_DIR, leftovers, nextmini};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Sweeps a prefix when dropped, so a failing test leaves nothing behind.
struct Sweep(&'static str);

impl Drop for Sweep {
    fn drop(&mut self) {
        let _ = hostnet::cleanup::sweep(&Prefix::new(self.0).unwrap(), Path::new(NETNS_DIR));
    }
}

#[test]
fn sigkill_during_creation_then_cleanup_leaves_nothing() {
    let _sweep = Sweep("tka");
    let mut child = Command::new(env!("CARGO_BIN_EXE_nextmini"))
        .args([
            "plumb",
            "-n",
            "3000",
            "--prefix",
            "tka",
            "--base",
            "172.20.64.0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until creation is well under way (bounded), then kill it without warning.
    let started = Instant::now();
    let count = || {
        leftovers("tka")
            .iter()
            .filter(|l| l.starts_with("veth"))
            .count()
    };
    while count() < 200 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "creation never got going"
        );
        assert!(child.try_wait().unwrap().is_none(), "plumb exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL, to this child's PID
    child.wait().unwrap();
    assert!(
        !leftovers("tka").is_empty(),
        "a killed run leaves its mounts and bridges"
    );

    let out = nextmini(&["cleanup", "--prefix", "tka"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("removed prefix tka"),
        "{}",
        stdout(&out)
    );
    assert_eq!(leftovers("tka"), Vec::<String>::new());

    let again = nextmini(&["cleanup", "--prefix", "tka"]);
    assert!(again.status.success());
    assert!(
        stdout(&again).contains("nothing of prefix tka"),
        "{}",
        stdout(&again)
    );
}

#[test]
fn plumb_creates_prints_and_tears_down() {
    let _sweep = Sweep("tkb");
    let out = nextmini(&[
        "plumb",
        "-n",
        "30",
        "--prefix",
        "tkb",
        "--base",
        "172.20.80.0",
        "--exit",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("30 nodes plumbed in"), "{text}");
    assert!(
        text.contains("node 1 is 172.20.80.2 in namespace tkb1"),
        "{text}"
    );
    assert!(text.contains("torn down in"), "{text}");
    assert_eq!(leftovers("tkb"), Vec::<String>::new());
}

#[test]
fn sigterm_while_holding_tears_down() {
    let _sweep = Sweep("tkc");
    let mut child = Command::new(env!("CARGO_BIN_EXE_nextmini"))
        .args([
            "plumb",
            "-n",
            "20",
            "--prefix",
            "tkc",
            "--base",
            "172.20.84.0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The "holding" line says creation is done.
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    assert!(lines.any(|l| l.unwrap().starts_with("holding")));
    assert_eq!(
        leftovers("tkc")
            .iter()
            .filter(|l| l.starts_with("veth"))
            .count(),
        20
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(leftovers("tkc"), Vec::<String>::new());
}

#[test]
fn a_non_root_user_gets_one_clear_line() {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_nextmini"))
        .args(["plumb", "-n", "2", "--prefix", "tkd"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: nextmini plumb needs root"), "{err}");
}

#[test]
fn bad_input_gets_one_clear_line() {
    for (args, expect) in [
        (
            vec!["plumb", "-n", "2", "--prefix", "Bad-Prefix"],
            "invalid prefix",
        ),
        (
            vec!["plumb", "-n", "0", "--prefix", "tke"],
            "at least one node",
        ),
        (
            vec![
                "plumb",
                "-n",
                "2",
                "--prefix",
                "tke",
                "--base",
                "172.20.89.0",
            ],
            "not aligned",
        ),
        (vec!["cleanup", "--prefix", "nm1"], "invalid prefix"),
        (
            vec![
                "up",
                "--topo",
                "ring,10",
                "--n-nodes",
                "20",
                "--prefix",
                "tke",
                "--base",
                "172.20.88.0",
            ],
            "--topo ring,10 has 10 nodes but --n-nodes says 20",
        ),
    ] {
        let out = nextmini(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(expect),
            "{args:?}: {err}"
        );
    }
    assert_eq!(leftovers("tke"), Vec::<String>::new());
}

#[test]
fn sysctl_only_raises_limits_and_creates_nothing() {
    let out = nextmini(&["plumb", "-n", "4000", "--prefix", "tkf", "--sysctl-only"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let sysctl = hostnet::tuning::Sysctl::default();
    assert!(sysctl.read("net/ipv4/neigh/default/gc_thresh3").unwrap() >= 8 * 4000);
    assert!(sysctl.read("net/core/netdev_max_backlog").unwrap() >= 50 * 4000);
    assert_eq!(leftovers("tkf"), Vec::<String>::new());
}
