//! What code inside an emulated node can reach of the controller, on the real kernel: node
//! sessions and the status at its gateway, nothing that changes or stops the experiment; and a
//! controller listening beyond this host wants the run's token. Each test owns a prefix, an
//! underlay subnet, a port and a state directory, swept when it ends, also on failure.

mod common;
use common::{Kill, Scratch, free_port, leftovers, nextmini, text};

fn up(s: &Scratch, base: &str, port: &str, extra: &[&str]) {
    let out = s.up("ring,6", base, port, extra);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Runs a Python program inside node `node`; its standard output.
fn in_node(s: &Scratch, node: &str, program: &str) -> String {
    let out = nextmini(&[
        "exec",
        node,
        "--state-dir",
        s.state(),
        "--",
        "python3",
        "-c",
        program,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn code_in_a_node_can_neither_stop_nor_change_the_experiment() {
    let s = Scratch::new("tsa");
    let port = free_port().to_string();
    up(&s, "172.20.192.0", &port, &[]);
    // Everything a node could try at its gateway (where its session goes), and at the host's
    // loopback (which is not the node's).
    let program = r#"
import os, socket, urllib.request, urllib.error
api = os.environ["NEXTMINI_API"]
def ask(method, path, body=None):
    req = urllib.request.Request(api + path, data=body, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError as e:
        return type(e).__name__
print("down", ask("POST", "/api/down", b"{}"))
print("link", ask("POST", "/api/links/1/2", b'{"up": false}'))
print("routes", ask("POST", "/api/routes", b'{"src": 1, "dst": 4, "path": [1, 6, 5, 4]}'))
print("flows", ask("POST", "/api/flows", b'{"src_node_id": 1, "dst_node_id": 2, "flow_spec": {"bytes": 1000}}'))
print("agent", ask("GET", "/agent"))
print("status", ask("GET", "/api/status"))
port = api.rsplit(":", 1)[1]
try:
    socket.create_connection(("127.0.0.1", int(port)), timeout=2).close()
    print("loopback open")
except OSError:
    print("loopback closed")
# Hold many idle connections: only a few are kept.
host = api.split("//")[1].rsplit(":", 1)[0]
held = []
for _ in range(200):
    c = socket.create_connection((host, int(port)), timeout=5)
    held.append(c)
kept = 0
for c in held:
    c.settimeout(3)
    try:
        kept += c.recv(1) != b""
    except socket.timeout:
        kept += 1
    except OSError:
        pass
print("kept", kept)
"#;
    let said = in_node(&s, "4", program);
    common::assert_probe_said(
        &said,
        &[
            "down 404",
            "link 404",
            "routes 404",
            "flows 404",
            "agent 404",
            "status 200",
            "loopback closed",
        ],
    );
    // The experiment is as it was, and its API answers on this host.
    let status = nextmini(&["status", "--state-dir", s.state()]);
    assert!(
        text(&status.stdout).contains("| ready | ring(6) | 6 | 6 | 6 | 0 | 6 | 6 |"),
        "{}{}",
        text(&status.stdout),
        text(&status.stderr)
    );
    let ping = s.exec(1, &["ping", "-c", "1", "-W", "2", "10.0.0.4"]);
    assert!(ping.status.success(), "{}", text(&ping.stdout));
    // The running experiment's prefix is not a crash's leftovers: cleanup refuses it, and a
    // second run can't plumb over it.
    let cleanup = nextmini(&["cleanup", "--prefix", "tsa"]);
    assert!(!cleanup.status.success());
    assert!(
        text(&cleanup.stderr).contains("prefix tsa belongs to a running experiment"),
        "{}",
        text(&cleanup.stderr)
    );
    let other = s.dir.join("second");
    let second = nextmini(&[
        "up",
        "--topo",
        "ring,3",
        "--prefix",
        "tsa",
        "--base",
        "172.20.200.0",
        "--port",
        &free_port().to_string(),
        "--state-dir",
        other.to_str().unwrap(),
        "--exit-when-ready",
    ]);
    assert!(!second.status.success());
    assert!(
        text(&second.stderr).contains("prefix tsa belongs to a running experiment"),
        "{}",
        text(&second.stderr)
    );
    let status = nextmini(&["status", "--state-dir", s.state()]);
    assert!(
        text(&status.stdout).contains("| ready | ring(6) | 6 | 6 | 6 | 0 | 6 | 6 |"),
        "{}",
        text(&status.stdout)
    );
    let down = nextmini(&["down", "--state-dir", s.state()]);
    assert!(down.status.success(), "{}", text(&down.stderr));
    assert_eq!(leftovers("tsa"), Vec::<String>::new());
    let after = nextmini(&["cleanup", "--prefix", "tsa"]);
    assert!(after.status.success(), "{}", text(&after.stderr));
}

#[test]
fn listening_beyond_this_host_needs_the_token() {
    let s = Scratch::new("tsb");
    let port = free_port().to_string();
    up(&s, "172.20.196.0", &port, &["--listen", "0.0.0.0"]);
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.dir.join("run.json")).unwrap()).unwrap();
    let token = run["token"].as_str().expect("a token was made").to_owned();
    assert_eq!(token.len(), 32);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.dir.join("run.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "run.json is readable by others: {mode:o}");
    // Without the token: refused, and nothing changed.
    let url = format!("http://127.0.0.1:{port}/api/links/1/2");
    let refused = ureq::post(&url)
        .header("content-type", "application/json")
        .send(r#"{"up": false}"#)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("401"), "{refused}");
    // An agent session without it too (the run's own agent got it and wired the ring).
    let agent = ureq::get(&format!("http://127.0.0.1:{port}/agent"))
        .call()
        .unwrap_err()
        .to_string();
    assert!(agent.contains("401"), "{agent}");
    // nextmini's commands send it.
    let set = nextmini(&[
        "link",
        "set",
        "1-2",
        "--delay",
        "7ms",
        "--state-dir",
        s.state(),
    ]);
    assert!(set.status.success(), "{}", text(&set.stderr));
    let show = text(&nextmini(&["link", "show", "1-2", "--state-dir", s.state()]).stdout);
    assert!(show.contains("| 1→2 | up | unshaped | 7ms |"), "{show}");
    let down = nextmini(&["down", "--state-dir", s.state()]);
    assert!(down.status.success(), "{}", text(&down.stderr));
    assert_eq!(leftovers("tsb"), Vec::<String>::new());
}

/// `nextmini agent` for `n` nodes of the controller at `controller`, with neither a token nor
/// a certificate from the environment (the caller gives what the case needs); its errors
/// piped.
fn agent_command(controller: &str, n: &str, prefix: &str, base: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_nextmini"));
    cmd.args(["agent", "--controller", controller, "--n-nodes", n])
        .args(["--prefix", prefix, "--base", base])
        .env_remove("NEXTMINI_TOKEN")
        .env_remove("NEXTMINI_CA")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    cmd
}

#[test]
fn a_controller_for_other_hosts_can_require_a_token_of_agents_and_changes() {
    use std::process::{Command, Stdio};
    let s = Scratch::new("tsc");
    let port = free_port();
    let file = s.dir.join("ring.toml");
    std::fs::write(
        &file,
        "[topology]\ntype = \"ring\"\nring_config = { n_nodes = 4 }\n",
    )
    .unwrap();
    let controller = Command::new(env!("CARGO_BIN_EXE_nextmini"))
        .args(["controller", "--config-path"])
        .arg(&file)
        .args([
            "--port",
            &port.to_string(),
            "--state-dir",
            s.state(),
            "--token",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut controller = Kill(controller);
    let token_file = s.dir.join("controller.token");
    let started = std::time::Instant::now();
    while ureq::get(&format!("http://127.0.0.1:{port}/api/status"))
        .call()
        .is_err()
    {
        assert!(
            started.elapsed().as_secs() < 20,
            "the controller did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
    let address = format!("127.0.0.1:{port}");
    let agent = |token: Option<&str>| {
        let mut cmd = agent_command(&address, "4", "tsc", "172.20.220.0");
        if let Some(t) = token {
            cmd.env("NEXTMINI_TOKEN", t);
        }
        cmd
    };
    // Without the token an agent is turned away before it creates anything.
    let refused = agent(None).output().unwrap();
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("set NEXTMINI_TOKEN"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(leftovers("tsc"), Vec::<String>::new());
    let wired = Kill(agent(Some(&token)).spawn().unwrap());
    let api = format!("127.0.0.1:{port}");
    // Reading stays open.
    let ready = || {
        ureq::get(&format!("http://{api}/api/status"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .is_some_and(|b| b.contains("\"phase\":\"ready\""))
    };
    while !ready() {
        assert!(started.elapsed().as_secs() < 60, "the ring never got ready");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Listening on every address, the controller is reachable from the nodes' gateway too:
    // it answers them the status only, and bounds their connections.
    let probe = common::in_netns(
        "tsc2",
        &["python3", "-c", common::NODE_PROBE, &port.to_string()],
    );
    common::assert_probe_saw_the_status_only(&text(&probe.stdout));
    // Changes: refused without it, taken with it (the CLI reads NEXTMINI_TOKEN with --api).
    let set = |token: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nextmini"));
        cmd.args(["link", "set", "1-2", "--delay", "3ms", "--api", &api])
            .env_remove("NEXTMINI_TOKEN");
        if let Some(t) = token {
            cmd.env("NEXTMINI_TOKEN", t);
        }
        cmd.output().unwrap()
    };
    let without = set(None);
    assert!(!without.status.success());
    assert!(
        text(&without.stderr).contains("token"),
        "{}",
        text(&without.stderr)
    );
    let with = set(Some(&token));
    assert!(with.status.success(), "{}", text(&with.stderr));
    let down = ureq::post(&format!("http://{api}/api/down"))
        .header("authorization", &format!("Bearer {token}"))
        .send_empty();
    assert!(down.is_ok(), "{down:?}");
    let mut wired = wired;
    assert!(wired.0.wait().unwrap().success());
    let _ = controller.0.wait();
    assert_eq!(leftovers("tsc"), Vec::<String>::new());
}

#[test]
fn a_controller_with_tls_takes_agents_and_commands_that_trust_its_certificate() {
    use std::process::{Command, Stdio};
    let s = Scratch::new("tsd");
    let port = free_port();
    let file = s.dir.join("ring.toml");
    std::fs::write(
        &file,
        "[topology]\ntype = \"ring\"\nring_config = { n_nodes = 3 }\n",
    )
    .unwrap();
    let _controller = Kill(
        Command::new(env!("CARGO_BIN_EXE_nextmini"))
            .args(["controller", "--config-path"])
            .arg(&file)
            .args([
                "--port",
                &port.to_string(),
                "--state-dir",
                s.state(),
                "--tls",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ca = s.dir.join("tls/cert.pem");
    let token_file = s.dir.join("controller.token");
    let started = std::time::Instant::now();
    while !(ca.exists() && token_file.exists()) {
        assert!(started.elapsed().as_secs() < 20, "no certificate made");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let token = std::fs::read_to_string(&token_file).unwrap();
    let api = format!("https://127.0.0.1:{port}");
    // The certificate is made at start; wait until it is served.
    let status = || common::cluster::get_json_trusting(&format!("{api}/api/status"), Some(&ca));
    while status().is_null() {
        assert!(
            started.elapsed().as_secs() < 20,
            "the controller did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Plain HTTP on its port gets nothing; an agent not given the certificate is told to.
    assert!(
        common::cluster::get_json_trusting(&format!("http://127.0.0.1:{port}/api/status"), None)
            .is_null()
    );
    let agent = |ca: Option<&std::path::Path>| {
        let mut cmd = agent_command(&api, "3", "tsd", "172.20.232.0");
        cmd.env("NEXTMINI_TOKEN", token.trim());
        if let Some(ca) = ca {
            cmd.env("NEXTMINI_CA", ca);
        }
        cmd
    };
    let refused = agent(None).output().unwrap();
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("NEXTMINI_CA"),
        "{}",
        text(&refused.stderr)
    );
    let mut wired = Kill(agent(Some(&ca)).spawn().unwrap());
    while status()["phase"] != "ready" {
        assert!(started.elapsed().as_secs() < 60, "the ring never got ready");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // A command over TLS with the certificate and the token changes a link.
    let set = Command::new(env!("CARGO_BIN_EXE_nextmini"))
        .args(["link", "set", "1-2", "--delay", "3ms", "--api", &api])
        .env("NEXTMINI_CA", &ca)
        .env("NEXTMINI_TOKEN", token.trim())
        .output()
        .unwrap();
    assert!(set.status.success(), "{}", text(&set.stderr));
    let ping = common::in_netns("tsd1", &["ping", "-c", "1", "-W", "2", "10.0.0.2"]);
    assert!(ping.status.success(), "{}", text(&ping.stdout));
    let down = common::cluster::post_trusting(&format!("{api}/api/down"), &ca, token.trim());
    assert_eq!(down, 202, "down is accepted");
    assert!(wired.0.wait().unwrap().success());
    assert_eq!(leftovers("tsd"), Vec::<String>::new());
}
