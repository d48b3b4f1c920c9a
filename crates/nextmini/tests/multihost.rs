//! Experiments spread over three hosts simulated on this machine (see `common::cluster`), the
//! seeds' manual way: a controller, and one agent per host with its share of the nodes (a
//! count and an offset, or the id list `nextmini schedule` printed), bridges joined by VXLAN
//! keyed per experiment, node sessions relayed to the controller by each agent.
//!
//! Prefixes `tq` (hosts and switch), `tw` and `tx` (the experiments); subnets 172.20.152.0/24
//! (switch), 172.20.156.0/22 and 172.20.160.0/22 (underlays).

use std::process::Command;

mod common;
use common::cluster::{Cluster, HOSTS, wait_json};
use common::{free_port, text};

fn wait_for(port: u16, what: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    wait_json(&format!("http://127.0.0.1:{port}/api/status"), what, done)
}

/// `nextmini controller` for an experiment file, in the machine's own namespace.
fn controller(cluster: &mut Cluster, name: &str, body: &str, port: u16) -> usize {
    let file = cluster.dir.join(format!("{name}.toml"));
    std::fs::write(&file, body).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nextmini"));
    cmd.args([
        "controller",
        file.to_str().unwrap(),
        "--port",
        &port.to_string(),
    ])
    .args(["--state-dir", cluster.dir.join(name).to_str().unwrap()]);
    cluster.spawn(cmd, &format!("{name}-controller.log"))
}

/// An agent on host `h` with its share of an experiment (`share`: the flags that say which
/// nodes), joined to the other hosts.
fn agent(
    cluster: &mut Cluster,
    h: u32,
    hosts: &[u32],
    port: u16,
    (prefix, base, vni): (&str, &str, u32),
    share: &[&str],
) -> usize {
    let peers: Vec<String> = hosts
        .iter()
        .filter(|&&o| o != h)
        .map(|&o| cluster.host_addr(o))
        .collect();
    let controller = format!("{}:{port}", cluster.switch_addr());
    // The token its controller made (state directory named as the prefix).
    let token = std::fs::read_to_string(cluster.dir.join(prefix).join("controller.token")).unwrap();
    let mut cmd = cluster.on_host(h, &["agent", "--controller", &controller]);
    cmd.env("NEXTMINI_TOKEN", token.trim());
    cmd.args(share)
        .args([
            "--prefix",
            prefix,
            "--base",
            base,
            "--vni",
            &vni.to_string(),
        ])
        .args(["--peers", &peers.join(","), "--host", &format!("host{h}")]);
    cluster.spawn(cmd, &format!("{prefix}-agent{h}.log"))
}

fn ring(n: u32, prefix: &str, base: &str) -> String {
    format!(
        "[topology]\ntype = \"ring\"\nring_config = {{ n_nodes = {n} }}\n[node_settings]\nprefix = \"{prefix}\"\nunderlay_base = \"{base}\"\n"
    )
}

#[test]
fn experiments_span_hosts_stay_apart_and_survive_a_lost_host() {
    let mut cluster = Cluster::new("tq", 152, &["tw", "tx"]);
    // Experiment tw: a ring of 12 placed by the scheduler on three hosts, node 12 pinned to
    // host 1 (so host 1's share is not one block of ids).
    let tw_port = free_port();
    let tw_file = format!(
        "{}[[placement]]\nnode = 12\nschedule = \"{}\"\n",
        ring(12, "tw", "172.20.156.0"),
        cluster.host_addr(1)
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
    controller(&mut cluster, "tw", &tw_file, tw_port);
    wait_for(tw_port, "tw's controller listens", |s| !s.is_null());
    let mut tw_agents = Vec::new();
    for h in HOSTS {
        let nodes = list(share(h));
        let tw = ("tw", "172.20.156.0", 100);
        tw_agents.push(agent(
            &mut cluster,
            h,
            &HOSTS,
            tw_port,
            tw,
            &["--nodes", &nodes],
        ));
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
    controller(&mut cluster, "tx", &ring(6, "tx", "172.20.160.0"), tx_port);
    wait_for(tx_port, "tx's controller listens", |s| !s.is_null());
    for h in [1, 2] {
        // The seeds' manual mode: a count and an offset per host.
        let offset = ((h - 1) * 3).to_string();
        let tx = ("tx", "172.20.160.0", 200);
        agent(
            &mut cluster,
            h,
            &[1, 2],
            tx_port,
            tx,
            &["--n-nodes", "3", "--node-id-offset", &offset],
        );
    }
    wait_for(tx_port, "tx ready", |s| s["phase"] == "ready");

    // Across hosts: a node of host 1 reaches nodes of hosts 2 and 3.
    assert!(Cluster::pings(&first_on_1, &on(2, 1)), "tw host 1 → host 2");
    assert!(Cluster::pings(&first_on_1, &on(3, 1)), "tw host 1 → host 3");
    assert!(Cluster::pings("tx1", "10.0.0.4"), "tx 1 → 4 across hosts");
    // Multicast across hosts: a group of the first node on host 1, with members on hosts 2
    // and 3; each member's TUN device gets every datagram once.
    let token = std::fs::read_to_string(cluster.dir.join("tw").join("controller.token")).unwrap();
    let (m2, m3) = (share(2)[1], share(3)[1]);
    let group = Command::new(env!("CARGO_BIN_EXE_nextmini"))
        .args(["group", "create", &share(1)[0].to_string()])
        .args(["--members", &format!("{m2},{m3}")])
        .args(["--api", &format!("127.0.0.1:{tw_port}")])
        .env("NEXTMINI_TOKEN", token.trim())
        .output()
        .unwrap();
    assert!(group.status.success(), "{}", text(&group.stderr));
    let tun_rx = |node: u64| common::tun_counter(&format!("tw{node}"), "rx_packets");
    let before = [tun_rx(m2), tun_rx(m3)];
    let send = Cluster::exec(
        &first_on_1,
        &[
            "python3",
            "-c",
            "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.setsockopt(socket.IPPROTO_IP,socket.IP_MULTICAST_TTL,16)\nfor i in range(50):\n    s.sendto(b'%d' % i,('239.255.0.1',5000)); time.sleep(0.002)",
        ],
    );
    assert!(send.status.success(), "{}", text(&send.stderr));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        [tun_rx(m2) - before[0], tun_rx(m3) - before[1]],
        [50, 50],
        "members on hosts 2 and 3"
    );
    let server = Cluster::exec(&format!("tw{}", share(2)[1]), &["iperf3", "-s", "-1", "-D"]);
    assert!(server.status.success(), "{}", text(&server.stderr));
    // The daemon may not listen yet: a refused connection is retried.
    let mut iperf = Cluster::exec(&first_on_1, &["iperf3", "-c", &on(2, 1), "-t", "2", "-J"]);
    for _ in 0..20 {
        if iperf.status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        iperf = Cluster::exec(&first_on_1, &["iperf3", "-c", &on(2, 1), "-t", "2", "-J"]);
    }
    assert!(iperf.status.success(), "{}", text(&iperf.stdout));
    let report: serde_json::Value = serde_json::from_slice(&iperf.stdout).unwrap();
    assert!(report["end"]["sum_received"]["bytes"].as_u64().unwrap() > 0);

    // Apart: tx has no node 9, whatever tw has; tw's nodes have no way to tx's underlay.
    assert!(
        !Cluster::pings("tx1", "10.0.0.9"),
        "tx reaches an address only tw has"
    );
    assert!(
        !Cluster::pings(&first_on_1, "172.20.160.2"),
        "tw reaches tx's underlay"
    );
    // Node n's underlay address is 172.20.156.(n + 1), on whichever host it is.
    let underlay = format!("172.20.156.{}", share(3)[0] + 1);
    assert!(
        Cluster::pings(&first_on_1, &underlay),
        "tw's own underlay across hosts"
    );

    // Host 2's tw agent dies: its nodes are reported, tw's traffic goes round them where the
    // ring still connects, and tx (another agent on the same host) is untouched.
    cluster.kill(tw_agents[1]);
    // The nodes' sessions and the agent's own end separately: wait for both.
    wait_for(tw_port, "tw reports the lost host", |s| {
        s["failed"] == 4 && s["agents"] == 2
    });
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
    assert!(
        !Cluster::pings(&format!("tw{a}"), &on(2, 0)),
        "a lost node answers"
    );
    assert!(Cluster::pings("tx1", "10.0.0.4"), "tx keeps working");

    // Down: the remaining agents remove everything of theirs; the lost host's leftovers go
    // with `nextmini cleanup` there; nothing stays on any host.
    for (name, port) in [("tw", tw_port), ("tx", tx_port)] {
        let token =
            std::fs::read_to_string(cluster.dir.join(name).join("controller.token")).unwrap();
        ureq::post(&format!("http://127.0.0.1:{port}/api/down"))
            .header("authorization", &format!("Bearer {}", token.trim()))
            .send_empty()
            .unwrap();
    }
    cluster.wait_all();
    // The killed agent's namespaces are still mounted (mounts are the machine's) and its
    // veths, bridge and tunnel are on host 2.
    assert!(!cluster.leftovers(2, "tw").is_empty());
    let cleanup = cluster.cleanup(2, "tw");
    assert!(cleanup.status.success(), "{}", text(&cleanup.stderr));
    for h in HOSTS {
        assert_eq!(
            cluster.leftovers(h, "tw"),
            Vec::<String>::new(),
            "tw on host {h}"
        );
        assert_eq!(
            cluster.leftovers(h, "tx"),
            Vec::<String>::new(),
            "tx on host {h}"
        );
    }
}
