//! Finding and removing what a crashed or killed run left behind, by its prefix.
//!
//! Only names that [`Prefix::classify`] recognises are touched. Order matters for speed:
//! unmounting every namespace first lets the kernel destroy them in one batch, and each
//! namespace takes its node's veth with it; veths that are still there afterwards (their
//! namespace held by some process) are deleted in one group request when the group holds only
//! this prefix's links, and the bridges go last. Running it twice is harmless.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::fabric::link_group;
use crate::monitor::LinkMonitor;
use crate::msg;
use crate::netns;
use crate::plan::{Owned, Prefix};
use crate::rtnl::{Mode, Rtnl};

/// What a sweep found and removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanupReport {
    pub namespaces: usize,
    /// Veths the kernel removed with their namespaces.
    pub veths_with_namespaces: usize,
    /// Veths deleted explicitly (their namespace was held elsewhere, or already gone).
    pub veths_deleted: usize,
    pub bridges: usize,
    /// Processes still inside a node namespace: (pid, command). Left running; the namespace
    /// lives on until they exit, but nothing of it is reachable any more.
    pub holders: Vec<(u32, String)>,
}

impl CleanupReport {
    pub fn is_empty(&self) -> bool {
        self.namespaces == 0
            && self.veths_with_namespaces == 0
            && self.veths_deleted == 0
            && self.bridges == 0
    }
}

/// Removes everything of `prefix` on this host: namespace mounts in `netns_dir`, host veths,
/// bridges.
pub fn sweep(prefix: &Prefix, netns_dir: &Path) -> io::Result<CleanupReport> {
    let mut report = CleanupReport::default();
    let mut monitor = LinkMonitor::open()?;

    // Namespace mounts, node id → path: the directory's files, and any mount whose file is gone.
    let mut mounts: HashMap<u32, PathBuf> = HashMap::new();
    let mut consider = |path: PathBuf| {
        let id = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| match prefix.classify(n) {
                Some(Owned::Netns(id)) => Some(id),
                _ => None,
            });
        if let Some(id) = id {
            mounts.insert(id, path);
        }
    };
    match std::fs::read_dir(netns_dir) {
        Ok(entries) => {
            for e in entries {
                consider(e?.path());
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    for path in netns::mounted_under(netns_dir)? {
        consider(path);
    }

    // Who else keeps these namespaces alive: their veths won't go with the mount.
    let inodes: HashMap<u64, u32> = mounts
        .iter()
        .filter_map(|(id, p)| std::fs::metadata(p).ok().map(|m| (m.ino(), *id)))
        .collect();
    let held = holders_of(&inodes);
    let held_ids: HashSet<u32> = held.iter().map(|h| h.node_id).collect();
    report.holders = held
        .iter()
        .filter(|h| h.inside)
        .map(|h| (h.pid, h.comm.clone()))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    report.holders.sort();

    for path in mounts.values() {
        netns::unmount(path)?;
    }
    report.namespaces = mounts.len();

    // Veths whose namespace was only held by its mount go with it; the others are deleted.
    let veths = monitor.present(|n| matches!(prefix.classify(n), Some(Owned::Veth(_))))?;
    let found = veths.len();
    let (expected, mut delete): (HashMap<String, u32>, Vec<(String, u32)>) = {
        let mut expected = HashMap::new();
        let mut delete = Vec::new();
        for (name, index) in veths {
            match prefix.classify(&name) {
                Some(Owned::Veth(id)) if mounts.contains_key(&id) && !held_ids.contains(&id) => {
                    expected.insert(name, index);
                }
                _ => delete.push((name, index)),
            }
        }
        (expected, delete)
    };
    let deleted_now = delete.len();
    delete_veths(prefix, &delete)?;
    let remaining = monitor.wait_gone(expected, Duration::from_secs(5))?;
    report.veths_with_namespaces = found - deleted_now - remaining.len();
    delete = remaining;
    delete_veths(prefix, &delete)?;
    report.veths_deleted = deleted_now + delete.len();

    let bridges = monitor.present(|n| {
        matches!(
            prefix.classify(n),
            Some(Owned::Bridge(_) | Owned::Tunnel(_))
        )
    })?;
    let mut host: Rtnl<()> = Rtnl::open()?;
    for index in bridges.values() {
        host.queue(msg::del_link(*index), Mode::Delete, ())?;
    }
    ignore_vanished(host.wait())?;
    report.bridges = bridges.len();
    Ok(report)
}

/// Deletes the given veths: in one group request when the prefix's group holds nothing else,
/// otherwise one by one.
fn delete_veths(prefix: &Prefix, veths: &[(String, u32)]) -> io::Result<()> {
    if veths.is_empty() {
        return Ok(());
    }
    let group = link_group(prefix);
    let mut host: Rtnl<()> = Rtnl::open()?;
    let links = host.dump(msg::get_links())?;
    let group_is_ours = links
        .iter()
        .filter_map(msg::link_name)
        .filter(|(_, _, g)| *g == group)
        .all(|(name, _, _)| matches!(prefix.classify(name), Some(Owned::Veth(_))));
    let started = Instant::now();
    if group_is_ours {
        ignore_vanished(host.request(msg::del_link_group(group), Mode::Delete, ()))?;
    }
    // Veths not in the group (made by an older build, or the group is shared) one by one.
    let left: HashMap<u32, ()> = host
        .dump(msg::get_links())?
        .iter()
        .filter_map(msg::link_name)
        .filter(|(name, _, _)| matches!(prefix.classify(name), Some(Owned::Veth(_))))
        .map(|(_, index, _)| (index, ()))
        .collect();
    for index in left.keys() {
        host.queue(msg::del_link(*index), Mode::Delete, ())?;
    }
    ignore_vanished(host.wait())?;
    tracing::debug!(
        veths = veths.len(),
        seconds = started.elapsed().as_secs_f64(),
        "deleted veths"
    );
    Ok(())
}

/// A link that vanished between listing and deleting is what we wanted anyway.
fn ignore_vanished(r: Result<(), crate::rtnl::Refused<()>>) -> io::Result<()> {
    match r {
        Err(r) if r.error.raw_os_error() != Some(libc::ENODEV) => Err(r.error),
        _ => Ok(()),
    }
}

/// Kills (SIGKILL) every process whose network namespace is one of `inodes`, other than
/// this one: programs started in a run's nodes (by `nextmini exec`, `ip netns exec`, a
/// script) end with the run instead of keeping its namespaces alive. Returns them as
/// `pid comm`.
pub fn stop_processes_inside(inodes: &HashSet<u64>) -> Vec<String> {
    let mut stopped = Vec::new();
    if inodes.is_empty() {
        return stopped;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return stopped;
    };
    let me = std::process::id();
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let inside = std::fs::metadata(p.path().join("ns/net"))
            .is_ok_and(|meta| inodes.contains(&meta.ino()));
        if !inside {
            continue;
        }
        let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
        let Ok(raw) = i32::try_from(pid) else {
            continue;
        };
        if nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(raw),
            nix::sys::signal::Signal::SIGKILL,
        )
        .is_ok()
        {
            stopped.push(format!("{pid} {}", comm.trim()));
        }
    }
    stopped
}

/// A process that keeps a node namespace alive.
struct Holder {
    pid: u32,
    comm: String,
    node_id: u32,
    /// Runs inside the namespace (otherwise it holds an fd to it, as a live run does).
    inside: bool,
}

/// Processes that are inside, or hold an fd to, one of the namespaces `inodes` (inode → node).
fn holders_of(inodes: &HashMap<u64, u32>) -> Vec<Holder> {
    let mut holders = Vec::new();
    if inodes.is_empty() {
        return holders;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return holders;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let comm = || {
            std::fs::read_to_string(p.path().join("comm"))
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        if let Ok(meta) = std::fs::metadata(p.path().join("ns/net"))
            && let Some(id) = inodes.get(&meta.ino())
        {
            holders.push(Holder {
                pid,
                comm: comm(),
                node_id: *id,
                inside: true,
            });
        }
        // An fd to a namespace reads as "net:[inode]".
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(ino) = target
                .to_str()
                .and_then(|t| t.strip_prefix("net:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
            else {
                continue;
            };
            if let Some(id) = inodes.get(&ino) {
                holders.push(Holder {
                    pid,
                    comm: comm(),
                    node_id: *id,
                    inside: false,
                });
            }
        }
    }
    holders
}

/// Lists what of `prefix` is on this host, as `kind name` lines (`netns nm3`, `mount nm3`,
/// `veth nmv3`, `bridge nmbr0`), without touching anything.
pub fn find(prefix: &Prefix, netns_dir: &Path) -> io::Result<Vec<String>> {
    let mut found = Vec::new();
    let ours = |name: &str| prefix.classify(name);
    match std::fs::read_dir(netns_dir) {
        Ok(entries) => {
            for e in entries.flatten() {
                if let Some(name) = e.file_name().to_str()
                    && matches!(ours(name), Some(Owned::Netns(_)))
                {
                    found.push(format!("netns {name}"));
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    for path in netns::mounted_under(netns_dir)? {
        if let Some(name) = path.file_name().and_then(|n| n.to_str())
            && matches!(ours(name), Some(Owned::Netns(_)))
        {
            found.push(format!("mount {name}"));
        }
    }
    let mut rtnl: Rtnl<()> = Rtnl::open()?;
    for (name, _, _) in rtnl
        .dump(msg::get_links())?
        .iter()
        .filter_map(msg::link_name)
    {
        match ours(name) {
            Some(Owned::Veth(_)) => found.push(format!("veth {name}")),
            Some(Owned::Bridge(_)) => found.push(format!("bridge {name}")),
            Some(Owned::Tunnel(_)) => found.push(format!("tunnel {name}")),
            _ => {}
        }
    }
    found.sort();
    Ok(found)
}
