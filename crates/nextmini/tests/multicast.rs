//! Multicast across real namespaces: on a fat tree (k = 4), a sender and eight receivers
//! written with ordinary sockets (Python's `IP_ADD_MEMBERSHIP` on the node's TUN device, whose
//! IGMP reports the dataplane takes as joins). Every receiver gets every datagram exactly once;
//! a receiver that leaves gets nothing more (not even on its TUN device); a link of the tree
//! going down moves the tree and delivery goes on; a node joined through the CLI gets the
//! group's packets on its TUN device; nodes off the tree see none.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Kill, Scratch, nextmini, text};

const GROUP: &str = "239.255.0.10";

/// Joins the group on the node's TUN device, takes datagrams until told to stop, drops the
/// membership when told to leave (and keeps counting), then prints what it got.
const RECEIVER: &str = r#"
import json, os, socket, struct, sys
group, me, leave, stop = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((group, 5000))
mreq = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(me))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
s.settimeout(0.05)
got, joined = [], True
while not os.path.exists(stop):
    if joined and os.path.exists(leave):
        s.setsockopt(socket.IPPROTO_IP, socket.IP_DROP_MEMBERSHIP, mreq)
        joined = False
    try:
        data = s.recv(2048)
    except socket.timeout:
        continue
    got.append(int(data.split(b" ")[0]))
print(json.dumps(got))
"#;

/// Sends datagrams `first..last` to the group over four flows (source ports), 2 ms apart, with
/// a TTL for the tree's hops.
const SENDER: &str = r#"
import socket, sys, time
group, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
socks = []
for port in range(4):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 16)
    s.bind(("0.0.0.0", 6000 + port))
    socks.append(s)
for seq in range(first, last):
    socks[seq % 4].sendto(b"%d payload" % seq, (group, 5000))
    time.sleep(0.002)
"#;

fn tun_rx(prefix: &str, node: u32) -> u64 {
    common::tun_counter(&format!("{prefix}{node}"), "rx_packets")
}

/// The group's row of `group list`: members and the tree's edges.
fn group_row(state: &str) -> (String, Vec<(u32, u32)>) {
    let out = nextmini(&["group", "list", "--state-dir", state]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let row: Vec<String> = table
        .lines()
        .find(|l| l.starts_with(&format!("| {GROUP} |")))
        .unwrap_or_else(|| panic!("{table}"))
        .split('|')
        .map(|c| c.trim().to_owned())
        .collect();
    let edges = row[6]
        .split(',')
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (a, b) = e.split_once('-').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    (row[3].clone(), edges)
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < until, "{what} within 15 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn send(run: &Scratch, source: u32, seqs: std::ops::Range<u32>) {
    let out = run.exec(
        source,
        &[
            "python3",
            "-c",
            SENDER,
            GROUP,
            &seqs.start.to_string(),
            &seqs.end.to_string(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn a_sender_and_eight_receivers_on_a_fat_tree_get_every_datagram_once_through_leaves_and_link_failures()
 {
    let run = Scratch::new("tma");
    let file = run.dir.join("exp.toml");
    std::fs::write(
        &file,
        "[topology]\ntype = \"fat_tree\"\nfat_tree_config = { k = 4 }\n[links]\ndelay = \"1ms\"\n[node_settings]\nprefix = \"tma\"\nunderlay_base = \"172.23.64.0\"\n",
    )
    .unwrap();
    let port = common::free_port().to_string();
    let up = nextmini(&[
        "up",
        file.to_str().unwrap(),
        "--port",
        &port,
        "--state-dir",
        run.state(),
        "--detach",
    ]);
    assert!(up.status.success(), "{}", text(&up.stderr));

    let topo = topology::Preset::FatTree { k: 4 }.build().unwrap();
    let servers: Vec<u32> = (1..=topo.n_nodes())
        .filter(|&n| topo.adjacency()[n as usize - 1].len() == 1)
        .collect();
    let (source, receivers, by_cli, bystander) =
        (servers[0], &servers[1..9], servers[9], servers[10]);
    let created = nextmini(&[
        "group",
        "create",
        &source.to_string(),
        "--address",
        GROUP,
        "--state-dir",
        run.state(),
    ]);
    assert!(created.status.success(), "{}", text(&created.stderr));

    // The receivers, as ordinary programs; their kernels' IGMP reports make them members.
    let flags = |name: &str| run.dir.join(name).to_str().unwrap().to_owned();
    let (leave_flag, stop_flag) = (flags("leave"), flags("stop"));
    let mut programs = BTreeMap::new();
    for (i, &r) in receivers.iter().enumerate() {
        let leave = if i == 0 {
            leave_flag.clone()
        } else {
            flags("never")
        };
        let child = Command::new(env!("CARGO_BIN_EXE_nextmini"))
            .args(["exec", &r.to_string(), "--state-dir", run.state(), "--"])
            .args(["timeout", "90", "python3", "-c", RECEIVER, GROUP])
            .arg(format!("10.0.0.{}", r))
            .args([&leave, &stop_flag])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        programs.insert(r, Kill(child));
    }
    let mut want: Vec<u32> = receivers.to_vec();
    want.sort();
    let want_members = topology::ids::format_ids(&want);
    wait_for("the eight receivers' joins", || {
        group_row(run.state()).0 == want_members
    });
    // One more node through the CLI: no program listens there, its TUN device gets the
    // packets all the same.
    let joined = nextmini(&[
        "group",
        "join",
        GROUP,
        &by_cli.to_string(),
        "--state-dir",
        run.state(),
    ]);
    assert!(joined.status.success(), "{}", text(&joined.stderr));

    let (cli_before, bystander_before) = (tun_rx("tma", by_cli), tun_rx("tma", bystander));
    send(&run, source, 0..300);
    assert_eq!(tun_rx("tma", by_cli) - cli_before, 300);
    assert_eq!(tun_rx("tma", bystander), bystander_before, "off the tree");

    // The first receiver's program leaves the group (its kernel reports it).
    let leaver = receivers[0];
    std::fs::write(&leave_flag, "").unwrap();
    wait_for("the leave", || {
        !group_row(run.state())
            .0
            .split(',')
            .any(|m| m == leaver.to_string())
    });
    let leaver_before = tun_rx("tma", leaver);
    send(&run, source, 1000..1300);
    assert_eq!(
        tun_rx("tma", leaver),
        leaver_before,
        "nothing after leaving"
    );

    // A link of the tree between two switches goes down: the tree moves round it.
    let (_, edges) = group_row(run.state());
    let &(a, b) = edges
        .iter()
        .find(|(a, b)| !servers.contains(a) && !servers.contains(b))
        .unwrap_or_else(|| panic!("{edges:?}"));
    let down = nextmini(&[
        "link",
        "set",
        &format!("{a}-{b}"),
        "--down",
        "--state-dir",
        run.state(),
    ]);
    assert!(down.status.success(), "{}", text(&down.stderr));
    wait_for("the tree to move", || {
        !group_row(run.state()).1.contains(&(a, b))
    });
    std::thread::sleep(Duration::from_millis(300));
    send(&run, source, 2000..2300);

    std::fs::write(&stop_flag, "").unwrap();
    let expected: Vec<u32> = (0..300).chain(1000..1300).chain(2000..2300).collect();
    for (r, mut program) in programs {
        let (mut stdout, mut stderr) = (String::new(), String::new());
        program
            .0
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        program
            .0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(
            program.0.wait().unwrap().success(),
            "receiver {r}: {stderr}"
        );
        let mut got: Vec<u32> = serde_json::from_str(&stdout)
            .unwrap_or_else(|_| panic!("receiver {r}: {stdout} {stderr}"));
        got.sort();
        if r == leaver {
            assert_eq!(got, (0..300).collect::<Vec<_>>(), "the leaver");
        } else {
            assert_eq!(got, expected, "receiver {r}: every datagram once");
        }
    }

    // The store has the group's history: created, the joins (IGMP and CLI), the leave, the
    // tree rebuilt round the link that went down.
    let csv = run.dir.join("csv");
    let out = nextmini(&[
        "metrics",
        "export",
        csv.to_str().unwrap(),
        "--state-dir",
        run.state(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let events = std::fs::read_to_string(csv.join("group_events.csv")).unwrap();
    let kinds: Vec<&str> = events
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(5).unwrap_or_default())
        .collect();
    assert_eq!(kinds.first(), Some(&"created"), "{events}");
    assert!(
        kinds.iter().filter(|k| **k == "joined").count() >= 9,
        "{events}"
    );
    assert!(
        kinds.contains(&"left") && kinds.contains(&"rebuilt"),
        "{events}"
    );
    assert!(events.contains(GROUP), "{events}");
}
