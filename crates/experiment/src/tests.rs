use std::net::Ipv4Addr;
use std::path::Path;

use linkem::{Aqm, Loss, QueueLimit, Rate, Span};

use crate::seeds::{Fate, SEED_KEYS, SeedsFile};
use crate::*;

fn parse(text: &str) -> Result<ExperimentFile, ConfigError> {
    ExperimentFile::parse("exp.toml", text)
}

fn resolve(text: &str) -> Result<Experiment, ConfigError> {
    parse(text)?.resolve(None)
}

const RING6: &str = "[topology]\ntype = \"ring\"\nring_config = { n_nodes = 6 }\n";

#[test]
fn the_seeds_controller_config_parses_and_resolves() {
    let text = r#"
protocol = "tcp"

[topology]
type = "ring"
ring_config = { n_nodes = 600 }

[db]
user = "pgusr"
password = "pgpwrd"
host = "172.16.8.2"
database = "nextmini"
port = "5432"
"#;
    let e = resolve(text).unwrap();
    assert_eq!(e.topology.n_nodes(), 600);
    assert!(e.force_network);
    assert_eq!(
        e.db_url.as_deref(),
        Some("postgres://pgusr:pgpwrd@172.16.8.2:5432/nextmini")
    );
    assert_eq!(e.port, DEFAULT_PORT);
    assert_eq!(e.overlay_prefix_len, 16);
}

#[test]
fn unknown_keys_and_bad_values_name_the_line() {
    let e = parse("[topology]\ntype = \"ring\"\nring_config = { n_nodes = 4 }\nfoo = 1\n")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("exp.toml:4:1:") && e.contains("foo"), "{e}");
    let e = parse("port = \"three thousand\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("exp.toml:1:8:"), "{e}");
    let e = parse("[topology]\ntype = \"ring\"\nring_config = { n_nodes = -4 }\n")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("exp.toml:3:"), "{e}");
    // A bad unit names its table and says how to write it.
    let e = parse("[topology]\nn_nodes = 2\nedges = [[1, 2]]\n[links]\nrate = \"fast\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("exp.toml:5:8: [links] rate:") && e.contains("100mbit"),
        "{e}"
    );
    let e = parse(&format!(
        "{RING6}[[link]]\nbetween = [1, 2]\ncolour = \"red\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("colour"), "{e}");
    // Values of a [[link]] are found in it.
    let e = parse(&format!(
        "{RING6}[[link]]\nbetween = [1, 2]\ndelay = \"soon\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("exp.toml:6:9: [[link]] delay:"), "{e}");
    let e = parse(&format!("{RING6}[links]\nqueue = 0\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least 1 packet"), "{e}");
}

#[test]
fn refused_seeds_keys_name_their_line_and_say_why() {
    for (text, line, expect) in [
        ("scheduler_type = \"sfq\"\n", 1, "a queue per flow"),
        ("protocol = \"sctp\"\n", 1, "anything else is refused"),
        (
            "quic_congestion_control = \"bbr\"\n",
            1,
            "add protocol = \"quic\"",
        ),
        (
            "protocol = \"quic\"\nquic_congestion_control = \"reno\"\n",
            2,
            "use \"cubic\" or \"bbr\"",
        ),
        ("flow_transport = \"udp\"\n", 1, "anything else is refused"),
        (
            "[[nodes]]\nnode_id = 3\noperating_mode = \"fast\"\n",
            1,
            "any other mode is refused",
        ),
    ] {
        let e = parse(&format!("{text}{RING6}")).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("exp.toml:{line}:")) && e.contains(expect),
            "{text}: {e}"
        );
    }
    // What is acted on or accepted parses, and the accepted keys are noted.
    let f = parse(&format!(
        "scheduler_type = \"fifo\"\nmulticast_pool_base = \"239.255.0.0\"\nflow_transport = \"tcp\"\n[[nodes]]\nnode_id = 1\noperating_mode = \"normal\"\n[routing]\nprotocol = \"shortest_path\"\n{RING6}"
    ))
    .unwrap();
    let noted: Vec<&str> = f.notes().iter().map(|n| n.key).collect();
    assert_eq!(noted, ["multicast_pool_base", "flow_transport"]);
    assert_eq!(f.resolve(None).unwrap().topology.n_links(), 6);
}

#[test]
fn the_table_covers_every_key_the_dataplane_file_accepts() {
    let accepted: Vec<&str> = SEED_KEYS
        .iter()
        .filter(|r| r.file == SeedsFile::Dataplane && r.fate == Fate::Accepted)
        .map(|r| r.key)
        .collect();
    let text: String = accepted.iter().map(|k| format!("{k} = 1\n")).collect();
    let f = DataplaneFile::parse("config.toml", &text).unwrap();
    let noted: Vec<&str> = f.notes().iter().map(|n| n.key).collect();
    assert_eq!(noted, accepted);
    // Every dataplane key in the table parses (an unknown one would be an error).
    let all: String = SEED_KEYS
        .iter()
        .filter(|r| r.file == SeedsFile::Dataplane && !accepted.contains(&r.key))
        .map(|r| match r.key {
            "controller_addr" => "controller_addr = \"127.0.0.1:3000\"\n".to_owned(),
            "bridge_ip" => "bridge_ip = \"172.16.8.1\"\n".to_owned(),
            "enable_local_interface" | "auto_add_nat" => format!("{} = false\n", r.key),
            "scheduler_type" => "scheduler_type = \"fifo\"\n".to_owned(),
            "scheduler_drop_strategy" => "scheduler_drop_strategy = \"taildrop\"\n".to_owned(),
            "private_network_port" => "private_network_port = \"8080\"\n".to_owned(),
            key => format!("{key} = 1\n"),
        })
        .collect();
    DataplaneFile::parse("config.toml", &all).unwrap();
}

#[test]
fn the_seeds_keys_document_is_generated_from_the_table() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/seeds-keys.md");
    let rendered = seeds::markdown();
    if std::env::var_os("NEXTMINI_BLESS").is_some() {
        std::fs::write(&path, &rendered).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == rendered,
        "docs/seeds-keys.md is out of date: NEXTMINI_BLESS=1 cargo test -p experiment rewrites it"
    );
}

#[test]
fn placement_entries_become_node_constraints() {
    let e = resolve(&format!(
        "{RING6}[[placement]]\nnodes = \"1-2\"\nschedule = \"h1\"\n[[placement]]\nnode = 3\ncoschedule = 0\ncpu = 0.5\n[[placement]]\nnode = 4\ncolocate = 3\n"
    ))
    .unwrap();
    let nodes = &e.placement;
    assert_eq!(nodes.len(), 6);
    assert_eq!(nodes[0].schedule.as_deref(), Some("h1"));
    assert_eq!(nodes[1].schedule.as_deref(), Some("h1"));
    assert_eq!((nodes[2].coschedule, nodes[2].cpu), (Some(0), 0.5));
    assert_eq!(nodes[3].colocate, Some(3));
    assert_eq!(nodes[5].links, 2, "a ring node has two links");
    let err = |extra: &str| resolve(&format!("{RING6}{extra}")).unwrap_err().to_string();
    assert!(err("[[placement]]\nnode = 9\ncoschedule = 1\n").contains("node 9 is not in ring(6)"));
    assert!(err("[[placement]]\nnode = 1\ncolocate = 0\n").contains("#1"));
    assert!(err("[[placement]]\ncoschedule = 1\n").contains("give `node = N`"));
    assert!(
        err("[[placement]]\nnode = 2\nschedule = \"h\"\ncolocate = 1\n").contains("can't both")
    );
}

#[test]
fn routing_metric_and_explicit_routes() {
    let e = resolve(&format!(
        "{RING6}[routing]\nprotocol = \"shortest_path\"\nmetric = \"delay\"\n[[routes]]\nroute = [1, 6, 5, 4]\n[[routes]]\nroute = [[1, 2], [2, 3], [1, 6], [6, 5], [5, 4], [3, 4]]\n"
    ))
    .unwrap();
    assert_eq!(e.metric, topology::routing::Metric::Delay);
    assert_eq!(e.explicit_routes.len(), 2);
    assert_eq!((e.explicit_routes[1].src, e.explicit_routes[1].dst), (1, 4));
    let err = |extra: &str| resolve(&format!("{RING6}{extra}")).unwrap_err().to_string();
    assert!(err("[routing]\nmetric = \"bandwidth\"\n").contains("use \"hops\" or \"delay\""));
    assert!(err("[routing]\nprotocol = \"ospf\"\n").contains("shortest_path"));
    let e = err("[[routes]]\nroute = [1, 2]\n[[routes]]\nroute = [1, 3]\n");
    assert!(e.contains("#2") && e.contains("1-3 is not a link"), "{e}");
    let e = err("[[routes]]\nroute = [[1, 2], [1, 6]]\n");
    assert!(e.contains("#1") && e.contains("multicast"), "{e}");
}

#[test]
fn a_missing_topology_and_unknown_types_are_errors() {
    assert!(
        resolve("port = 3001\n")
            .unwrap_err()
            .to_string()
            .contains("no [topology]")
    );
    let e = resolve("[topology]\ntype = \"hypercube\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown topology type `hypercube`"), "{e}");
}

#[test]
fn links_are_configured_with_units_and_overrides() {
    let e = resolve(
        "[topology]\ntype = \"line\"\nline_config = { n_nodes = 3 }\n[links]\nrate = \"100mbit\"\ndelay = \"5ms\"\nloss = \"1%\"\nqueue = 50\n[[link]]\nbetween = [2, 3]\ndelay = \"20ms\"\n[[link]]\nfrom = 1\nto = 2\nup = false\n",
    )
    .unwrap();
    let p12 = e.links.params(1, 2);
    let p21 = e.links.params(2, 1);
    assert_eq!(
        (p12.rate, p12.delay, p12.up),
        (Rate::from_bps(100_000_000), Span::from_millis(5), false)
    );
    assert!(p21.up);
    assert_eq!(p21.queue, QueueLimit::Packets(50));
    assert!((p21.loss.mean() - 0.01).abs() < 1e-12);
    assert_eq!(e.links.params(3, 2).delay, Span::from_millis(20));
    let missing =
        resolve("[topology]\nn_nodes = 3\nedges = [[1, 2]]\n[[link]]\nbetween = [1, 3]\n")
            .unwrap_err()
            .to_string();
    assert!(
        missing.contains("no link between nodes 1 and 3"),
        "{missing}"
    );
    // Bursty loss and RED as the file writes them.
    let e = resolve(&format!(
        "{RING6}[links]\ngilbert_elliott = {{ p = 0.01, r = 0.1, loss_good = \"0%\", loss_bad = \"50%\" }}\naqm = \"red\"\nqueue_bytes = 30000\n"
    ))
    .unwrap();
    let p = e.links.params(1, 2);
    assert!(matches!(p.loss, Loss::GilbertElliott(_)));
    assert_eq!((p.aqm, p.queue), (Aqm::RED, QueueLimit::Bytes(30000)));
}

#[test]
fn a_links_placement_weight_is_its_faster_directions_rate_in_mbit() {
    let e = resolve(
        "[topology]\ntype = \"line\"\nline_config = { n_nodes = 4 }\n[links]\nrate = \"10mbit\"\n[[link]]\nfrom = 2\nto = 3\nrate = \"10gbit\"\n[[link]]\nbetween = [3, 4]\nrate = \"64kbit\"\n",
    )
    .unwrap();
    assert_eq!(e.links.cut_weight(1, 2), 10);
    assert_eq!(e.links.cut_weight(3, 2), 10_000);
    assert_eq!(e.links.cut_weight(3, 4), 1, "at least 1");
    let unshaped = resolve(RING6).unwrap();
    assert_eq!(unshaped.links.cut_weight(1, 2), crate::UNSHAPED_WEIGHT);
}

#[test]
fn the_command_line_link_form_goes_on_top_of_the_file() {
    let mut f = parse(&format!(
        "{RING6}[links]\ndelay = \"5ms\"\nrate = \"10mbit\"\n"
    ))
    .unwrap();
    f.set_link_defaults(LinkChange::from_short("delay=1ms,loss=1%").unwrap());
    let p = f.resolve(None).unwrap().links.params(2, 3);
    assert_eq!(
        (p.delay, p.rate),
        (Span::from_millis(1), Rate::from_bps(10_000_000))
    );
    assert!((p.loss.mean() - 0.01).abs() < 1e-12);
}

#[test]
fn imported_maps_get_delays_from_their_lengths() {
    let dir = std::env::temp_dir().join(format!("nm-geo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("map.json"),
        r#"{"nodes": [{"id": "a"}, {"id": "b"}, {"id": "c"}], "links": [{"source": "a", "target": "b", "dist": 1000}, {"source": "b", "target": "c", "dist": 200}]}"#,
    )
    .unwrap();
    let path = dir.join("exp.toml");
    std::fs::write(&path, "[topology]\ntype = \"file\"\nfile = \"map.json\"\n").unwrap();
    let e = ExperimentFile::load(&path)
        .unwrap()
        .resolve(Some(&path))
        .unwrap();
    // 1,000 km at 2×10⁸ m/s is 5 ms; 200 km is 1 ms.
    assert_eq!(e.links.params(1, 2).delay, Span::from_millis(5));
    assert_eq!(e.links.params(3, 2).delay, Span::from_millis(1));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn n_nodes_sizes_presets_and_must_match_the_others() {
    let f = parse("[topology]\ntype = \"ring\"\nring_config = { n_nodes = 4 }\n").unwrap();
    assert_eq!(
        f.clone()
            .resolve_with_n_nodes(None, Some(9))
            .unwrap()
            .topology
            .n_nodes(),
        9
    );
    let f = parse("[topology]\ntype = \"fat_tree\"\nfat_tree_config = { k = 4 }\n").unwrap();
    let e = f
        .resolve_with_n_nodes(None, Some(9))
        .unwrap_err()
        .to_string();
    assert!(e.contains("--n-nodes 9 does not match"), "{e}");
}

#[test]
fn the_seeds_dataplane_config_parses() {
    let text = "num_tun_queues = 1\nnum_packet_processors = 1\nchannel_capacity = 4000\nqueue_capacity = 3000\nfeature = \"concurrent\"\ncontroller_addr = \"127.0.0.1:3000\"\nn_nodes = 800\nnode_id_offset = 0\nbridge_ip = \"172.16.8.1\"\n";
    let f = DataplaneFile::parse("config.toml", text).unwrap();
    assert_eq!(f.n_nodes, Some(800));
    assert_eq!(f.underlay_base(), Some(Ipv4Addr::new(172, 16, 8, 0)));
    assert_eq!(f.controller().unwrap().unwrap().port(), 3000);
    assert_eq!(f.single_node().unwrap(), None);
    let e = DataplaneFile::parse("config.toml", "n_nodes = 2\nauto_add_nat = true\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("config.toml:2:") && e.contains("never adds NAT"),
        "{e}"
    );
    let e = DataplaneFile::parse("config.toml", "scheduler_drop_strategy = \"red\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("aqm = \"red\""), "{e}");
    let one = DataplaneFile::parse("config.toml", "node_id = 7\n").unwrap();
    assert_eq!(one.single_node().unwrap(), Some(7));
    let both = DataplaneFile::parse("config.toml", "node_id = 7\nn_nodes = 3\n").unwrap();
    assert!(both.single_node().is_err());
}

#[test]
fn the_seeds_link_rates_and_scheduler_act_on_the_links() {
    let e = resolve(&format!(
        "scheduler_type = \"wrr\"\n[[link_rates]]\nsrc_node_id = 1\ndst_node_id = 2\nrate = 1250000\nbucket_size = 15000\n[[link_rates]]\nsrc_node_id = 3\ndst_node_id = 2\nrate = \"20mbit\"\n{RING6}"
    ))
    .unwrap();
    let p12 = e.links.params(1, 2);
    assert_eq!(
        (p12.rate, p12.burst, p12.scheduler),
        (
            Rate::from_bps(10_000_000),
            Some(15_000),
            linkem::Scheduler::Wrr
        )
    );
    // One direction only, as the seeds' rate limiter sits at the sender.
    assert_eq!(e.links.params(2, 1).rate, None);
    assert_eq!(e.links.params(3, 2).rate, Rate::from_bps(20_000_000));
    assert_eq!(e.links.params(4, 5).scheduler, linkem::Scheduler::Wrr);
    let err = resolve(&format!(
        "[[link_rates]]\nsrc_node_id = 1\ndst_node_id = 4\nrate = 100\n{RING6}"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("[[link_rates]] #1") && err.contains("no link"),
        "{err}"
    );
    let err = parse(&format!(
        "[[link_rates]]\nsrc_node_id = 1\ndst_node_id = 2\nrate = 0\n{RING6}"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("above 0"), "{err}");
}

#[test]
fn the_seeds_flows_and_workloads_resolve_into_one_list_by_start() {
    let e = resolve(&format!(
        "flow_transport = \"tcp\"\n[[flows]]\nsrc_node_id = 1\ndst_node_id = 4\nflow_spec = {{ flow_len = {{ Bytes = 1000000 }}, flow_rate = 125000, flow_weight = 3, transport = \"tcp\" }}\nstart = \"2s\"\n[[flows]]\nsrc_node_id = 2\ndst_node_id = 5\nflow_spec = {{ flow_len = {{ Duration = 1.5 }}, cc = \"bbr\" }}\n[[workload]]\nload = 0.1\nrate = \"100mbit\"\nsizes = {{ fixed = \"1MB\" }}\nendpoints = {{ list = [[3, 6]] }}\nduration = \"1s\"\nseed = 1\n{RING6}"
    ))
    .unwrap();
    assert_eq!(e.flows[0].src, 2, "the flow at 0 s comes first");
    assert_eq!(e.flows[0].spec.flow_len, proto::FlowLen::Duration(1.5));
    assert_eq!(e.flows[0].spec.cc.as_deref(), Some("bbr"));
    let seeded = e.flows.iter().find(|f| f.src == 1).unwrap();
    assert_eq!(
        (seeded.start, seeded.spec.flow_rate, seeded.spec.flow_weight),
        (std::time::Duration::from_secs(2), Some(125_000), Some(3))
    );
    assert!(e.flows.iter().any(|f| (f.src, f.dst) == (3, 6)));
    assert!(e.flows.windows(2).all(|w| w[0].start <= w[1].start));
    assert_eq!(e.flow_port, proto::DEFAULT_FLOW_PORT);
    for (bad, expect) in [
        (
            "src_node_id = 1\ndst_node_id = 9\nflow_spec = { flow_len = { Bytes = 1 } }",
            "dst_node_id = 9",
        ),
        (
            "src_node_id = 1\ndst_node_id = 1\nflow_spec = { flow_len = { Bytes = 1 } }",
            "itself",
        ),
        (
            "src_node_id = 1\ndst_node_id = 2\nflow_spec = { flow_len = { Bytes = 1 }, flow_weight = 99 }",
            "1 to 63",
        ),
        (
            "src_node_id = 1\ndst_node_id = 2\nflow_spec = { flow_len = { Bytes = 0 } }",
            "0 bytes",
        ),
    ] {
        let e = resolve(&format!("[[flows]]\n{bad}\n{RING6}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[[flows]] #1") && e.contains(expect),
            "{bad}: {e}"
        );
    }
    let e = resolve(&format!(
        "[[flows]]\nsrc_node_id = 1\ndst_node_id = 2\nflow_spec = {{ flow_len = {{ Bytes = 1 }} }}\n[node_settings]\ndataplane = false\n{RING6}"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("flows need the dataplane"), "{e}");
}

#[test]
fn max_mode_nodes_are_read_and_links_between_two_take_only_what_the_kernel_does() {
    let max = |ids: &[u32]| {
        ids.iter()
            .map(|id| format!("[[nodes]]\nnode_id = {id}\noperating_mode = \"max\"\n"))
            .collect::<String>()
    };
    let e = resolve(&format!(
        "{}[[nodes]]\nnode_id = 4\noperating_mode = \"normal\"\n[[link]]\nbetween = [2, 3]\nrate = \"1gbit\"\nqueue_bytes = 90000\n[[link]]\nbetween = [3, 4]\ndelay = \"5ms\"\n{RING6}",
        max(&[3, 2, 2])
    ))
    .unwrap();
    assert_eq!(e.max_nodes, [2, 3]);
    // A delay between two max-mode nodes is refused with the link and the way out.
    let err = resolve(&format!(
        "{}[[link]]\nbetween = [2, 3]\ndelay = \"5ms\"\n{RING6}",
        max(&[2, 3])
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("the link 2->3 joins two max-mode nodes")
            && err.contains("delay 5ms")
            && err.contains("make node 2 or 3 normal"),
        "{err}"
    );
    // The defaults count too, and loss is named.
    let err = resolve(&format!("{}[links]\nloss = \"1%\"\n{RING6}", max(&[1, 2])))
        .unwrap_err()
        .to_string();
    assert!(err.contains("it has loss"), "{err}");
    let err = resolve(&format!("{}{RING6}", max(&[9])))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("max mode for node 9: ring(6) has nodes 1 to 6"),
        "{err}"
    );
    let err = resolve(&format!(
        "{}[node_settings]\ndataplane = false\n{RING6}",
        max(&[1])
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("max mode needs the dataplane"), "{err}");
    // A route pinned out of a max-mode node with a max-mode neighbour is refused; ending
    // there is fine.
    let err = resolve(&format!(
        "{}[[routes]]\nroute = [1, 2, 3, 4]\n{RING6}",
        max(&[2, 3])
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("leaves node 2, which is in max mode"), "{err}");
    resolve(&format!(
        "{}[[routes]]\nroute = [4, 3, 2]\n{RING6}",
        max(&[2])
    ))
    .unwrap();
}

#[test]
fn quic_links_take_their_congestion_controller() {
    let e = resolve(&format!(
        "protocol = \"quic\"\nquic_congestion_control = \"bbr\"\n{RING6}"
    ))
    .unwrap();
    assert!(e.force_network);
    assert_eq!(
        (e.network_transport, e.quic_congestion),
        (proto::Transport::Quic, proto::QuicCongestion::Bbr)
    );
    let e = resolve(&format!("protocol = \"quic\"\n{RING6}")).unwrap();
    assert_eq!(e.quic_congestion, proto::QuicCongestion::Cubic);
    // A link may have a protocol of its own; QUIC's congestion control goes with it.
    let e = resolve(&format!(
        "quic_congestion_control = \"bbr\"\n[[link]]\nbetween = [3, 2]\nprotocol = \"quic\"\n[[link]]\nbetween = [5, 6]\nprotocol = \"udp\"\n{RING6}"
    ))
    .unwrap();
    assert!(!e.force_network);
    assert_eq!(
        e.link_protocols,
        [
            ((2, 3), proto::Transport::Quic),
            ((5, 6), proto::Transport::Udp)
        ]
    );
    assert_eq!(e.quic_congestion, proto::QuicCongestion::Bbr);
    for (link, expect) in [
        (
            "between = [1, 2]\nprotocol = \"sctp\"",
            "use \"tcp\", \"udp\" or \"quic\"",
        ),
        (
            "from = 1\nto = 2\nprotocol = \"udp\"",
            "give it with `between",
        ),
        (
            "between = [1, 3]\nprotocol = \"udp\"",
            "no link between nodes 1 and 3",
        ),
    ] {
        let err = resolve(&format!("[[link]]\n{link}\n{RING6}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(expect), "{err}");
    }
    let err = resolve(&format!(
        "[[nodes]]\nnode_id = 1\noperating_mode = \"max\"\n[[nodes]]\nnode_id = 2\noperating_mode = \"max\"\n[[link]]\nbetween = [1, 2]\nprotocol = \"udp\"\n{RING6}"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("takes no protocol"), "{err}");
}

#[test]
fn lossless_flows_take_the_runs_chunk_size_and_fec() {
    let e = resolve(&format!(
        "flow_transport = \"lossless_unicast\"\n[lossless_runtime_config]\ndefault_chunk_size = 1200\nfec_enabled = true\nfec_default_symbols_per_block = 64\nready_grace_ms = 1500\n[[flows]]\nsrc_node_id = 1\ndst_node_id = 4\nflow_spec = {{ flow_len = {{ Bytes = 1000000 }}, flow_rate = 125000 }}\n{RING6}"
    ))
    .unwrap();
    assert_eq!(
        e.lossless,
        proto::LosslessConfig {
            chunk_size: 1200,
            fec_symbols_per_block: Some(64)
        }
    );
    assert_eq!(
        e.flows[0].spec.transport,
        proto::FlowTransport::LosslessUnicast
    );
    // Without FEC the defaults; a lossless flow needs a rate; the symbol size is the chunk.
    assert_eq!(
        resolve(RING6).unwrap().lossless,
        proto::LosslessConfig::default()
    );
    for (text, expect) in [
        (
            "flow_transport = \"lossless_unicast\"\n[[flows]]\nsrc_node_id = 1\ndst_node_id = 4\nflow_spec = { flow_len = { Bytes = 1000 } }\n",
            "give it flow_rate",
        ),
        (
            "[lossless_runtime_config]\ndefault_chunk_size = 8500\nfec_default_symbol_size = 1400\n",
            "set default_chunk_size = 1400 instead",
        ),
        (
            "[lossless_runtime_config]\ndefault_chunk_size = 20\n",
            "use 64 to 16384",
        ),
        (
            "[lossless_runtime_config]\nfec_colour = 1\n",
            "unknown field",
        ),
    ] {
        let err = resolve(&format!("{text}{RING6}")).unwrap_err().to_string();
        assert!(err.contains(expect), "{err}");
    }
}

#[test]
fn the_multicast_pool_is_read_checked_and_defaults_to_239_255() {
    let pool = |text: &str| {
        resolve(&format!("{text}{RING6}")).map(|e| (e.multicast_pool.base, e.multicast_pool.len))
    };
    assert_eq!(pool("").unwrap(), (Ipv4Addr::new(239, 255, 0, 0), 16));
    assert_eq!(
        pool("multicast_pool_base = \"239.1.2.0\"\nmulticast_pool_mask = \"255.255.255.0\"\n")
            .unwrap(),
        (Ipv4Addr::new(239, 1, 2, 0), 24)
    );
    // The seeds' older files wrote addresses as four numbers.
    assert_eq!(
        pool("multicast_pool_base = [239, 9, 0, 0]\n").unwrap(),
        (Ipv4Addr::new(239, 9, 0, 0), 16)
    );
    for (text, expect) in [
        (
            "multicast_pool_base = \"10.0.0.0\"\n",
            "not inside 224.0.0.0/4",
        ),
        (
            "multicast_pool_base = \"224.0.0.0\"\nmulticast_pool_mask = \"255.0.0.0\"\n",
            "link-local",
        ),
        ("multicast_pool_base = \"239.255.0.7\"\n", "use 239.255.0.0"),
        (
            "multicast_pool_mask = \"255.0.255.0\"\n",
            "not a contiguous mask",
        ),
        ("multicast_pool_base = \"x\"\n", "give an IPv4 address"),
    ] {
        let e = pool(text).unwrap_err().to_string();
        assert!(e.contains(expect), "{text}: {e}");
    }
}

#[test]
fn groups_are_read_and_their_nodes_addresses_and_trees_checked() {
    let exp = resolve(&format!(
        "[[groups]]\nsource = 1\nmembers = \"3-4\"\n[[groups]]\nsource = 2\nmembers = [5, 6]\naddress = \"239.255.1.1\"\ntrees = [{{ tree_id = 1, weight = 2, edges = [[2, 3], [3, 4], [4, 5], [5, 6]] }}]\n{RING6}"
    ))
    .unwrap();
    assert_eq!(exp.groups.len(), 2);
    assert_eq!(exp.groups[0].members, vec![3, 4]);
    assert_eq!(exp.groups[1].address, Some(Ipv4Addr::new(239, 255, 1, 1)));
    assert_eq!(exp.groups[1].trees.as_ref().unwrap()[0].weight, 2.0);
    for (text, expect) in [
        ("[[groups]]\nsource = 9\n", "node 9 is not a node"),
        ("[[groups]]\nsource = 1\nmembers = \"x\"\n", "members"),
        (
            "[[groups]]\nsource = 1\naddress = \"239.1.0.1\"\n",
            "outside the multicast pool",
        ),
        (
            "[[groups]]\nsource = 1\naddress = \"239.255.0.5\"\n[[groups]]\nsource = 2\naddress = \"239.255.0.5\"\n",
            "taken by an earlier group",
        ),
        (
            "[[groups]]\nsource = 1\ntrees = [{ edges = [[1, 2], [2, 3], [1, 6], [6, 5], [5, 4], [4, 3]] }]\n",
            "two parents",
        ),
        (
            "[[groups]]\nsource = 1\ntrees = [{ edges = [[1, 4]] }]\n",
            "no link between nodes 1 and 4",
        ),
        (
            "[[groups]]\nsource = 1\n[node_settings]\ndataplane = false\n",
            "need the dataplane",
        ),
        ("[[groups]]\nsource = 1\ncolour = 3\n", "colour"),
    ] {
        let e = resolve(&format!("{text}{RING6}")).unwrap_err().to_string();
        assert!(e.contains(expect), "{text}: {e}");
    }
}
