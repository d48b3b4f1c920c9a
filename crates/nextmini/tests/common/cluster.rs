//! Several hosts on this one machine: each "host" is a network namespace with its own address
//! on a switch bridge and its own agent process (started with `nsenter --net`, so it shares
//! the machine's mounts, as an agent on a real host does). A cluster's names carry its tag
//! (`<tag>sw` the switch, `<tag>h1..3` the hosts, `<tag>s1..3` their switch ports) and its
//! addresses the subnet 172.20.<subnet>.0/24; dropping it stops every process it started (by
//! PID), removes the experiments' prefixes from every host, and the hosts themselves.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use hostnet::Prefix;

use super::NETNS_DIR;

pub const HOSTS: [u32; 3] = [1, 2, 3];

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct Cluster {
    tag: &'static str,
    subnet: u8,
    /// Prefixes of the experiments run here, removed at the end.
    prefixes: Vec<&'static str>,
    pub children: Vec<Child>,
    pub dir: PathBuf,
}

impl Cluster {
    pub fn new(tag: &'static str, subnet: u8, prefixes: &[&'static str]) -> Cluster {
        let cluster = Cluster {
            tag,
            subnet,
            prefixes: prefixes.to_vec(),
            children: Vec::new(),
            dir: std::env::temp_dir().join(format!("nextmini-{tag}-{}", std::process::id())),
        };
        cluster.remove_hosts();
        std::fs::create_dir_all(&cluster.dir).unwrap();
        let switch = cluster.switch();
        sh(&[
            "ip", "link", "add", &switch, "mtu", "1600", "type", "bridge",
        ]);
        let addr = format!("{}/24", cluster.switch_addr());
        sh(&["ip", "addr", "add", &addr, "dev", &switch]);
        sh(&["ip", "link", "set", &switch, "up"]);
        for h in HOSTS {
            let ns = cluster.host_ns(h);
            let port = format!("{tag}s{h}");
            sh(&["ip", "netns", "add", &ns]);
            sh(&[
                "ip", "link", "add", &port, "mtu", "1600", "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            sh(&["ip", "link", "set", &port, "master", &switch, "up"]);
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            sh(&["ip", "-n", &ns, "link", "set", "eth0", "mtu", "1600", "up"]);
            let addr = format!("{}/24", cluster.host_addr(h));
            sh(&["ip", "-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
        }
        cluster
    }

    fn switch(&self) -> String {
        format!("{}sw", self.tag)
    }

    /// The machine's own address on the switch (where controllers and heads listen).
    pub fn switch_addr(&self) -> String {
        format!("172.20.{}.254", self.subnet)
    }

    pub fn host_ns(&self, h: u32) -> String {
        format!("{}h{h}", self.tag)
    }

    pub fn host_addr(&self, h: u32) -> String {
        format!("172.20.{}.{h}", self.subnet)
    }

    fn remove_hosts(&self) {
        for h in HOSTS {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.host_ns(h)])
                .output();
            let _ = Command::new("ip")
                .args(["link", "del", &format!("{}s{h}", self.tag)])
                .output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.switch()])
            .output();
    }

    /// Starts a process we own (stopped by PID at the end), its stderr in the cluster's
    /// directory.
    pub fn spawn(&mut self, mut cmd: Command, log: &str) -> usize {
        let log = std::fs::File::create(self.dir.join(log)).unwrap();
        cmd.stdout(Stdio::null()).stderr(log);
        self.children.push(cmd.spawn().unwrap());
        self.children.len() - 1
    }

    /// `nextmini <args>` on host `h` (in its network namespace).
    pub fn on_host(&self, h: u32, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.host_ns(h)))
            .arg(env!("CARGO_BIN_EXE_nextmini"))
            .args(args);
        cmd
    }

    pub fn kill(&mut self, i: usize) {
        let _ = self.children[i].kill();
        let _ = self.children[i].wait();
    }

    /// Waits (up to 30 s) for every process we started to exit.
    pub fn wait_all(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for c in &mut self.children {
            while c.try_wait().unwrap().is_none() {
                assert!(Instant::now() < deadline, "a process did not exit");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Runs a command inside a node's namespace.
    pub fn exec(node_ns: &str, cmd: &[&str]) -> Output {
        super::in_netns(node_ns, cmd)
    }

    /// Whether three pings from a node get through.
    pub fn pings(node_ns: &str, addr: &str) -> bool {
        Self::exec(node_ns, &["ping", "-c", "3", "-i", "0.2", "-W", "1", addr])
            .status
            .success()
    }

    /// What is left of `prefix` on host `h` (its links) and on the machine (namespaces).
    pub fn leftovers(&self, h: u32, prefix: &'static str) -> Vec<String> {
        let ns = Path::new(NETNS_DIR).join(self.host_ns(h));
        std::thread::spawn(move || {
            let f = std::fs::File::open(ns).unwrap();
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            hostnet::cleanup::find(&Prefix::new(prefix).unwrap(), Path::new(NETNS_DIR)).unwrap()
        })
        .join()
        .unwrap()
    }

    /// `nextmini cleanup --prefix` on host `h`, as a user would after a crash there.
    pub fn cleanup(&self, h: u32, prefix: &str) -> Output {
        self.on_host(h, &["cleanup", "--prefix", prefix])
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
            for p in &self.prefixes {
                let _ = self.cleanup(h, p);
            }
        }
        for p in &self.prefixes {
            let _ = hostnet::cleanup::sweep(&Prefix::new(p).unwrap(), Path::new(NETNS_DIR));
        }
        self.remove_hosts();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A controller's or head's JSON at `url`, or Null while it does not answer.
pub fn get_json(url: &str) -> serde_json::Value {
    get_json_trusting(url, None)
}

/// TLS trusting only the certificate in the file `ca`.
fn trusting(ca: &Path) -> ureq::tls::TlsConfig {
    let pem = std::fs::read(ca).unwrap();
    let certs = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c.to_owned()),
            _ => None,
        })
        .collect();
    ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(certs)))
        .build()
}

/// POSTs nothing to an `https://` URL with a token, trusting the certificate in `ca`: the
/// answer's status.
pub fn post_trusting(url: &str, ca: &Path, token: &str) -> u16 {
    ureq::post(url)
        .header("authorization", &format!("Bearer {token}"))
        .config()
        .tls_config(trusting(ca))
        .http_status_as_error(false)
        .build()
        .send_empty()
        .map_or(0, |r| r.status().as_u16())
}

/// The same, for an `https://` URL: trusting only the certificate in the file `ca`.
pub fn get_json_trusting(url: &str, ca: Option<&Path>) -> serde_json::Value {
    let mut config = ureq::get(url).config();
    if let Some(ca) = ca {
        config = config.tls_config(trusting(ca));
    }
    config
        .build()
        .call()
        .and_then(|mut r| r.body_mut().read_to_string())
        .ok()
        .and_then(|b| serde_json::from_str(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// Polls `url` until `done` holds, up to 30 s.
pub fn wait_json(
    url: &str,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_json_trusting(url, None, what, done)
}

/// The same, for an `https://` URL, trusting the certificate in `ca`.
pub fn wait_json_trusting(
    url: &str,
    ca: Option<&Path>,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = get_json_trusting(url, ca);
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: last answer {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
