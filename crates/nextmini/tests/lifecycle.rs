//! Runs that end badly, on the real kernel: interrupted while plumbing, killed while running,
//! two runs wanting one state directory. Each test owns a prefix, an underlay subnet, a port
//! and a state directory, swept when it ends, also on failure.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

mod common;
use common::{Kill, Scratch, free_port, leftovers, nextmini, text};

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ctrl_c_while_plumbing_leaves_nothing_and_says_so() {
    let s = Scratch::new("tqa");
    let port = free_port().to_string();
    // Its own process group, as a terminal would make it: Ctrl-C reaches `up` and its agent.
    let up = Command::new(env!("CARGO_BIN_EXE_nextmini"))
        .args([
            "up",
            "--topo",
            "ring,300",
            "--prefix",
            "tqa",
            "--base",
            "172.20.204.0",
            "--port",
            &port,
            "--state-dir",
            s.state(),
            "--exit-when-ready",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    // Interrupt once plumbing has begun and before it is done.
    wait_until("plumbing begins", Duration::from_secs(30), || {
        leftovers("tqa").iter().any(|l| l.starts_with("netns"))
    });
    kill(Pid::from_raw(-(up.id() as i32)), Signal::SIGINT).unwrap();
    let out = up.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_eq!(leftovers("tqa"), Vec::<String>::new());
}

#[test]
fn a_killed_run_is_recognised_cleared_and_its_directory_reused() {
    let s = Scratch::new("tqb");
    let port = free_port().to_string();
    let up = |extra: &[&str]| {
        let mut args = vec![
            "up",
            "--topo",
            "ring,4",
            "--prefix",
            "tqb",
            "--base",
            "172.20.208.0",
            "--port",
            &port,
            "--state-dir",
            s.state(),
            "--detach",
        ];
        args.extend_from_slice(extra);
        nextmini(&args)
    };
    let first = up(&[]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    // A second run on the same state directory is refused while the first lives.
    let second = nextmini(&[
        "up",
        "--topo",
        "ring,3",
        "--prefix",
        "tqc",
        "--base",
        "172.20.212.0",
        "--state-dir",
        s.state(),
        "--exit-when-ready",
    ]);
    assert!(!second.status.success());
    assert!(
        text(&second.stderr).contains("an experiment is already running from"),
        "{}",
        text(&second.stderr)
    );
    assert_eq!(leftovers("tqc"), Vec::<String>::new());
    // Kill the run's process outright; its agent notices and removes the nodes.
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.dir.join("run.json")).unwrap()).unwrap();
    let pid = run["pid"].as_u64().unwrap() as i32;
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    // Done when nothing is left and the agent has let its prefix go (just after).
    let prefix = hostnet::Prefix::new("tqb").unwrap();
    wait_until("the agent tears down", Duration::from_secs(30), || {
        leftovers("tqb").is_empty()
            && hostnet::claim::PrefixClaim::holder(&prefix)
                .unwrap()
                .is_none()
    });
    let status = nextmini(&["status", "--state-dir", s.state()]);
    assert!(!status.status.success());
    assert!(
        text(&status.stderr).contains("is gone (its process"),
        "{}",
        text(&status.stderr)
    );
    let down = nextmini(&["down", "--state-dir", s.state()]);
    assert!(down.status.success(), "{}", text(&down.stderr));
    assert!(
        text(&down.stdout).contains("was already gone"),
        "{}",
        text(&down.stdout)
    );
    assert!(!s.dir.join("run.json").exists());
    // The directory is free again.
    let again = up(&[]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    let down = nextmini(&["down", "--state-dir", s.state()]);
    assert!(down.status.success(), "{}", text(&down.stderr));
    assert_eq!(leftovers("tqb"), Vec::<String>::new());
}

#[test]
fn an_underlay_base_in_use_reserved_or_on_the_overlay_is_refused() {
    let s = Scratch::new("tqd");
    let other = Scratch::new("tqe");
    let up = |scratch: &Scratch, base: &str, extra: &[&str]| {
        let port = free_port().to_string();
        let mut args = vec![
            "up",
            "--topo",
            "ring,4",
            "--prefix",
            scratch.prefix,
            "--base",
            base,
            "--port",
            &port,
            "--state-dir",
            scratch.state(),
        ];
        args.extend_from_slice(extra);
        nextmini(&args)
    };
    for (base, says) in [
        (
            "127.0.0.0",
            "127.0.0.0/8 (loopback), which can't carry the run's bridges",
        ),
        ("10.0.0.0", "overlaps the overlay"),
    ] {
        let out = up(&other, base, &["--exit-when-ready"]);
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains(says),
            "{base}: {}",
            text(&out.stderr)
        );
    }
    let first = up(&s, "172.20.216.0", &["--detach"]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    // Another prefix on the same base: its bridge would have the same gateway address.
    let second = up(&other, "172.20.216.0", &["--exit-when-ready"]);
    assert!(!second.status.success());
    let said = text(&second.stderr);
    assert!(
        said.contains("overlaps 172.20.216.1 on tqdbr0") && said.contains("choose another --base"),
        "{said}"
    );
    assert_eq!(leftovers("tqe"), Vec::<String>::new());
    let status = nextmini(&["status", "--state-dir", s.state()]);
    assert!(
        text(&status.stdout).contains("| ready | ring(4) | 4 | 4 | 4 | 0 | 4 | 4 |"),
        "{}",
        text(&status.stdout)
    );
    let down = nextmini(&["down", "--state-dir", s.state()]);
    assert!(down.status.success(), "{}", text(&down.stderr));
}

#[test]
fn down_keep_leaves_the_nodes_for_the_next_up_of_the_layout_and_down_removes_them() {
    use std::os::unix::fs::MetadataExt;
    let s = Scratch::new("tqf");
    let port = free_port().to_string();
    let up = |nodes: &str| {
        let topo = format!("ring,{nodes}");
        let out = s.up(&topo, "172.20.248.0", &port, &[]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        out
    };
    let ping = || {
        let out = s.exec(1, &["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.0.4"]);
        assert!(out.status.success(), "{}", text(&out.stdout));
    };
    let down = |extra: &[&str]| {
        let mut args = vec!["down", "--state-dir", s.state()];
        args.extend_from_slice(extra);
        let out = nextmini(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    // The namespace's own identity (its nsfs inode), not the mount file's name.
    let identity = || std::fs::metadata("/run/netns/tqf1").unwrap().ino();

    up("6");
    ping();
    let first = identity();
    let said = down(&["--keep"]);
    assert!(said.contains("its 6 nodes are kept"), "{said}");
    assert!(!leftovers("tqf").is_empty(), "the nodes stay");
    let status = nextmini(&["status", "--state-dir", s.state()]);
    assert!(
        text(&status.stdout).contains("6 nodes of prefix tqf are kept"),
        "{}",
        text(&status.stdout)
    );

    // The same layout takes them over: the same namespaces, and traffic crosses them.
    let out = up("6");
    assert!(
        text(&out.stdout).contains("taking over the 6 nodes"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(identity(), first, "the kept namespace, not a new one");
    ping();
    down(&["--keep"]);

    // Another layout removes them first and plumbs its own.
    let out = up("4");
    assert!(
        text(&out.stdout).contains("removing the 6 nodes of prefix tqf"),
        "{}",
        text(&out.stdout)
    );
    assert_ne!(identity(), first);
    ping();
    down(&["--keep"]);

    // With nothing running, `down` removes what was kept.
    let said = down(&[]);
    assert!(said.contains("removed the 4 nodes of prefix tqf"), "{said}");
    assert_eq!(leftovers("tqf"), Vec::<String>::new());
    assert!(!s.dir.join("kept.json").exists());
}

#[test]
fn programs_left_running_in_nodes_end_with_down() {
    let s = Scratch::new("tqg");
    let port = free_port().to_string();
    let out = s.up("ring,3", "172.20.224.0", &port, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Started by hand and forgotten: `nextmini exec` becomes the program, so this is its pid.
    let mut forgotten = Kill(
        Command::new(env!("CARGO_BIN_EXE_nextmini"))
            .args(["exec", "2", "--state-dir", s.state(), "--", "sleep", "600"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = forgotten.0.id();
    wait_until(
        "the program runs in node 2",
        Duration::from_secs(10),
        || std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep"),
    );
    let down = nextmini(&["down", "--state-dir", s.state()]);
    assert!(down.status.success(), "{}", text(&down.stderr));
    wait_until(
        "the program ends with the run",
        Duration::from_secs(10),
        || forgotten.0.try_wait().unwrap().is_some(),
    );
    assert_eq!(leftovers("tqg"), Vec::<String>::new());
}
