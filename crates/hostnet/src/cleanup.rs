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
use std::path::Path;
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

    // Namespace mounts: the directory's files and any mount whose file was removed.
    let mut mounts = HashSet::new();
    match std::fs::read_dir(netns_dir) {
        Ok(entries) => {
            for e in entries {
                let e = e?;
                if let Some(name) = e.file_name().to_str() {
                    if matches!(prefix.classify(name), Some(Owned::Netns(_))) {
                        mounts.insert(e.path());
                    }
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    for path in netns::mounted_under(netns_dir)? {
        let ours = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| matches!(prefix.classify(n), Some(Owned::Netns(_))));
        if ours {
            mounts.insert(path);
        }
    }
    let inodes: HashSet<u64> = mounts
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok().map(|m| m.ino()))
        .collect();
    report.holders = holders_of(&inodes);
    for path in &mounts {
        netns::unmount(path)?;
    }
    report.namespaces = mounts.len();

    let ours = |name: &str| prefix.classify(name);
    let veths = monitor.present(|n| matches!(ours(n), Some(Owned::Veth(_))))?;
    let found = veths.len();
    let remaining = if report.namespaces > 0 && !veths.is_empty() {
        let budget = Duration::from_secs(10) + Duration::from_millis(10) * found as u32;
        monitor.wait_gone(veths, budget)?
    } else {
        veths.into_iter().collect()
    };
    report.veths_with_namespaces = found - remaining.len();
    report.veths_deleted = delete_veths(prefix, &remaining)?;

    let bridges = monitor.present(|n| matches!(ours(n), Some(Owned::Bridge(_))))?;
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
fn delete_veths(prefix: &Prefix, veths: &[(String, u32)]) -> io::Result<usize> {
    if veths.is_empty() {
        return Ok(0);
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
    Ok(veths.len())
}

/// A link that vanished between listing and deleting is what we wanted anyway.
fn ignore_vanished(r: Result<(), crate::rtnl::Refused<()>>) -> io::Result<()> {
    match r {
        Err(r) if r.error.raw_os_error() != Some(libc::ENODEV) => Err(r.error),
        _ => Ok(()),
    }
}

/// Processes whose network namespace is one of `inodes`.
fn holders_of(inodes: &HashSet<u64>) -> Vec<(u32, String)> {
    if inodes.is_empty() {
        return Vec::new();
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut holders = Vec::new();
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(meta) = std::fs::metadata(p.path().join("ns/net")) else {
            continue;
        };
        if inodes.contains(&meta.ino()) {
            let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            holders.push((pid, comm.trim().to_owned()));
        }
    }
    holders
}
