//! Host mode: the agent registers this host with a head (`nextmini serve`) and runs whatever
//! shares of experiments the head places here, each as its own agent run (its own prefix,
//! underlay, tunnels and controller session). It reconnects when the head goes away.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hostnet::{FabricSpec, Prefix, TunnelSpec, UnderlayPlan};
use proto::{HeadToHost, HostToHead};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::{AgentConfig, AgentError};

#[derive(Debug, Clone)]
pub struct HostConfig {
    pub head: SocketAddr,
    pub name: String,
    /// Where nodes accept TCP links.
    pub link_port: u16,
    /// Creator threads for plumbing.
    pub threads: usize,
    /// Where node namespaces are mounted.
    pub netns_dir: PathBuf,
    /// The head's token (`head.token` in its state directory): this host's session and its
    /// experiments' agents carry it.
    pub token: Option<String>,
    /// The head (and its experiments' controllers) are reached over TLS, trusting this.
    pub tls: Option<tls::Trust>,
}

/// How often the host reports its load.
const LOAD_EVERY: Duration = Duration::from_secs(5);

/// The one-minute load average (`/proc/loadavg`).
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// How long to wait before dialling the head again.
const RECONNECT: Duration = Duration::from_secs(1);

/// Serves the head until `shutdown`: every experiment run here is torn down first.
pub async fn serve(cfg: HostConfig, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    tokio::pin!(shutdown);
    let mut runs: HashMap<String, Run> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, Result<(), String>)>();
    let (exec_tx, mut exec_rx) = mpsc::unbounded_channel::<HostToHead>();
    let mut warned = false;
    loop {
        let session = tokio::select! {
            s = connect(&cfg) => s,
            () = &mut shutdown => break,
        };
        let (mut sink, mut incoming, addr) = match session {
            Ok(s) => {
                warned = false;
                s
            }
            Err(e) => {
                if !warned {
                    tracing::warn!("cannot reach the head at {}: {e}; retrying", cfg.head);
                    warned = true;
                }
                tokio::select! {
                    () = tokio::time::sleep(RECONNECT) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        tracing::info!(
            "registered with the head at {} as {} ({addr})",
            cfg.head,
            cfg.name
        );
        let mut load_tick = tokio::time::interval(LOAD_EVERY);
        loop {
            tokio::select! {
                _ = load_tick.tick() => {
                    let load = HostToHead::Load {
                        load1: load_average(),
                        mem_available_mib: hostnet::procfs::mem_available() >> 20,
                    };
                    if !send(&mut sink, &load).await {
                        break;
                    }
                }
                msg = incoming.next() => {
                    let msg = match msg {
                        Some(Ok(Message::Binary(b))) => match proto::decode::<HeadToHost>(&b) {
                            Ok(m) => m,
                            Err(e) => {
                                tracing::warn!("the head sent something unreadable: {e}");
                                break;
                            }
                        },
                        Some(Ok(_)) => continue,
                        _ => {
                            tracing::warn!("the head went away; reconnecting");
                            break;
                        }
                    };
                    match msg {
                        HeadToHost::Launch { experiment, port, prefix, base, vni, node_ids, peers } => {
                            let spec = match launch_spec(&cfg, addr, &prefix, base, vni, &node_ids, peers) {
                                Ok(s) => s,
                                Err(e) => {
                                    let _ = send(&mut sink, &HostToHead::Launched { experiment, error: Some(e.to_string()) }).await;
                                    continue;
                                }
                            };
                            let agent = AgentConfig {
                                controller: SocketAddr::new(cfg.head.ip(), port),
                                host: cfg.name.clone(),
                                spec,
                                link_port: cfg.link_port,
                                fail_nodes: Vec::new(),
                                tun_devices: true,
                                token: cfg.token.clone(),
                                adopt: false,
                                tls: cfg.tls.clone(),
                            };
                            let (stop_tx, stop_rx) = oneshot::channel::<()>();
                            let done = done_tx.clone();
                            let name = experiment.clone();
                            tokio::spawn(async move {
                                let result = crate::run(agent, async { let _ = stop_rx.await; }).await;
                                let _ = done.send((name, result.map(|_| ()).map_err(|e| e.to_string())));
                            });
                            runs.insert(experiment, Run { stop: Some(stop_tx), cleared: false });
                        }
                        HeadToHost::Clear { experiment } => {
                            match runs.get_mut(&experiment) {
                                Some(run) => {
                                    run.cleared = true;
                                    if let Some(stop) = run.stop.take() {
                                        let _ = stop.send(());
                                    }
                                }
                                None => {
                                    // Nothing running here (already gone, or left by a crash):
                                    // sweep whatever carries its prefix, then confirm.
                                    sweep(&cfg, &experiment);
                                    let _ = send(&mut sink, &HostToHead::Cleared { experiment }).await;
                                }
                            }
                        }
                        HeadToHost::Exec { request, netns, argv, timeout_ms } => {
                            let path = cfg.netns_dir.join(netns);
                            let results = exec_tx.clone();
                            tokio::spawn(async move {
                                let done = run_in_node(path, argv, Duration::from_millis(timeout_ms)).await;
                                let _ = results.send(HostToHead::ExecDone {
                                    request,
                                    code: done.0,
                                    stdout: done.1,
                                    stderr: done.2,
                                });
                            });
                        }
                        HeadToHost::Accepted | HeadToHost::Rejected { .. } => {}
                    }
                }
                Some(reply) = exec_rx.recv() => {
                    if !send(&mut sink, &reply).await {
                        break;
                    }
                }
                Some((experiment, result)) = done_rx.recv() => {
                    let run = runs.remove(&experiment);
                    if let Err(e) = &result {
                        tracing::warn!("experiment {experiment}: {e}");
                        let _ = send(&mut sink, &HostToHead::Launched { experiment: experiment.clone(), error: Some(e.clone()) }).await;
                    }
                    // The run removed everything it made; a clear is confirmed once it has.
                    if run.is_some_and(|r| r.cleared) {
                        let _ = send(&mut sink, &HostToHead::Cleared { experiment }).await;
                    }
                }
                () = &mut shutdown => {
                    stop_all(&mut runs, &mut done_rx).await;
                    return Ok(());
                }
            }
        }
    }
    stop_all(&mut runs, &mut done_rx).await;
    Ok(())
}

struct Run {
    stop: Option<oneshot::Sender<()>>,
    cleared: bool,
}

type Sink =
    futures_util::stream::SplitSink<tokio_tungstenite::WebSocketStream<tls::Stream>, Message>;
type Incoming = futures_util::stream::SplitStream<tokio_tungstenite::WebSocketStream<tls::Stream>>;

/// Why a session with the head could not be had.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("this host reaches the head over IPv6 ({0}): use IPv4")]
    Ipv6(std::net::Ipv6Addr),
    #[error("{0}")]
    Open(String),
    #[error("the head closed the session")]
    Closed,
    #[error("the head refused this host: {0}")]
    Refused(String),
    #[error("the head answered {0} to hello")]
    Unexpected(String),
    #[error("{0}")]
    Decode(#[from] proto::ProtoError),
}

async fn connect(cfg: &HostConfig) -> Result<(Sink, Incoming, Ipv4Addr), SessionError> {
    let stream = tokio::net::TcpStream::connect(cfg.head).await?;
    let addr = match stream.local_addr()?.ip() {
        IpAddr::V4(a) => a,
        IpAddr::V6(a) => return Err(SessionError::Ipv6(a)),
    };
    let ws = crate::line::open_session(
        cfg.head,
        proto::HOST_PATH,
        stream,
        cfg.tls.as_ref(),
        cfg.token.as_deref(),
    )
    .await
    .map_err(|e| match e {
        crate::line::OpenError::NoToken => SessionError::Refused(
            "it asks hosts for its token: set NEXTMINI_TOKEN to the contents of head.token in the head's state directory".into(),
        ),
        crate::line::OpenError::Other(e) => SessionError::Open(e),
    })?;
    let (mut sink, mut incoming) = ws.split();
    let hello = HostToHead::Hello {
        version: proto::VERSION,
        name: cfg.name.clone(),
        cpus: std::thread::available_parallelism().map_or(1, |c| c.get() as u32),
        mem_mib: hostnet::procfs::kib_field("/proc/meminfo", "MemTotal") >> 20,
        addr,
    };
    if !send(&mut sink, &hello).await {
        return Err(SessionError::Closed);
    }
    match incoming.next().await {
        Some(Ok(Message::Binary(b))) => match proto::decode::<HeadToHost>(&b) {
            Ok(HeadToHost::Accepted) => Ok((sink, incoming, addr)),
            Ok(HeadToHost::Rejected { reason }) => Err(SessionError::Refused(reason)),
            Ok(other) => Err(SessionError::Unexpected(format!("{other:?}"))),
            Err(e) => Err(e.into()),
        },
        _ => Err(SessionError::Closed),
    }
}

fn launch_spec(
    cfg: &HostConfig,
    local: Ipv4Addr,
    prefix: &str,
    base: Ipv4Addr,
    vni: u32,
    node_ids: &[u32],
    peers: Vec<Ipv4Addr>,
) -> Result<FabricSpec, hostnet::plan::PlanError> {
    let prefix = Prefix::new(prefix)?;
    let plan = UnderlayPlan::with_ids(prefix, base, node_ids)?;
    let mut spec = FabricSpec::new(plan);
    spec.netns_dir = Some(cfg.netns_dir.clone());
    spec.threads = cfg.threads;
    if !peers.is_empty() {
        spec.tunnel = Some(TunnelSpec {
            vni,
            local,
            peers,
            port: 4789,
        });
    }
    Ok(spec)
}

/// Runs `argv` inside the namespace mounted at `path`; returns the exit code and what it
/// printed.
async fn run_in_node(path: PathBuf, argv: Vec<String>, timeout: Duration) -> (i32, String, String) {
    use std::os::unix::process::ExitStatusExt;
    let Some((program, args)) = argv.split_first() else {
        return (127, String::new(), "no command given".to_owned());
    };
    let (mut cmd, _netns) = match hostnet::netns::command_in(&path, program) {
        Ok(c) => c,
        Err(e) => {
            return (
                127,
                String::new(),
                format!("no node namespace {}: {e}", path.display()),
            );
        }
    };
    cmd.args(args).stdin(std::process::Stdio::null());
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    match tokio::time::timeout(timeout, cmd.output()).await {
        Ok(Ok(out)) => (
            out.status
                .code()
                .unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0)),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ),
        Ok(Err(e)) => (127, String::new(), format!("cannot run {program}: {e}")),
        Err(_) => (
            124,
            String::new(),
            format!("{program} timed out after {timeout:?}"),
        ),
    }
}

/// Removes whatever carries an experiment's prefix on this host.
fn sweep(cfg: &HostConfig, prefix: &str) {
    if let Ok(p) = Prefix::new(prefix)
        && let Err(e) = hostnet::cleanup::sweep(&p, &cfg.netns_dir)
    {
        tracing::warn!("cleaning up {prefix}: {e}");
    }
}

async fn stop_all(
    runs: &mut HashMap<String, Run>,
    done: &mut mpsc::UnboundedReceiver<(String, Result<(), String>)>,
) {
    for run in runs.values_mut() {
        if let Some(stop) = run.stop.take() {
            let _ = stop.send(());
        }
    }
    while !runs.is_empty() {
        match done.recv().await {
            Some((exp, _)) => {
                runs.remove(&exp);
            }
            None => return,
        }
    }
}

async fn send(sink: &mut Sink, msg: &HostToHead) -> bool {
    match proto::encode(msg) {
        Ok(bytes) => sink.send(Message::Binary(bytes.into())).await.is_ok(),
        Err(_) => false,
    }
}
