//! The experiment loop with real namespaces and real TCP: flows from the file run to the end
//! and land in the store, a weighted bottleneck shares by weight, a control script's INSERT on
//! PostgreSQL starts a flow and pins a route, a route moves a running iperf3, and the
//! controller's /metrics parses as Prometheus text. Each test owns a prefix, an underlay
//! subnet, a controller port and a state directory.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use controller::flows::FlowState;
use controller::store::Store;

mod common;
use common::{free_port, hops, iperf3_server, nextmini, text};

/// Traffic tests take turns: rates measured on two cores suffer from a neighbour's load.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A test's state directory, experiment file and prefix; swept when dropped (also when the
/// test fails), after `down` if the run is still up.
struct Scratch {
    /// The directory and prefix, taken down and swept when dropped.
    inner: common::Scratch,
    port: u16,
}

impl Scratch {
    fn new(prefix: &'static str, body: &str) -> Scratch {
        let inner = common::Scratch::new(prefix);
        std::fs::write(inner.dir.join("exp.toml"), body).unwrap();
        Scratch {
            inner,
            port: free_port(),
        }
    }

    fn file(&self) -> &str {
        self.inner
            .dir
            .join("exp.toml")
            .to_str()
            .unwrap()
            .to_owned()
            .leak()
    }

    fn state(&self) -> &str {
        self.inner.state()
    }

    fn up(&self, extra: &[&str]) -> Output {
        let port = self.port.to_string();
        let mut args = vec![
            "up",
            self.file(),
            "--port",
            &port,
            "--state-dir",
            self.state(),
        ];
        args.extend(extra);
        nextmini(&args)
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend(["--state-dir", self.state()]);
        nextmini(&all)
    }

    fn exec(&self, node: u32, cmd: &[&str]) -> Output {
        let node = node.to_string();
        let mut args = vec!["exec", node.as_str(), "--state-dir", self.state(), "--"];
        args.extend(cmd);
        nextmini(&args)
    }

    fn sqlite(&self) -> String {
        format!("sqlite://{}/nextmini.db", self.state())
    }
}

fn settings(prefix: &str, base: &str) -> String {
    format!("[node_settings]\nprefix = \"{prefix}\"\nunderlay_base = \"{base}\"\n")
}

/// Bytes of TCP payload in a 1,500-byte packet with timestamps (MSS 1,448).
const TCP_EFFICIENCY: f64 = 1448.0 / 1500.0;

#[test]
fn a_seeds_shaped_file_runs_its_flows_and_the_store_has_their_completion_times() {
    let _turn = turn();
    let body = format!(
        r#"
metrics_collection_interval = 0.5

[topology]
type = "line"
line_config = {{ n_nodes = 3 }}

[links]
delay = "1ms"
queue = 1000

[[link_rates]]
src_node_id = 1
dst_node_id = 2
rate = 1250000
bucket_size = 15000

[[link_rates]]
src_node_id = 2
dst_node_id = 3
rate = 2500000

[[flows]]
src_node_id = 1
dst_node_id = 3
flow_spec = {{ flow_len = {{ Bytes = 2000000 }}, transport = "tcp" }}

[[flows]]
src_node_id = 2
dst_node_id = 3
flow_spec = {{ flow_len = {{ Bytes = 1000000 }}, flow_rate = 250000, cc = "reno" }}
start = "1s"

{}"#,
        settings("tla", "172.20.168.0")
    );
    let s = Scratch::new("tla", &body);
    let out = s.up(&["--until-flows-done"]);
    assert!(out.status.success(), "up: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("2 flows: 2 finished"), "{stdout}");
    assert!(stdout.contains("results are kept in sqlite://"), "{stdout}");
    rt().block_on(async {
        let store = Store::open(&s.sqlite()).await.unwrap();
        let run = store.runs().await.unwrap().last().unwrap().id;
        let flows = store.flow_results(run).await.unwrap();
        assert_eq!(flows.len(), 2);
        assert!(
            flows.iter().all(|f| f.state == FlowState::Finished),
            "{flows:?}"
        );
        // 2 MB through 1.25 MB/s, plus the handshake and slow start: a few percent over.
        let ideal = 2e6 / (1.25e6 * TCP_EFFICIENCY);
        let fct = flows[0].fct_seconds.unwrap();
        assert!(
            fct > ideal * 0.97 && fct < ideal * 1.15,
            "{fct} s against {ideal} s"
        );
        assert_eq!(flows[0].bytes, Some(2_000_000));
        let tcp = flows[0].tcp.unwrap();
        assert!(tcp.srtt_us > 2_000, "{tcp:?}");
        // The second is paced at 250 kB/s, below the link's share it could have.
        let ideal = 1e6 / 250e3;
        let fct = flows[1].fct_seconds.unwrap();
        assert!(
            fct > ideal * 0.9 && fct < ideal * 1.1,
            "{fct} s against {ideal} s"
        );
        // Link samples every half second, and the flow's bytes on both its links.
        let points = store.link_points(run, Some((1, 2)), 0).await.unwrap();
        let carried: i64 = points.iter().filter(|p| p.src == 1).map(|p| p.bytes).sum();
        assert!(carried > 2_000_000, "{carried}");
        for (a, b) in [(1, 2), (2, 3)] {
            let on_link: i64 = store
                .flow_points(run, flows[0].id, 0)
                .await
                .unwrap()
                .iter()
                .filter(|p| (p.local, p.remote) == (a, b))
                .map(|p| p.bytes)
                .sum();
            assert!(on_link >= 2_000_000, "{a}->{b}: {on_link}");
        }
    });
    // What `metrics` reads after the run, and the CSV files.
    let out = s.run(&["metrics"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("| 1→2 |"));
    let csv = s.inner.dir.join("csv");
    let out = s.run(&["metrics", "export", csv.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let flows_csv = std::fs::read_to_string(csv.join("flows.csv")).unwrap();
    assert_eq!(flows_csv.lines().count(), 3, "{flows_csv}");
    assert!(flows_csv.lines().nth(1).unwrap().contains("finished"));
    assert!(
        std::fs::read_to_string(csv.join("app_flows.csv"))
            .unwrap()
            .lines()
            .count()
            >= 3
    );
}

#[test]
fn a_wrr_bottleneck_splits_one_to_three_by_flow_weight() {
    let _turn = turn();
    let body = format!(
        r#"
scheduler_type = "wrr"

[topology]
type = "line"
line_config = {{ n_nodes = 3 }}

[links]
delay = "1ms"
queue = 400

[[link]]
between = [2, 3]
rate = "40mbit"

[[flows]]
src_node_id = 1
dst_node_id = 3
flow_spec = {{ flow_len = {{ Duration = 4.0 }}, flow_weight = 1 }}

[[flows]]
src_node_id = 1
dst_node_id = 3
flow_spec = {{ flow_len = {{ Duration = 4.0 }}, flow_weight = 3 }}

{}"#,
        settings("tlb", "172.20.172.0")
    );
    let s = Scratch::new("tlb", &body);
    let out = s.up(&["--until-flows-done"]);
    assert!(out.status.success(), "up: {}", text(&out.stderr));
    rt().block_on(async {
        let store = Store::open(&s.sqlite()).await.unwrap();
        let run = store.runs().await.unwrap().last().unwrap().id;
        let flows = store.flow_results(run).await.unwrap();
        let (light, heavy) = (
            flows[0].bytes.unwrap() as f64,
            flows[1].bytes.unwrap() as f64,
        );
        let share = heavy / (light + heavy);
        assert!(
            (share - 0.75).abs() < 0.75 * 0.05,
            "weight 3 of 4 got {share:.3}"
        );
        // Together they fill the bottleneck.
        let total = (light + heavy) * 8.0 / 4.0 / 40e6;
        assert!(total > 0.85, "{total}");
    });
}

fn psql(sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "pgusr",
            "-d",
            "nextmini_loop",
            "-qtA",
            "-c",
            sql,
        ])
        .env("PGPASSWORD", "pgpwrd")
        .output()
        .expect("psql (PostgreSQL's client) is installed");
    assert!(out.status.success(), "{sql}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_control_scripts_inserts_on_postgresql_start_a_flow_and_pin_a_route() {
    let _turn = turn();
    let body = format!(
        "[topology]\ntype = \"ring\"\nring_config = {{ n_nodes = 6 }}\n[links]\ndelay = \"1ms\"\n[db]\nurl = \"postgres://pgusr:pgpwrd@127.0.0.1:5432/nextmini_loop\"\n{}",
        settings("tlc", "172.20.176.0")
    );
    let s = Scratch::new("tlc", &body);
    let out = s.up(&["--detach"]);
    assert!(out.status.success(), "up: {}", text(&out.stderr));
    // As the seeds' scripts do: rows in, nothing else.
    let id = psql(
        "INSERT INTO flows (src_node_id, dst_node_id, flow_len_bytes) VALUES (1, 4, 1000000) RETURNING id",
    );
    let id = id.lines().next().unwrap().to_owned();
    wait_for(
        "the inserted flow finishes",
        Duration::from_secs(20),
        || psql(&format!("SELECT state FROM flows WHERE id = {id}")) == "finished",
    );
    let fct: f64 = psql(&format!("SELECT fct_seconds FROM flows WHERE id = {id}"))
        .parse()
        .unwrap();
    assert!(fct > 0.0 && fct < 5.0, "{fct}");
    // A row the run can't take is refused in the row, with the reason.
    let bad = psql(
        "INSERT INTO flows (src_node_id, dst_node_id, flow_len_bytes) VALUES (1, 9, 1) RETURNING id",
    );
    wait_for("the bad flow is refused", Duration::from_secs(10), || {
        psql(&format!(
            "SELECT state FROM flows WHERE id = {}",
            bad.lines().next().unwrap()
        )) == "failed"
    });
    // A route row pins the long way round; deactivating it unpins.
    let route = psql(
        "INSERT INTO routes (src_node_id, dst_node_id, edges) VALUES (1, 3, '[[1,6],[6,5],[5,4],[4,3]]') RETURNING route_id",
    );
    let shown = |s: &Scratch| text(&s.run(&["route", "show", "1", "3"]).stdout);
    wait_for("the route is pinned", Duration::from_secs(10), || {
        shown(&s).contains("1-6,4-3,5-4,6-5")
    });
    let trace = s.exec(
        1,
        &["traceroute", "-n", "-I", "-q", "1", "-w", "1", "10.0.0.3"],
    );
    assert_eq!(
        hops(&trace.stdout),
        ["10.0.0.6", "10.0.0.5", "10.0.0.4", "10.0.0.3"]
    );
    psql(&format!(
        "UPDATE routes SET active = false WHERE route_id = {}",
        route.lines().next().unwrap()
    ));
    wait_for("the route is unpinned", Duration::from_secs(10), || {
        shown(&s).contains("1 -> 3: 1-2,2-3")
    });
    // A group's history lands in PostgreSQL too, its trees as JSON.
    let out = s.run(&["group", "create", "1", "--members", "3-4"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for(
        "the group's creation is stored",
        Duration::from_secs(10),
        || {
            psql(
                "SELECT members::text || ' ' || jsonb_array_length(trees) FROM group_events WHERE event = 'created' ORDER BY id DESC LIMIT 1",
            ) == "[3, 4] 1"
        },
    );
    let out = s.run(&["down"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// iperf3's per-second throughput (bits/s) from its JSON report.
fn intervals(report: &serde_json::Value) -> Vec<f64> {
    report["intervals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["sum"]["bits_per_second"].as_f64().unwrap())
        .collect()
}

fn delivered(s: &Scratch, from: u32, to: u32) -> u64 {
    let out = s.run(&["link", "show", &format!("{from}-{to}")]);
    let table = text(&out.stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with(&format!("| {from}→{to} ")))
        .unwrap_or_else(|| panic!("{table}"));
    row.split('|').nth(7).unwrap().trim().parse().unwrap()
}

#[test]
fn a_route_changed_under_a_running_iperf3_keeps_the_connection_and_moves_the_traffic() {
    let _turn = turn();
    let body = format!(
        "metrics_collection_interval = \"250ms\"\n[topology]\ntype = \"ring\"\nring_config = {{ n_nodes = 6 }}\n[links]\nrate = \"50mbit\"\ndelay = \"1ms\"\nqueue = 200\n{}",
        settings("tld", "172.20.180.0")
    );
    let s = Scratch::new("tld", &body);
    let out = s.up(&["--detach"]);
    assert!(out.status.success(), "up: {}", text(&out.stderr));
    let mut server = iperf3_server(s.state(), 3);
    let client = Command::new(env!("CARGO_BIN_EXE_nextmini"))
        .args([
            "exec",
            "1",
            "--state-dir",
            s.state(),
            "--",
            "iperf3",
            "-c",
            "10.0.0.3",
            "-t",
            "6",
            "-J",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2000));
    let set = s.run(&["route", "set", "1", "3", "--path", "1,6,5,4,3"]);
    assert!(set.status.success(), "{}", text(&set.stderr));
    assert!(
        text(&set.stdout).contains("in place: 4 node(s)"),
        "{}",
        text(&set.stdout)
    );
    // While it runs: the controller's metrics, as Prometheus reads them.
    let metrics = ureq::get(&format!("http://127.0.0.1:{}/metrics", s.port))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let lines = metrics.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "nextmini_link_bytes_total" && s.labels.get("src") == Some("1")),
        "{metrics}"
    );
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "nextmini_route_apply_seconds_count")
    );
    // Counters reach the controller every 250 ms: read them once the change has settled.
    std::thread::sleep(Duration::from_millis(600));
    let (short_before, long_before) = (delivered(&s, 2, 3), delivered(&s, 6, 5));
    let report = client.wait_with_output().unwrap();
    let _ = server.wait();
    assert!(
        report.status.success(),
        "the connection survived: {}",
        text(&report.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    // No second without traffic: the switch costs at most a dip.
    let per_second = intervals(&report);
    assert!(per_second.iter().all(|&b| b > 10e6), "{per_second:?}");
    // The data went the long way after the change: the short way's 2→3 carried nothing
    // more, 6→5 carried the rest.
    std::thread::sleep(Duration::from_millis(600));
    let (short_after, long_after) = (delivered(&s, 2, 3), delivered(&s, 6, 5));
    let moved = long_after - long_before;
    assert!(moved > 10_000_000, "{moved}");
    assert!(
        (short_after - short_before) < moved / 20,
        "{} {moved}",
        short_after - short_before
    );
    let trace = s.exec(
        1,
        &["traceroute", "-n", "-I", "-q", "1", "-w", "1", "10.0.0.3"],
    );
    assert_eq!(
        hops(&trace.stdout),
        ["10.0.0.6", "10.0.0.5", "10.0.0.4", "10.0.0.3"]
    );
    // A flow added from the command line runs and is listed.
    let add = s.run(&["flow", "add", "1", "4", "--bytes", "1MB", "--cc", "bbr"]);
    assert!(add.status.success(), "{}", text(&add.stderr));
    wait_for("the added flow finishes", Duration::from_secs(20), || {
        text(&s.run(&["flow", "list", "--state", "finished"]).stdout).contains("| 1 | 4 | 1MB |")
    });
    let bad = s.run(&["flow", "add", "1", "9", "--bytes", "1MB"]);
    assert!(
        text(&bad.stderr).contains("dst_node_id = 9 is not a node"),
        "{}",
        text(&bad.stderr)
    );
}
