//! Host-level helpers shared by the commands: privilege checks, cleanup, memory readings.

use std::path::Path;

use anyhow::{Context, Result, bail};
use hostnet::Prefix;

pub use controller::local::DEFAULT_PREFIX;
pub use hostnet::procfs::MemInfo;

/// Fails with a clear line unless we run as root: namespaces, veths and bridges need
/// CAP_SYS_ADMIN and CAP_NET_ADMIN.
pub fn require_root(what: &str) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "{what} needs root (it creates network namespaces, veths and bridges): run it with sudo"
        );
    }
    Ok(())
}

pub fn cleanup(prefix: &str, netns_dir: &Path, dry_run: bool, force: bool) -> Result<()> {
    require_root("nextmini cleanup")?;
    let prefix = Prefix::new(prefix)?;
    // A live run's agent holds its prefix: its namespaces are not leftovers.
    if let Some(pid) = hostnet::claim::PrefixClaim::holder(&prefix)?
        && !force
    {
        bail!(
            "prefix {prefix} belongs to a running experiment (agent pid {pid}): stop it with `nextmini down`, or remove it anyway with `nextmini cleanup --prefix {prefix} --force`"
        );
    }
    if dry_run {
        for line in hostnet::cleanup::find(&prefix, netns_dir)? {
            println!("{line}");
        }
        return Ok(());
    }
    let report = hostnet::cleanup::sweep(&prefix, netns_dir)
        .with_context(|| format!("cleaning up prefix {prefix}"))?;
    // A killed agent's claim file (its lock went with it).
    let stale_claim = hostnet::claim::PrefixClaim::clear_stale(&prefix)?;
    for (pid, comm) in &report.holders {
        eprintln!(
            "warning: process {pid} ({comm}) is still inside a namespace of prefix {prefix}; it was left running"
        );
    }
    if report.is_empty() && !stale_claim {
        println!("nothing of prefix {prefix} was left on this host");
    } else if report.is_empty() {
        println!("removed prefix {prefix}: the claim file of a killed run");
    } else {
        println!(
            "removed prefix {prefix}: {} namespaces, {} veths (with their namespaces) + {} deleted, {} bridges",
            report.namespaces, report.veths_with_namespaces, report.veths_deleted, report.bridges
        );
    }
    Ok(())
}

/// This machine's name, for agents and heads that are not given one.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The accepted seeds' keys of a file, at `RUST_LOG=info`: why each changes nothing.
pub fn log_notes(notes: &[experiment::seeds::Note]) {
    for note in notes {
        tracing::info!("{}: accepted, no effect: {}", note.key, note.what);
    }
}

/// A list of hosts as written, with ranges (`kn[008-011],kn020`, `10.1.0.[1-3]`, `all`),
/// checked when the command line is read and passed on as written.
#[derive(Debug, Clone)]
pub struct HostList(pub String);

impl std::str::FromStr for HostList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        scheduler::ranges::split_list(s).map_err(|e| e.to_string())?;
        Ok(HostList(s.to_owned()))
    }
}

/// Node ids as written (`1-4,9`), checked when the command line is read.
#[derive(Debug, Clone)]
pub struct NodeIds {
    pub written: String,
    pub ids: Vec<u32>,
}

impl std::str::FromStr for NodeIds {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(NodeIds {
            written: s.to_owned(),
            ids: topology::ids::parse_ids(s)?,
        })
    }
}

/// A new token written to `path` (replacing what was there), readable by its owner only.
pub fn write_token(path: &Path) -> Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let token = controller::run::new_token()?;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| writeln!(f, "{token}"))
        .with_context(|| format!("cannot write the token to {}", path.display()))?;
    Ok(token)
}

/// The server's TLS certificate in `state_dir` when `asked` (made there once), and a line
/// that tells `clients` what to trust and where to reach it.
pub fn tls_identity(
    asked: bool,
    state_dir: &Path,
    clients: &str,
    port: u16,
) -> Result<Option<tls::Identity>> {
    if !asked {
        return Ok(None);
    }
    let identity = tls::Identity::in_state_dir(state_dir)?;
    eprintln!(
        "TLS: {clients} trust {} (NEXTMINI_CA) and use https://<this host>:{port}",
        identity.cert_path.display()
    );
    Ok(Some(identity))
}
