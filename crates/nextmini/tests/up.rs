//! `nextmini up` and friends as a user runs them, as root, on the real kernel, with real SQLite
//! and PostgreSQL. Each test owns a prefix, an underlay subnet, a controller port and a state
//! directory; a guard sweeps its prefix when it ends, also on failure.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};

use controller::store::{Store, Table};

mod common;
use common::{Scratch, free_port, leftovers, nextmini, text};

const PG_TEST_URL: &str = "postgres://pgusr:pgpwrd@127.0.0.1:5432/nextmini_test";

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

#[test]
fn a_30_node_ring_comes_up_with_every_link_and_leaves_nothing() {
    let s = Scratch::new("tua");
    let port = free_port().to_string();
    let summary = s.dir.join("summary.json");
    let out = nextmini(&[
        "up",
        "--topo",
        "ring,30",
        "--prefix",
        "tua",
        "--base",
        "172.20.96.0",
        "--port",
        &port,
        "--state-dir",
        s.state(),
        "--json",
        summary.to_str().unwrap(),
        "--exit-when-ready",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("| Topology | Nodes | Links | Plumbing | Wiring Time |"),
        "{stdout}"
    );
    let j = json(&summary);
    assert_eq!(j["nodes"], 30);
    assert_eq!(j["links"], 30);
    assert_eq!(j["links_up"], 30);
    assert_eq!(j["failed_nodes"], 0);
    assert!(j["wiring_seconds"].as_f64().unwrap() > 0.0);
    assert!(j["mem_per_node_bytes"].as_u64().is_some());
    assert_eq!(leftovers("tua"), Vec::<String>::new());

    // The embedded store recorded every node and exactly the ring's links, all up.
    let db = format!("sqlite://{}", s.dir.join("nextmini.db").display());
    rt().block_on(async {
        let store = Store::open(&db).await.unwrap();
        assert_eq!(store.count(Table::Nodes).await.unwrap(), 30);
        let links = store.link_rows().await.unwrap();
        let ring = topology::Preset::Ring { n: 30 }.build().unwrap();
        let expected: Vec<(u32, u32, bool)> =
            ring.edges().iter().map(|&(a, b)| (a, b, true)).collect();
        assert_eq!(links, expected);
    });
}

#[test]
fn a_detached_fat_tree_answers_status_exec_and_down() {
    let s = Scratch::new("tub");
    let port = free_port().to_string();
    let file = s.dir.join("ft.toml");
    std::fs::write(
        &file,
        "protocol = \"tcp\"\n[topology]\ntype = \"fat_tree\"\nfat_tree_config = { k = 4 }\n[node_settings]\nprefix = \"tub\"\nunderlay_base = \"172.20.100.0\"\n",
    )
    .unwrap();
    let out = nextmini(&[
        "up",
        file.to_str().unwrap(),
        "--port",
        &port,
        "--state-dir",
        s.state(),
        "--detach",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("running in the background"),
        "{}",
        text(&out.stdout)
    );

    let status = nextmini(&["status", "--state-dir", s.state()]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    let table = text(&status.stdout);
    // state | topology | nodes | connected | ready | failed | links | links up
    assert!(
        table.contains("| ready | fat_tree(k=4) | 36 | 36 | 36 | 0 | 48 | 48 |"),
        "{table}"
    );

    // exec runs in the node's own namespace: node 1 sees its underlay address on eth0.
    let addr = s.exec(1, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addr.status.success(), "{}", text(&addr.stderr));
    assert!(
        text(&addr.stdout).contains("172.20.100.2/22"),
        "{}",
        text(&addr.stdout)
    );
    let other = nextmini(&[
        "exec",
        "36",
        "--state-dir",
        s.state(),
        "--",
        "ip",
        "-4",
        "-o",
        "addr",
        "show",
        "dev",
        "eth0",
    ]);
    assert!(
        text(&other.stdout).contains("172.20.100.37/22"),
        "{}",
        text(&other.stdout)
    );
    // A program in a node learns its node, the overlay and the controller at its gateway,
    // and can reach it from there.
    let env = nextmini(&[
        "exec",
        "36",
        "--state-dir",
        s.state(),
        "--",
        "sh",
        "-c",
        "echo $NEXTMINI_NODE_ID $NEXTMINI_OVERLAY_BASE; python3 -c \"import os, urllib.request; print(urllib.request.urlopen(os.environ['NEXTMINI_API'] + '/api/status').read().decode())\"",
    ]);
    let env_text = text(&env.stdout);
    assert!(env_text.starts_with("36 10.0.0.0\n"), "{env_text}");
    assert!(
        env_text.contains("\"phase\":\"ready\""),
        "{env_text}{}",
        text(&env.stderr)
    );
    // The exit code passes through.
    let code = s.exec(7, &["sh", "-c", "exit 3"]);
    assert_eq!(code.status.code(), Some(3));
    let missing = nextmini(&["exec", "99", "--state-dir", s.state(), "--", "true"]);
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("node 99 is not part of experiment"),
        "{}",
        text(&missing.stderr)
    );

    let down = nextmini(&["down", "--state-dir", s.state()]);
    assert!(down.status.success(), "{}", text(&down.stderr));
    assert_eq!(leftovers("tub"), Vec::<String>::new());
    assert!(
        !nextmini(&["status", "--state-dir", s.state()])
            .status
            .success()
    );
}

#[test]
fn a_failing_node_does_not_stop_the_run() {
    let s = Scratch::new("tuc");
    let port = free_port().to_string();
    let summary = s.dir.join("summary.json");
    let out = nextmini(&[
        "up",
        "--topo",
        "ring,10",
        "--prefix",
        "tuc",
        "--base",
        "172.20.104.0",
        "--port",
        &port,
        "--state-dir",
        s.state(),
        "--json",
        summary.to_str().unwrap(),
        "--exit-when-ready",
        "--fail-node",
        "4",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let j = json(&summary);
    assert_eq!(j["failed_nodes"], 1);
    // The ring loses the two links of node 4; the other eight come up.
    assert_eq!(j["links_up"], 8);
    assert_eq!(leftovers("tuc"), Vec::<String>::new());
    let outside = nextmini(&[
        "up",
        "--topo",
        "ring,3",
        "--prefix",
        "tuc",
        "--state-dir",
        s.state(),
        "--fail-node",
        "9",
    ]);
    assert!(
        text(&outside.stderr).contains("--fail-node 9: the topology has nodes 1..=3"),
        "{}",
        text(&outside.stderr)
    );
    // Every node failing ends the run with the reason instead of waiting forever.
    let all = nextmini(&[
        "up",
        "--topo",
        "ring,3",
        "--prefix",
        "tuc",
        "--base",
        "172.20.104.0",
        "--port",
        &port,
        "--state-dir",
        s.state(),
        "--exit-when-ready",
        "--fail-node",
        "1",
        "--fail-node",
        "2",
        "--fail-node",
        "3",
    ]);
    assert!(!all.status.success());
    assert!(
        text(&all.stderr).contains("all 3 nodes failed"),
        "{}",
        text(&all.stderr)
    );
    assert_eq!(leftovers("tuc"), Vec::<String>::new());
}

#[test]
fn the_seeds_two_terminal_way_runs_their_example_configs() {
    let s = Scratch::new("tud");
    let port = free_port();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/namespace");
    // Terminal A: the controller with the seeds' controller config (PostgreSQL store).
    let mut controller = Command::new(env!("CARGO_BIN_EXE_nextmini"))
        .args(["controller", "--config-path"])
        .arg(examples.join("controller-config.toml"))
        .args([
            "--n-nodes",
            "20",
            "--port",
            &port.to_string(),
            "--state-dir",
            s.state(),
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(controller.stderr.take().unwrap()).lines();
    assert!(
        log.any(|l| l.unwrap().contains("listening on")),
        "the controller did not start"
    );
    // Terminal B: the dataplane with the seeds' config and --n-nodes, with the token the
    // controller made (an agent reads it itself when the state directory is the default).
    let token = std::fs::read_to_string(s.dir.join("controller.token")).unwrap();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_nextmini"))
        .env("NEXTMINI_TOKEN", token.trim())
        .args(["agent", "--config-path"])
        .arg(examples.join("config.toml"))
        .args([
            "--n-nodes",
            "20",
            "--controller",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--prefix", "tud", "--base", "172.20.108.0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    for line in log.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains("Broadcasting topology-ready signal") {
            break;
        }
    }
    assert!(
        seen.iter()
            .any(|l| l.contains("All 20 nodes are now connected")),
        "{seen:#?}"
    );
    assert!(
        seen.iter()
            .any(|l| l.contains("All dataplane nodes have connected. It takes")),
        "{seen:#?}"
    );
    // The seeds' question, answered by their database.
    rt().block_on(async {
        let store = Store::open("postgres://pgusr:pgpwrd@127.0.0.1:5432/nextmini")
            .await
            .unwrap();
        let mut nodes = 0;
        // Rows are written in the background; they land within moments of readiness.
        for _ in 0..100 {
            nodes = store.count(Table::Nodes).await.unwrap();
            if nodes == 20 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(nodes, 20, "SELECT COUNT(*) FROM nodes");
    });
    // Ctrl-C on the controller tells the agent to tear down.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(controller.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert!(agent.wait().unwrap().success());
    let _ = controller.wait();
    assert_eq!(leftovers("tud"), Vec::<String>::new());
}

#[test]
fn the_store_can_be_postgresql() {
    let s = Scratch::new("tue");
    let port = free_port().to_string();
    let out = nextmini(&[
        "up",
        "--topo",
        "line,12",
        "--prefix",
        "tue",
        "--base",
        "172.20.112.0",
        "--port",
        &port,
        "--state-dir",
        s.state(),
        "--db",
        PG_TEST_URL,
        "--exit-when-ready",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("store postgres://pgusr:***@127.0.0.1"),
        "{}",
        text(&out.stdout)
    );
    rt().block_on(async {
        let store = Store::open(PG_TEST_URL).await.unwrap();
        assert_eq!(store.count(Table::Nodes).await.unwrap(), 12);
        assert_eq!(store.links_up().await.unwrap(), 11);
    });
    assert_eq!(leftovers("tue"), Vec::<String>::new());
}

#[test]
fn bad_configs_get_one_clear_line_each() {
    let s = Scratch::new("tuf");
    let write = |name: &str, body: &str| {
        let p = s.dir.join(name);
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let unknown_key = write(
        "unknown.toml",
        "[topology]\ntype = \"ring\"\nring_config = { n_nodes = 4 }\nspeed = 9\n",
    );
    let bad_type = write(
        "badtype.toml",
        "[topology]\ntype = \"ring\"\nring_config = { n_nodes = \"four\" }\n",
    );
    let unknown_topo = write("topo.toml", "[topology]\ntype = \"hypercube\"\n");
    let missing = s.dir.join("missing.toml").to_string_lossy().into_owned();
    let held = TcpListener::bind("0.0.0.0:0").unwrap();
    let busy = held.local_addr().unwrap().port().to_string();
    let common = [
        "--prefix",
        "tuf",
        "--base",
        "172.20.116.0",
        "--state-dir",
        s.state(),
        "--exit-when-ready",
    ];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["up", &unknown_key],
            "unknown.toml:4:1: [topology] unknown field `speed`",
        ),
        (vec!["up", &bad_type], "badtype.toml:3:"),
        (
            vec!["up", &unknown_topo],
            "unknown topology type `hypercube`",
        ),
        (
            vec!["up", "--topo", "fat_tree,4", "--n-nodes", "40"],
            "--n-nodes 40 does not match the topology: fat_tree(k=4) has 36 nodes",
        ),
        (
            vec!["up", "--topo", "ring,4", "--port", &busy],
            "another program (or another nextmini run) uses this port",
        ),
        (vec!["up", &missing], "cannot read"),
    ];
    for (args, expect) in cases {
        let mut all = args.clone();
        all.extend(common);
        let out = nextmini(&all);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(expect),
            "{args:?}: {err}"
        );
    }
    // Not root.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_nextmini"))
        .args(["up", "--topo", "ring,4", "--state-dir", s.state()])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: nextmini up needs root"), "{err}");
    drop(held);
    assert_eq!(leftovers("tuf"), Vec::<String>::new());
}

#[test]
fn nodes_without_an_underlay_carry_traffic_over_their_links_and_leave_nothing() {
    let s = Scratch::new("tug");
    let port = free_port().to_string();
    let up = nextmini(&[
        "up",
        "--topo",
        "ring,6",
        "--no-underlay",
        "--prefix",
        "tug",
        "--base",
        "172.20.252.0",
        "--port",
        &port,
        "--state-dir",
        s.state(),
        "--detach",
    ]);
    assert!(up.status.success(), "{}", text(&up.stderr));
    // A namespace with lo and tun0, and nothing of the run on the host's side.
    let links = Command::new("ip")
        .args(["-n", "tug1", "-br", "link"])
        .output()
        .unwrap();
    let names: Vec<String> = text(&links.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    assert_eq!(names, ["lo", "tun0"]);
    let host = Command::new("ip").args(["-br", "link"]).output().unwrap();
    assert!(
        !text(&host.stdout).contains("tug"),
        "{}",
        text(&host.stdout)
    );
    let ping = s.exec(1, &["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.0.4"]);
    assert!(ping.status.success(), "{}", text(&ping.stdout));
    // No way to the controller from inside: the environment says none.
    let env = s.exec(2, &["env"]);
    let env = text(&env.stdout);
    assert!(
        env.contains("NEXTMINI_NODE_ID=2") && !env.contains("NEXTMINI_API"),
        "{env}"
    );
    let down = nextmini(&["down", "--state-dir", s.state()]);
    assert!(down.status.success(), "{}", text(&down.stderr));
    assert_eq!(leftovers("tug"), Vec::<String>::new());
}
