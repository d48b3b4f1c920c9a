//! Root tier: real namespaces, veths and bridges. Each test owns a prefix and a subnet, and its
//! `Fabric` tears everything down on drop, also when an assertion fails.
//!
//! `ip` and `ping` check the kernel's view independently of our netlink code.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use hostnet::cleanup::sweep;
use hostnet::plan::{NODES_PER_SHARD, Owned};
use hostnet::{CreateError, Fabric, FabricSpec, Prefix, Step, UnderlayPlan};

const NETNS_DIR: &str = "/run/netns";

fn spec(prefix: &str, base: [u8; 4], nodes: u32, offset: u32) -> FabricSpec {
    let plan = UnderlayPlan::new(
        Prefix::new(prefix).unwrap(),
        Ipv4Addr::from(base),
        nodes,
        offset,
    )
    .unwrap();
    FabricSpec::new(plan)
}

/// Everything on the host that carries `prefix`: namespace files, mounts, links.
fn leftovers(prefix: &str) -> Vec<String> {
    let p = Prefix::new(prefix).unwrap();
    let mut found = Vec::new();
    if let Ok(dir) = std::fs::read_dir(NETNS_DIR) {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if p.classify(&name).is_some() {
                found.push(format!("file {name}"));
            }
        }
    }
    for m in hostnet::netns::mounted_under(Path::new(NETNS_DIR)).unwrap() {
        let name = m.file_name().unwrap().to_string_lossy().into_owned();
        if p.classify(&name).is_some() {
            found.push(format!("mount {name}"));
        }
    }
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line
            .split(": ")
            .nth(1)
            .unwrap_or("")
            .split('@')
            .next()
            .unwrap();
        if p.classify(name).is_some() {
            found.push(format!("link {name}"));
        }
    }
    found
}

fn ip_json(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["-n", ns, "-j"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip -n {ns} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn ping(ns: &str, to: Ipv4Addr) -> bool {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            &to.to_string(),
        ])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn fifty_nodes_are_addressed_routed_reachable_and_removed() {
    // Offset so that the 50 nodes straddle a shard edge: two bridges, routed between.
    let offset = NODES_PER_SHARD - 25;
    let spec = spec("tpa", [172, 20, 0, 0], 50, offset);
    let fabric = Fabric::create(&spec, &|_, _| {}).expect("plumbing 50 nodes");
    assert_eq!(fabric.nodes().len(), 50);
    assert_eq!(fabric.bridges().len(), 2);

    for node in fabric.nodes() {
        let p = &node.plan;
        assert_eq!(p.node_id, p.idx + offset + 1);
        let addrs = ip_json(&p.netns_name, &["-4", "addr", "show", "dev", "eth0"]);
        assert!(
            addrs.contains(&format!("\"local\":\"{}\",\"prefixlen\":22", p.addr)),
            "{addrs}"
        );
        let routes = ip_json(&p.netns_name, &["-4", "route"]);
        assert!(
            routes.contains(&format!("\"gateway\":\"{}\"", p.gateway)),
            "{routes}"
        );
        // No default route: nothing a node sends may leave the machine.
        assert!(!routes.contains("\"dst\":\"default\""), "{routes}");
        // No IPv6 address on eth0: nothing IPv6 is flooded through the bridge.
        let v6 = ip_json(&p.netns_name, &["-6", "addr", "show", "dev", "eth0"]);
        assert!(!v6.contains("inet6"), "eth0 has an IPv6 address: {v6}");
    }
    // The first and last node sit in different shards.
    let first = &fabric.nodes()[0].plan;
    let last = &fabric.nodes()[49].plan;
    assert_ne!(first.shard, last.shard);
    assert!(ping(&first.netns_name, first.gateway), "node to its bridge");
    assert!(
        ping(&first.netns_name, fabric.nodes()[1].plan.addr),
        "node to node, same shard"
    );
    assert!(
        ping(&first.netns_name, last.addr),
        "node to node across shards"
    );
    assert!(ping(&last.netns_name, first.addr), "and back");

    // Nor on the host ends of the veths.
    let host_v6 = Command::new("ip")
        .args(["-6", "-o", "addr", "show", "dev", &first.veth_name])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&host_v6.stdout).trim().is_empty());

    let stats = fabric.teardown().expect("teardown");
    assert!(stats.total.as_secs() < 60);
    assert_eq!(leftovers("tpa"), Vec::<String>::new());
}

#[test]
fn a_failing_node_is_named_and_everything_is_removed() {
    // A link that already has node 7's veth name makes node 7 fail.
    let blocker = "tpbv7";
    let made = Command::new("ip")
        .args(["link", "add", blocker, "type", "bridge"])
        .status()
        .unwrap();
    assert!(made.success());
    let spec = spec("tpb", [172, 20, 8, 0], 20, 0);
    let result = Fabric::create(&spec, &|_, _| {});
    let _ = Command::new("ip").args(["link", "del", blocker]).status();
    let err = result.expect_err("node 7 must fail");
    match &err {
        CreateError::Node {
            node_id,
            step,
            source,
            ..
        } => {
            assert_eq!(*node_id, 7);
            assert_eq!(*step, Step::CreateVeth);
            assert_eq!(source.raw_os_error(), Some(libc::EEXIST));
        }
        other => panic!("unexpected error {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("node 7") && text.contains("nextmini cleanup --prefix tpb"),
        "{text}"
    );
    assert_eq!(leftovers("tpb"), Vec::<String>::new());
}

#[test]
fn a_leftover_bridge_is_reported_with_the_fix() {
    let made = Command::new("ip")
        .args(["link", "add", "tpcbr0", "type", "bridge"])
        .status()
        .unwrap();
    assert!(made.success());
    let result = Fabric::create(&spec("tpc", [172, 20, 12, 0], 3, 0), &|_, _| {});
    let err = result.expect_err("the bridge exists");
    assert!(
        matches!(
            err,
            CreateError::Bridge {
                step: Step::CreateBridge,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("nextmini cleanup --prefix tpc"),
        "{err}"
    );
    // The sweep the message suggests removes it.
    let report = sweep(&Prefix::new("tpc").unwrap(), Path::new(NETNS_DIR)).unwrap();
    assert_eq!(report.bridges, 1);
    assert_eq!(leftovers("tpc"), Vec::<String>::new());
}

#[test]
fn sweep_removes_one_prefix_and_spares_another() {
    let victim = Fabric::create(&spec("tpd", [172, 20, 16, 0], 10, 0), &|_, _| {}).unwrap();
    let bystander = Fabric::create(&spec("tpe", [172, 20, 20, 0], 10, 0), &|_, _| {}).unwrap();
    let before = leftovers("tpe");
    // Sweeping a live run: the namespaces are unmounted but still held by `victim`'s fds, so
    // the veths must be deleted explicitly.
    let report = sweep(&Prefix::new("tpd").unwrap(), Path::new(NETNS_DIR)).unwrap();
    assert_eq!(report.namespaces, 10);
    assert_eq!(report.veths_deleted + report.veths_with_namespaces, 10);
    assert_eq!(report.bridges, 1);
    assert_eq!(leftovers("tpd"), Vec::<String>::new());
    assert_eq!(leftovers("tpe"), before, "another prefix was touched");
    // Idempotent.
    let again = sweep(&Prefix::new("tpd").unwrap(), Path::new(NETNS_DIR)).unwrap();
    assert!(again.is_empty(), "{again:?}");
    // Tearing down a swept run is harmless.
    victim.teardown().unwrap();
    assert!(ping(
        &bystander.nodes()[0].plan.netns_name,
        bystander.nodes()[9].plan.addr
    ));
    bystander.teardown().unwrap();
    assert_eq!(leftovers("tpe"), Vec::<String>::new());
}

#[test]
fn namespaces_can_be_kept_by_fd_only() {
    let mut spec = spec("tpf", [172, 20, 24, 0], 5, 0);
    spec.netns_dir = None;
    let fabric = Fabric::create(&spec, &|_, _| {}).unwrap();
    assert!(leftovers("tpf").iter().all(|l| l.starts_with("link")));
    // Entering by fd works without the mount.
    let node = &fabric.nodes()[0];
    let seen = node
        .netns
        .run(|| {
            Command::new("ip")
                .args(["-4", "-o", "addr", "show", "eth0"])
                .output()
                .unwrap()
        })
        .unwrap();
    assert!(String::from_utf8_lossy(&seen.stdout).contains(&node.plan.addr.to_string()));
    drop(fabric);
    assert_eq!(leftovers("tpf"), Vec::<String>::new());
}

#[test]
fn classify_matches_what_the_plan_names() {
    let plan = spec("tpg", [172, 20, 28, 0], 3, 0).plan;
    let p = plan.prefix();
    let n = plan.node(2);
    assert_eq!(p.classify(&n.netns_name), Some(Owned::Netns(3)));
    assert_eq!(p.classify(&n.veth_name), Some(Owned::Veth(3)));
    assert_eq!(p.classify(&plan.bridge(0).name), Some(Owned::Bridge(0)));
}
