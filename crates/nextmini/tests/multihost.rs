//! Several hosts on this one machine: each "host" is a network namespace with its own address
//! on a switch bridge and its own agent process (started with `nsenter --net`, so it shares
//! the machine's mounts, as an agent on a real host does). Experiments spread over them with
//! the seeds' manual mode (`--node-id-offset`), their bridges joined by VXLAN keyed per
//! experiment; node sessions reach the controller through each agent's relay.
//!
//! Everything here carries the prefixes `tq` (hosts and switch), `tw` and `tx` (the two
//! experiments' nodes), subnets 172.20.152.0/24 (switch), 172.20.156.0/22 and 172.20.160.0/22
//! (underlays); a guard removes all of it, also when the test fails.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hostnet::Prefix;

mod common;
use common::{NETNS_DIR, free_port, text};

const SWITCH: &str = "tqsw";
const SWITCH_ADDR: &str = "172.20.152.254";
const HOSTS: [u32; 3] = [1, 2, 3];

fn host_ns(h: u32) -> String {
    format!("tqh{h}")
}

fn host_addr(h: u32) -> String {
    format!("172.20.152.{h}")
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The simulated hosts, the processes started on them, and their removal.
struct Cluster {
    children: Vec<Child>,
    dir: std::path::PathBuf,
}

impl Cluster {
    fn new() -> Cluster {
        let cluster = Cluster {
            children: Vec::new(),
            dir: std::env::temp_dir().join(format!("nextmini-multihost-{}", std::process::id())),
        };
        cluster.remove_hosts();
        std::fs::create_dir_all(&cluster.dir).unwrap();
        sh(&["ip", "link", "add", SWITCH, "mtu", "1600", "type", "bridge"]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{SWITCH_ADDR}/24"),
            "dev",
            SWITCH,
        ]);
        sh(&["ip", "link", "set", SWITCH, "up"]);
        for h in HOSTS {
            let ns = host_ns(h);
            let port = format!("tqs{h}");
            sh(&["ip", "netns", "add", &ns]);
            sh(&[
                "ip", "link", "add", &port, "mtu", "1600", "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            sh(&["ip", "link", "set", &port, "master", SWITCH, "up"]);
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            sh(&["ip", "-n", &ns, "link", "set", "eth0", "mtu", "1600", "up"]);
            sh(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", host_addr(h)),
                "dev",
                "eth0",
            ]);
        }
        cluster
    }

    fn remove_hosts(&self) {
        for h in HOSTS {
            let _ = Command::new("ip")
                .args(["netns", "del", &host_ns(h)])
                .output();
            let _ = Command::new("ip")
                .args(["link", "del", &format!("tqs{h}")])
                .output();
        }
        let _ = Command::new("ip").args(["link", "del", SWITCH]).output();
    }

    fn spawn(&mut self, mut cmd: Command, log: &str) -> usize {
        let log = std::fs::File::create(self.dir.join(log)).unwrap();
        cmd.stdout(Stdio::null()).stderr(log);
        self.children.push(cmd.spawn().unwrap());
        self.children.len() - 1
    }

    /// `nextmini controller` for an experiment file, in the machine's own namespace.
    fn controller(&mut self, name: &str, body: &str, port: u16) -> usize {
        let file = self.dir.join(format!("{name}.toml"));
        std::fs::write(&file, body).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nextmini"));
        cmd.args([
            "controller",
            file.to_str().unwrap(),
            "--port",
            &port.to_string(),
        ])
        .args(["--state-dir", self.dir.join(name).to_str().unwrap()]);
        self.spawn(cmd, &format!("{name}-controller.log"))
    }

    /// An agent on host `h` with its share of an experiment (`share`: the agent's flags that
    /// say which nodes), joined to the other hosts.
    fn agent(
        &mut self,
        h: u32,
        hosts: &[u32],
        port: u16,
        (prefix, base, vni): (&str, &str, u32),
        share: &[&str],
    ) -> usize {
        let peers: Vec<String> = hosts
            .iter()
            .filter(|&&o| o != h)
            .map(|&o| host_addr(o))
            .collect();
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", host_ns(h)))
            .arg(env!("CARGO_BIN_EXE_nextmini"))
            .args(["agent", "--controller", &format!("{SWITCH_ADDR}:{port}")])
            .args(share)
            .args([
                "--prefix",
                prefix,
                "--base",
                base,
                "--vni",
                &vni.to_string(),
            ])
            .args(["--peers", &peers.join(","), "--host", &format!("host{h}")]);
        self.spawn(cmd, &format!("{prefix}-agent{h}.log"))
    }

    fn kill(&mut self, i: usize) {
        let _ = self.children[i].kill();
        let _ = self.children[i].wait();
    }

    fn exec(node_ns: &str, cmd: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", node_ns])
            .args(cmd)
            .output()
            .unwrap()
    }

    /// What is left of `prefix` on host `h` (its links) and on the machine (namespaces).
    fn leftovers(h: u32, prefix: &'static str) -> Vec<String> {
        let ns = Path::new(NETNS_DIR).join(host_ns(h));
        std::thread::spawn(move || {
            let f = std::fs::File::open(ns).unwrap();
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            hostnet::cleanup::find(&Prefix::new(prefix).unwrap(), Path::new(NETNS_DIR)).unwrap()
        })
        .join()
        .unwrap()
    }

    /// Removes what a killed agent left on host `h`, as a user would with `nextmini cleanup`.
    fn cleanup(h: u32, prefix: &str) -> std::process::Output {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", host_ns(h)))
            .arg(env!("CARGO_BIN_EXE_nextmini"))
            .args(["cleanup", "--prefix", prefix])
            .output()
            .unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for h in HOSTS {
            for p in ["tw", "tx"] {
                let _ = Cluster::cleanup(h, p);
            }
        }
        for p in ["tw", "tx"] {
            let _ = hostnet::cleanup::sweep(&Prefix::new(p).unwrap(), Path::new(NETNS_DIR));
        }
        self.remove_hosts();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn status(port: u16) -> serde_json::Value {
    let body = ureq::get(&format!("http://127.0.0.1:{port}/api/status"))
        .call()
        .and_then(|mut r| r.body_mut().read_to_string());
    body.ok()
        .and_then(|b| serde_json::from_str(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// Waits until the experiment behind `port` satisfies `done`, up to 30 s.
fn wait_for(port: u16, what: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(port);
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: last status {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pings(node_ns: &str, addr: &str) -> bool {
    Cluster::exec(node_ns, &["ping", "-c", "3", "-i", "0.2", "-W", "1", addr])
        .status
        .success()
}

fn ring(n: u32, prefix: &str, base: &str) -> String {
    format!(
        "[topology]\ntype = \"ring\"\nring_config = {{ n_nodes = {n} }}\n[node_settings]\nprefix = \"{prefix}\"\nunderlay_base = \"{base}\"\n"
    )
}

#[test]
fn experiments_span_hosts_stay_apart_and_survive_a_lost_host() {
    let mut cluster = Cluster::new();
    // Experiment tw: a ring of 12 placed by the scheduler on three hosts, node 12 pinned to
    // host 1 (so host 1's share is not one block of ids).
    let tw_port = free_port();
    let tw_file = format!(
        "{}[[placement]]\nnode = 12\nschedule = \"{}\"\n",
        ring(12, "tw", "172.20.156.0"),
        host_addr(1)
    );
    let plan_file = cluster.dir.join("tw-plan.toml");
    std::fs::write(&plan_file, &tw_file).unwrap();
    let plan = Command::new(env!("CARGO_BIN_EXE_nextmini"))
        .args([
            "schedule",
            plan_file.to_str().unwrap(),
            "--hosts",
            "172.20.152.[1-3]",
        ])
        .args(["--cpus", "8", "--mem-mib", "16384", "--json"])
        .output()
        .unwrap();
    assert!(plan.status.success(), "{}", text(&plan.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let share = |h: u32| -> Vec<u64> {
        plan["hosts"][h as usize - 1]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_u64().unwrap())
            .collect()
    };
    for h in HOSTS {
        assert_eq!(share(h).len(), 4, "an even share for host {h}: {plan}");
    }
    assert!(share(1).contains(&12), "{plan}");
    let list = |ids: Vec<u64>| ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    cluster.controller("tw", &tw_file, tw_port);
    wait_for(tw_port, "tw's controller listens", |s| !s.is_null());
    let mut tw_agents = Vec::new();
    for h in HOSTS {
        let nodes = list(share(h));
        let tw = ("tw", "172.20.156.0", 100);
        tw_agents.push(cluster.agent(h, &HOSTS, tw_port, tw, &["--nodes", &nodes]));
    }
    let s = wait_for(tw_port, "tw ready", |s| s["phase"] == "ready");
    assert_eq!(
        (s["ready"].as_u64(), s["agents"].as_u64()),
        (Some(12), Some(3))
    );
    let on = |h: u32, i: usize| format!("10.0.0.{}", share(h)[i]);
    let first_on_1 = format!("tw{}", share(1)[0]);

    // Experiment tx at the same time, with the same overlay addresses: a ring of 6 on hosts
    // 1 and 2, its own VNI and underlay.
    let tx_port = free_port();
    cluster.controller("tx", &ring(6, "tx", "172.20.160.0"), tx_port);
    wait_for(tx_port, "tx's controller listens", |s| !s.is_null());
    for h in [1, 2] {
        // The seeds' manual mode: a count and an offset per host.
        let offset = ((h - 1) * 3).to_string();
        let tx = ("tx", "172.20.160.0", 200);
        cluster.agent(
            h,
            &[1, 2],
            tx_port,
            tx,
            &["--n-nodes", "3", "--node-id-offset", &offset],
        );
    }
    wait_for(tx_port, "tx ready", |s| s["phase"] == "ready");

    // Across hosts: a node of host 1 reaches nodes of hosts 2 and 3.
    assert!(pings(&first_on_1, &on(2, 1)), "tw host 1 → host 2");
    assert!(pings(&first_on_1, &on(3, 1)), "tw host 1 → host 3");
    assert!(pings("tx1", "10.0.0.4"), "tx 1 → 4 across hosts");
    let server = Cluster::exec(&format!("tw{}", share(2)[1]), &["iperf3", "-s", "-1", "-D"]);
    assert!(server.status.success(), "{}", text(&server.stderr));
    std::thread::sleep(Duration::from_millis(300));
    let iperf = Cluster::exec(&first_on_1, &["iperf3", "-c", &on(2, 1), "-t", "2", "-J"]);
    assert!(iperf.status.success(), "{}", text(&iperf.stdout));
    let report: serde_json::Value = serde_json::from_slice(&iperf.stdout).unwrap();
    assert!(report["end"]["sum_received"]["bytes"].as_u64().unwrap() > 0);

    // Apart: tx has no node 9, whatever tw has; tw's nodes have no way to tx's underlay.
    assert!(
        !pings("tx1", "10.0.0.9"),
        "tx reaches an address only tw has"
    );
    assert!(
        !pings(&first_on_1, "172.20.160.2"),
        "tw reaches tx's underlay"
    );
    // Node n's underlay address is 172.20.156.(n + 1), on whichever host it is.
    let underlay = format!("172.20.156.{}", share(3)[0] + 1);
    assert!(
        pings(&first_on_1, &underlay),
        "tw's own underlay across hosts"
    );

    // Host 2's tw agent dies: its nodes are reported, tw's traffic goes round them where the
    // ring still connects, and tx (another agent on the same host) is untouched.
    cluster.kill(tw_agents[1]);
    let s = wait_for(tw_port, "tw reports the lost host", |s| s["failed"] == 4);
    assert_eq!(s["agents"].as_u64(), Some(2), "{s}");
    let nodes: serde_json::Value = serde_json::from_str(
        &ureq::get(&format!("http://127.0.0.1:{tw_port}/api/nodes"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    let failed: Vec<u64> = nodes
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["state"] == "failed")
        .map(|n| n["node_id"].as_u64().unwrap())
        .collect();
    assert_eq!(failed, share(2));
    // Host 2 held one arc of the ring: the nodes on either side of it now reach each other
    // the long way round, and a lost node can't be reached.
    assert_eq!(
        failed.last().unwrap() - failed.first().unwrap() + 1,
        4,
        "one arc: {failed:?}"
    );
    let (a, b) = (failed.first().unwrap() - 1, failed.last().unwrap() + 1);
    let trace = Cluster::exec(
        &format!("tw{a}"),
        &[
            "traceroute",
            "-n",
            "-q",
            "1",
            "-w",
            "2",
            &format!("10.0.0.{b}"),
        ],
    );
    let hops = common::hops(&trace.stdout);
    assert_eq!(hops.len(), 12 - 4 - 1, "{a} → {b} round the ring: {hops:?}");
    assert_eq!(
        hops.last().map(String::as_str),
        Some(format!("10.0.0.{b}").as_str())
    );
    assert!(!pings(&format!("tw{a}"), &on(2, 0)), "a lost node answers");
    assert!(pings("tx1", "10.0.0.4"), "tx keeps working");

    // Down: the remaining agents remove everything of theirs; the lost host's leftovers go
    // with `nextmini cleanup` there; nothing stays on any host.
    for port in [tw_port, tx_port] {
        ureq::post(&format!("http://127.0.0.1:{port}/api/down"))
            .send_empty()
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for c in &mut cluster.children {
        while c.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "a process did not exit after down"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // The killed agent's namespaces are still mounted (mounts are the machine's) and its
    // veths, bridge and tunnel are on host 2.
    assert!(!Cluster::leftovers(2, "tw").is_empty());
    let cleanup = Cluster::cleanup(2, "tw");
    assert!(cleanup.status.success(), "{}", text(&cleanup.stderr));
    for h in HOSTS {
        assert_eq!(
            Cluster::leftovers(h, "tw"),
            Vec::<String>::new(),
            "tw on host {h}"
        );
        assert_eq!(
            Cluster::leftovers(h, "tx"),
            Vec::<String>::new(),
            "tx on host {h}"
        );
    }
}
