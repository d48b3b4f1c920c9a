//! Signals at every moment of a run, on the real kernel: SIGINT, SIGTERM and SIGKILL to `up`
//! (which is also the controller) and to its agent, while the nodes are plumbed, while they
//! wire, while traffic crosses the ring, and while `down` tears it down. After each: the
//! processes end, `nextmini cleanup` succeeds, and nothing of the prefix is left. A signal the
//! process can handle leaves nothing even before the cleanup; so does SIGKILL of `up` (its
//! agent tears down on its own); SIGKILL of the agent leaves its nodes to `cleanup`, and a
//! `down` that was running says so (non-zero) unless nothing was left.
//!
//! Prefix `tfm`, underlay 172.20.228.0, a state directory and port per case.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

mod common;
use common::{Kill, Scratch, free_port, leftovers, nextmini, text};

const PREFIX: &str = "tfm";
const NODES: u32 = 200;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Moment {
    Plumbing,
    Wiring,
    Traffic,
    Teardown,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Up,
    Agent,
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn alive(pid: u32) -> bool {
    // A zombie is gone for our purposes (its parent has not reaped it yet).
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

fn namespaces() -> usize {
    leftovers(PREFIX)
        .iter()
        .filter(|l| l.starts_with("netns"))
        .count()
}

fn status(port: &str) -> serde_json::Value {
    ureq::get(&format!("http://127.0.0.1:{port}/api/status"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .and_then(|b| serde_json::from_str(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// One case: a ring brought up, `signal` sent to `target` at `moment`, then the checks.
fn case(s: &Scratch, target: Target, signal: Signal, moment: Moment) {
    let what = format!("{signal:?} to {target:?} while {moment:?}");
    let port = free_port().to_string();
    let state = s.dir.join(format!("{target:?}-{signal:?}-{moment:?}"));
    let state = state.to_str().unwrap();
    let mut up = Kill(
        Command::new(env!("CARGO_BIN_EXE_nextmini"))
            .args(["up", "--topo", &format!("ring,{NODES}")])
            .args([
                "--prefix",
                PREFIX,
                "--base",
                "172.20.228.0",
                "--port",
                &port,
            ])
            .args(["--state-dir", state])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Read as it comes, so that `up` never waits on a full pipe.
    let up_stderr = up.0.stderr.take().unwrap();
    let up_said = std::thread::spawn(move || {
        let mut said = String::new();
        let _ = std::io::Read::read_to_string(&mut { up_stderr }, &mut said);
        said
    });
    let prefix = hostnet::Prefix::new(PREFIX).unwrap();
    let limit = Duration::from_secs(60);
    let mut agent = None;
    wait_until(
        &format!("{what}: the agent claims the prefix"),
        limit,
        || {
            agent = hostnet::claim::PrefixClaim::holder(&prefix).unwrap();
            agent.is_some()
        },
    );
    let agent = agent.unwrap();
    let ready = |port: &str| status(port)["phase"] == "ready";
    let mut down = None;
    let mut traffic = None;
    match moment {
        Moment::Plumbing => wait_until(&format!("{what}: plumbing begins"), limit, || {
            namespaces() > 0
        }),
        Moment::Wiring => wait_until(&format!("{what}: wiring begins"), limit, || {
            let s = status(&port);
            s["plumbed"].as_u64() == Some(u64::from(NODES)) || s["phase"] == "ready"
        }),
        Moment::Traffic => {
            wait_until(&format!("{what}: ready"), limit, || ready(&port));
            let far = format!("10.0.0.{}", NODES / 2);
            traffic = Some(Kill(
                Command::new(env!("CARGO_BIN_EXE_nextmini"))
                    .args(["exec", "1", "--state-dir", state, "--"])
                    .args(["ping", "-i", "0.01", "-q", &far])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            ));
            std::thread::sleep(Duration::from_millis(200));
        }
        Moment::Teardown => {
            // `down` finds the run by its file, written just after it is ready.
            let run_file = std::path::Path::new(state).join("run.json");
            wait_until(&format!("{what}: ready"), limit, || {
                ready(&port) && run_file.exists()
            });
            let mut started = Command::new(env!("CARGO_BIN_EXE_nextmini"))
                .args(["down", "--state-dir", state])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // The first nodes are gone: teardown is under way (or already over).
            wait_until(&format!("{what}: teardown begins"), limit, || {
                namespaces() < NODES as usize
                    || !alive(agent)
                    || started.try_wait().unwrap().is_some()
            });
            down = Some(started);
        }
    }
    let pid = match target {
        Target::Up => up.0.id(),
        Target::Agent => agent,
    };
    // The target may have ended by itself already (a teardown that was quick).
    let _ = kill(Pid::from_raw(pid as i32), signal);
    wait_until(&format!("{what}: up ends"), limit, || {
        up.0.try_wait().unwrap().is_some()
    });
    wait_until(&format!("{what}: the agent ends"), limit, || !alive(agent));
    drop(traffic);
    let up_said = up_said.join().unwrap();
    if let Some(down) = down {
        let out = down.wait_with_output().unwrap();
        let said = text(&out.stderr);
        assert!(!said.contains("no running experiment"), "{what}: {said}");
        if out.status.success() {
            assert_eq!(
                leftovers(PREFIX),
                Vec::<String>::new(),
                "{what}: down said it was down: {}",
                text(&out.stdout)
            );
        }
    }
    let handled = signal != Signal::SIGKILL || target == Target::Up;
    if handled {
        // The agent lets its prefix go just after its last namespace.
        wait_until(&format!("{what}: the prefix is let go"), limit, || {
            hostnet::claim::PrefixClaim::holder(&prefix)
                .unwrap()
                .is_none()
        });
        assert_eq!(
            leftovers(PREFIX),
            Vec::<String>::new(),
            "{what}: left without cleanup; up said: {up_said}"
        );
    } else {
        assert!(
            !up.0.try_wait().unwrap().unwrap().success(),
            "{what}: up succeeded; it said: {up_said}"
        );
    }
    let cleanup = nextmini(&["cleanup", "--prefix", PREFIX]);
    assert!(
        cleanup.status.success(),
        "{what}: cleanup: {}",
        text(&cleanup.stderr)
    );
    assert_eq!(
        leftovers(PREFIX),
        Vec::<String>::new(),
        "{what}: after cleanup"
    );
}

#[test]
fn signals_at_every_moment_of_a_run_leave_nothing_after_cleanup() {
    let s = Scratch::new(PREFIX);
    for moment in [
        Moment::Plumbing,
        Moment::Wiring,
        Moment::Traffic,
        Moment::Teardown,
    ] {
        for target in [Target::Up, Target::Agent] {
            for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGKILL] {
                case(&s, target, signal, moment);
            }
        }
    }
}
