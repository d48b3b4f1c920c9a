//! The head (`nextmini serve`) with three hosts simulated on this machine (see
//! `common::cluster`), each running `nextmini agent --head`: hosts register, experiments are
//! created, planned (dry run, `mv`), launched and cleared from the command line, two run at
//! once with the same overlay addresses, and a host that dies is reported and cleaned up when
//! it comes back.
//!
//! Prefixes `tr` (hosts and switch), `hga` and `hgb` (the experiments); switch subnet
//! 172.20.153.0/24; the head gives experiments underlays from 172.24.0.0.

use std::process::Command;

mod common;
use common::cluster::{Cluster, HOSTS, get_json_trusting, wait_json_trusting};
use common::{free_port, text};

/// The head's token, written into its state directory before it starts (it keeps one it
/// finds there): what the hosts and the command line carry.
const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// The head of the test: its port, and the certificate it serves (`serve --tls`), which hosts
/// and commands trust.
struct Head {
    port: u16,
    ca: std::path::PathBuf,
}

impl Head {
    /// `nextmini` reaching this head over TLS, with its token.
    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nextmini"));
        cmd.env("NEXTMINI_HEAD", format!("https://127.0.0.1:{}", self.port))
            .env("NEXTMINI_CA", &self.ca)
            .env("NEXTMINI_TOKEN", TOKEN);
        cmd
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn get(&self, path: &str) -> serde_json::Value {
        get_json_trusting(&self.url(path), Some(&self.ca))
    }

    fn wait(
        &self,
        path: &str,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        wait_json_trusting(&self.url(path), Some(&self.ca), what, done)
    }
}

/// `nextmini <args>` against the head, with its token.
fn nm(head: &Head, args: &[&str]) -> serde_json::Value {
    let out = head.command().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "nextmini {args:?}: {}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn host_agent(cluster: &mut Cluster, h: u32, head: &Head) -> usize {
    let addr = format!("https://{}:{}", cluster.switch_addr(), head.port);
    let mut cmd = cluster.on_host(
        h,
        &["agent", "--head", &addr, "--host", &format!("host{h}")],
    );
    cmd.env("NEXTMINI_TOKEN", TOKEN)
        .env("NEXTMINI_CA", &head.ca);
    cluster.spawn(cmd, &format!("agent{h}.log"))
}

/// Starts the head on `port` over TLS with the test's token in its state directory; returns
/// once its certificate is made.
fn start_head(cluster: &mut Cluster, port: u16, log: &str) -> (usize, Head) {
    let state = cluster.dir.join("head");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("head.token"), format!("{TOKEN}\n")).unwrap();
    let mut head = Command::new(env!("CARGO_BIN_EXE_nextmini"));
    head.args([
        "serve",
        "--port",
        &port.to_string(),
        "--host",
        "head",
        "--tls",
    ])
    .args(["--state-dir", state.to_str().unwrap()]);
    let process = cluster.spawn(head, log);
    let ca = state.join("tls/cert.pem");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !ca.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the head made no certificate"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (process, Head { port, ca })
}

/// A plan's node ids on `host`.
fn share(plan: &serde_json::Value, host: &str) -> Vec<u64> {
    plan["hosts"][host]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
        .unwrap_or_default()
}

fn ring(n: u32) -> String {
    format!("[topology]\ntype = \"ring\"\nring_config = {{ n_nodes = {n} }}\n")
}

#[test]
fn a_head_pools_hosts_for_experiments() {
    let mut cluster = Cluster::new("tr", 153, &["hga", "hgb"]);
    let port = free_port();
    let (head_process, head) = start_head(&mut cluster, port, "head.log");
    let mut agents: Vec<usize> = HOSTS
        .iter()
        .map(|&h| host_agent(&mut cluster, h, &head))
        .collect();
    let hosts_url = "/api/hosts";
    head.wait(hosts_url, "three hosts registered", |v| {
        v.as_array()
            .is_some_and(|a| a.len() == 3 && a.iter().all(|h| h["up"] == true))
    });

    // Hosts report their load (available memory below their total once reported).
    head.wait(hosts_url, "load reports", |v| {
        v.as_array().is_some_and(|a| {
            a.iter().all(|h| {
                h["mem_available_mib"].as_u64().unwrap_or(0) < h["mem_mib"].as_u64().unwrap_or(0)
            })
        })
    });

    // The default experiment holds the head only; a new one every host but the head.
    // Without the head's token: no changes, and no host joins.
    let refused = head
        .command()
        .args(["exp", "hgx"])
        .env("NEXTMINI_TOKEN", "")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("NEXTMINI_TOKEN"),
        "{}",
        text(&refused.stderr)
    );
    let head_addr = format!("https://{}:{port}", cluster.switch_addr());
    let mut intruder = cluster.on_host(1, &["agent", "--head", &head_addr, "--host", "intruder"]);
    intruder
        .env("NEXTMINI_TOKEN", "not-the-token")
        .env("NEXTMINI_CA", &head.ca);
    let intruder = cluster.spawn(intruder, "intruder.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !std::fs::read_to_string(cluster.dir.join("intruder.log"))
        .unwrap_or_default()
        .contains("asks hosts for its token")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "a host without the token was not refused"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    cluster.kill(intruder);

    let exps = nm(&head, &["exp", "--json"]);
    assert_eq!(exps.as_array().map(Vec::len), Some(1), "{exps}");
    assert_eq!(exps[0]["name"], "default");
    assert_eq!(exps[0]["hosts"], "head");
    nm(&head, &["exp", "hga"]);
    let exps = nm(&head, &["exp", "--json"]);
    assert_eq!(
        (&exps[1]["name"], &exps[1]["hosts"], &exps[1]["active"]),
        (&"hga".into(), &"host[1-3]".into(), &true.into())
    );

    // Dry run, a move by hand, then the launch places what the dry run said.
    let file = cluster.dir.join("ring12.toml");
    std::fs::write(&file, ring(12)).unwrap();
    let file = file.to_str().unwrap();
    let dry = nm(
        &head,
        &["exp", "--json", "hga", "launch", file, "--dry-run"],
    );
    for h in ["host1", "host2", "host3"] {
        assert_eq!(share(&dry, h).len(), 4, "{dry}");
    }
    let from = if share(&dry, "host3").contains(&1) {
        "host2"
    } else {
        "host3"
    };
    let moved = nm(&head, &["exp", "--json", "hga", "mv", "1", from]);
    assert!(share(&moved, from).contains(&1), "{moved}");
    let launched = nm(&head, &["exp", "--json", "launch", file]);
    assert_eq!(
        launched["hosts"], moved["hosts"],
        "the moved dry run launches"
    );
    let status_url = |exp: &str| format!("/api/exps/{exp}");
    head.wait(&status_url("hga"), "hga ready", |v| {
        v["status"]["phase"] == "ready" && v["schedules"][0]["state"] == "completed"
    });
    // The experiment's links, through its own controller on the head, which wants the
    // head's token for changes.
    let api = format!("https://127.0.0.1:{}", launched["port"]);
    let without_token = head
        .command()
        .args(["link", "set", "1-2", "--up", "--api", &api])
        .env("NEXTMINI_TOKEN", "")
        .output()
        .unwrap();
    assert!(!without_token.status.success());
    assert!(
        text(&without_token.stderr).contains("token"),
        "{}",
        text(&without_token.stderr)
    );
    // Over TLS, a client that does not trust the head's certificate gets nowhere.
    let untrusting = head
        .command()
        .args(["link", "show", "--api", &api])
        .env("NEXTMINI_CA", "")
        .output()
        .unwrap();
    assert!(
        text(&untrusting.stderr).contains("NEXTMINI_CA"),
        "{}",
        text(&untrusting.stderr)
    );
    let plain = get_json_trusting(
        &format!("http://127.0.0.1:{}/api/status", launched["port"]),
        None,
    );
    assert!(plain.is_null(), "{plain}");
    let delay = head
        .command()
        .args(["link", "set", "1-2", "--delay", "3ms", "--api", &api])
        .output()
        .unwrap();
    assert!(delay.status.success(), "{}", text(&delay.stderr));
    let show = head
        .command()
        .args(["link", "show", "1-2", "--api", &api])
        .output()
        .unwrap();
    assert!(
        text(&show.stdout).contains("| 1→2 | up | unshaped | 3ms |"),
        "{}",
        text(&show.stdout)
    );
    let a1 = share(&launched, "host1")[0];
    let a3 = share(&launched, "host3")[0];
    assert!(
        Cluster::pings(&format!("hga{a1}"), &format!("10.0.0.{a3}")),
        "hga host 1 → host 3"
    );

    // A command in a node, through the head and the node's host; its exit code comes back.
    let exec = |args: &[&str]| {
        head.command()
            .args(["exp", "hga", "exec"])
            .args(args)
            .output()
            .unwrap()
    };
    // A program in a node on another host than the controller reaches it at its gateway
    // through the host's relay: the status, nothing else.
    let probe = exec(&[
        &a3.to_string(),
        "--",
        "python3",
        "-c",
        common::NODE_PROBE,
        &launched["port"].to_string(),
    ]);
    common::assert_probe_saw_the_status_only(&text(&probe.stdout));
    let (n1, to3) = (a1.to_string(), format!("10.0.0.{a3}"));
    let ping = exec(&[&n1, "--", "ping", "-c", "1", "-W", "2", &to3]);
    assert!(ping.status.success(), "{}", text(&ping.stderr));
    assert!(
        text(&ping.stdout).contains("1 received"),
        "{}",
        text(&ping.stdout)
    );
    assert_eq!(
        exec(&[&n1, "--", "sh", "-c", "exit 3"]).status.code(),
        Some(3)
    );

    // A second experiment on hosts 1 and 2 only, with the same overlay addresses.
    nm(&head, &["exp", "hgb"]);
    nm(&head, &["hosts", "del", "host3"]);
    let file6 = cluster.dir.join("ring6.toml");
    std::fs::write(&file6, ring(6)).unwrap();
    // With queueing on, the file only queues; a launch without one starts it.
    nm(&head, &["exp", "queueing", "on"]);
    let queued = nm(&head, &["exp", "--json", "launch", file6.to_str().unwrap()]);
    assert_eq!(queued["queued"], true, "{queued}");
    let dump = nm(&head, &["exp", "--json", "dump"]);
    assert_eq!(dump.as_object().map(|d| d.len()), Some(6), "{dump}");
    let b = nm(&head, &["exp", "--json", "launch"]);
    assert_eq!(b["hosts"], queued["hosts"], "the queued plan launches");
    assert!(share(&b, "host3").is_empty(), "{b}");
    head.wait(&status_url("hgb"), "hgb ready", |v| {
        v["status"]["phase"] == "ready"
    });
    assert_ne!(b["underlay_base"], launched["underlay_base"]);
    assert_ne!(b["vni"], launched["vni"]);
    let b1 = share(&b, "host1")[0];
    let b2 = share(&b, "host2")[0];
    assert!(
        Cluster::pings(&format!("hgb{b1}"), &format!("10.0.0.{b2}")),
        "hgb across hosts"
    );
    assert!(
        !Cluster::pings(&format!("hgb{b1}"), "10.0.0.9"),
        "hgb reaches hga's node 9"
    );
    // Hosts count every experiment's nodes.
    let hosts = head.get(hosts_url);
    let total: u64 = hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["nodes"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 18);

    // Clearing hga leaves nothing of it on any host; hgb is untouched.
    let cleared = nm(&head, &["exp", "--json", "clear", "hga"]);
    assert_eq!(cleared["complete"], true, "{cleared}");
    for h in HOSTS {
        assert_eq!(
            cluster.leftovers(h, "hga"),
            Vec::<String>::new(),
            "hga on host {h}"
        );
    }
    assert!(Cluster::pings(&format!("hgb{b1}"), &format!("10.0.0.{b2}")));

    // Host 2 dies: it is down, hgb reports its nodes there lost; clear succeeds on host 1
    // and reaches host 2 when its agent is back.
    cluster.kill(agents[1]);
    head.wait(hosts_url, "host2 down", |v| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|h| h["name"] == "host2" && h["up"] == false))
    });
    let host2_share = share(&b, "host2").len();
    let lost = head.wait(&status_url("hgb"), "hgb's lost nodes", |v| {
        v["failed_nodes"]
            .as_array()
            .is_some_and(|a| a.len() == host2_share)
    });
    // The links of the lost nodes are reported down too (each lost node had two ring links).
    let lost_links = lost["lost_links"].as_array().map_or(0, Vec::len);
    assert!(lost_links >= host2_share, "{lost}");
    assert_eq!(
        lost["failed_nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_u64())
            .collect::<Vec<_>>(),
        share(&b, "host2")
    );
    let cleared = nm(&head, &["exp", "--json", "clear", "hgb"]);
    assert_eq!(cleared["down"][0], "host2", "{cleared}");
    // Host 1 holds nothing of hgb; what is seen from it are host 2's node namespaces (the
    // simulated hosts share this machine's mounts).
    let host2: Vec<String> = share(&b, "host2")
        .iter()
        .map(|id| format!("hgb{id}"))
        .collect();
    let seen = cluster.leftovers(1, "hgb");
    assert!(
        seen.iter()
            .all(|l| host2.iter().any(|n| l.ends_with(&format!(" {n}")))),
        "{seen:?}"
    );
    assert!(
        !cluster.leftovers(2, "hgb").is_empty(),
        "host 2 still holds what it had"
    );
    agents[1] = host_agent(&mut cluster, 2, &head);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !cluster.leftovers(2, "hgb").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "host 2 was not cleared when it came back"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let exps = nm(&head, &["exp", "--json"]);
    assert_eq!(
        exps.as_array().unwrap().len(),
        1,
        "only the default is left: {exps}"
    );

    // The head restarts: it keeps its experiments, and the hosts' agents register again by
    // themselves.
    nm(&head, &["exp", "hgc"]);
    nm(&head, &["hosts", "del", "host1"]);
    cluster.kill(head_process);
    start_head(&mut cluster, port, "head2.log");
    head.wait(hosts_url, "the hosts are back after a head restart", |v| {
        v.as_array()
            .is_some_and(|a| a.len() == 3 && a.iter().all(|h| h["up"] == true))
    });
    let exps = nm(&head, &["exp", "--json"]);
    let hgc = exps
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "hgc")
        .unwrap_or_else(|| panic!("hgc survives the restart: {exps}"));
    assert_eq!(
        (&hgc["hosts"], &hgc["active"]),
        (&"host[2-3]".into(), &true.into())
    );
}
