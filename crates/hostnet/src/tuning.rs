//! Host-wide limits a run of N nodes needs, raised automatically and never lowered.
//!
//! Neighbour tables are global to the kernel (their thresholds exist only in the initial
//! namespace): every node that talks costs two entries (its entry for the gateway, the host's
//! for it) plus its links, so the default `gc_thresh3 = 1024` overflows at about 500 nodes.
//! A 1,000-port bridge floods each broadcast into the per-CPU backlog, which the default
//! `netdev_max_backlog = 1000` drops. Every node holds a few fds in the agent.

use std::io;
use std::path::PathBuf;

/// One sysctl the run wants at least at `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub key: &'static str,
    pub value: u64,
}

/// A sysctl that was raised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raised {
    pub key: &'static str,
    pub from: u64,
    pub to: u64,
}

/// What a run of `nodes` nodes and `links` links wants of the host.
pub fn wants(nodes: u64, links: u64) -> Vec<Want> {
    // Two entries a node, two a link, with headroom: forced GC can't evict entries used in
    // the last 5 s, so the hard limit must hold a whole burst.
    let entries = (2 * nodes + 2 * links).max(1).next_power_of_two() * 4;
    let thresh3 = entries.max(1024);
    let mut wants = Vec::new();
    for family in ["ipv4", "ipv6"] {
        for (n, v) in [(1, thresh3 / 8), (2, thresh3 / 2), (3, thresh3)] {
            wants.push(Want {
                key: neigh_key(family, n),
                value: v,
            });
        }
    }
    wants.push(Want {
        key: "net/core/netdev_max_backlog",
        value: (nodes * 50).clamp(1000, 1_000_000),
    });
    wants
}

fn neigh_key(family: &str, n: u8) -> &'static str {
    match (family, n) {
        ("ipv4", 1) => "net/ipv4/neigh/default/gc_thresh1",
        ("ipv4", 2) => "net/ipv4/neigh/default/gc_thresh2",
        ("ipv4", 3) => "net/ipv4/neigh/default/gc_thresh3",
        ("ipv6", 1) => "net/ipv6/neigh/default/gc_thresh1",
        ("ipv6", 2) => "net/ipv6/neigh/default/gc_thresh2",
        _ => "net/ipv6/neigh/default/gc_thresh3",
    }
}

/// The sysctl tree: `/proc/sys` on a real host, a directory in tests.
#[derive(Debug, Clone)]
pub struct Sysctl {
    root: PathBuf,
}

impl Default for Sysctl {
    fn default() -> Self {
        Sysctl {
            root: PathBuf::from("/proc/sys"),
        }
    }
}

impl Sysctl {
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Sysctl { root: root.into() }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    pub fn read(&self, key: &str) -> io::Result<u64> {
        let text = std::fs::read_to_string(self.path(key))?;
        text.trim()
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("{key}: {text:?}")))
    }

    pub fn write(&self, key: &str, value: u64) -> io::Result<()> {
        std::fs::write(self.path(key), value.to_string())
    }

    /// Raises every wanted value that is lower on the host; leaves higher ones alone.
    /// A key the kernel doesn't have (IPv6 built out) is skipped.
    pub fn raise(&self, wants: &[Want]) -> Result<Vec<Raised>, TuningError> {
        let mut raised = Vec::new();
        for w in wants {
            let current = match self.read(w.key) {
                Ok(v) => v,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(TuningError::new(w.key, e)),
            };
            if current < w.value {
                self.write(w.key, w.value)
                    .map_err(|e| TuningError::new(w.key, e))?;
                raised.push(Raised {
                    key: w.key,
                    from: current,
                    to: w.value,
                });
            }
        }
        Ok(raised)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("could not raise sysctl {}: {source} (run as root, or raise it by hand)", key.replace('/', "."))]
pub struct TuningError {
    pub key: String,
    #[source]
    pub source: io::Error,
}

impl TuningError {
    fn new(key: &str, source: io::Error) -> Self {
        TuningError {
            key: key.to_owned(),
            source,
        }
    }
}

/// Raises the open-file limit of this process to at least `want` (soft and, if needed, hard).
/// Returns the new soft limit when it changed.
pub fn raise_nofile(want: u64) -> io::Result<Option<u64>> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= want {
        return Ok(None);
    }
    let nr_open = Sysctl::default().read("fs/nr_open").unwrap_or(1 << 20);
    let new_hard = hard.max(want.min(nr_open));
    let new_soft = want.min(new_hard);
    match setrlimit(Resource::RLIMIT_NOFILE, new_soft, new_hard) {
        Ok(()) => Ok(Some(new_soft)),
        // Raising the hard limit needs CAP_SYS_RESOURCE; the soft one can still go up to it.
        Err(e) if soft < hard => {
            setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
            Err(io::Error::other(format!(
                "{e}; raised only to the hard limit {hard} (raising it needs CAP_SYS_RESOURCE)"
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// Everything a run of `nodes` nodes and `links` links needs: sysctls raised, fd limit raised,
/// each change logged once.
pub fn tune_host(sysctl: &Sysctl, nodes: u64, links: u64) -> Result<Vec<Raised>, TuningError> {
    let raised = sysctl.raise(&wants(nodes, links))?;
    for r in &raised {
        tracing::info!(
            "raised {} from {} to {} for {nodes} nodes",
            r.key.replace('/', "."),
            r.from,
            r.to
        );
    }
    // A TUN device per node and both ends of each socket link, with room to spare.
    let fds = 1024 + nodes + links;
    match raise_nofile(fds) {
        Ok(Some(n)) => tracing::info!("raised the open-file limit to {n}"),
        Ok(None) => {}
        Err(e) => tracing::warn!("could not raise the open-file limit to {fds}: {e}"),
    }
    Ok(raised)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_tree(values: &[(&str, u64)]) -> (tempdir::Dir, Sysctl) {
        let dir = tempdir::Dir::new();
        for (k, v) in values {
            let p = dir.path().join(k);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, format!("{v}\n")).unwrap();
        }
        let s = Sysctl::at(dir.path());
        (dir, s)
    }

    mod tempdir {
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "hostnet-sysctl-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn wants_grow_with_nodes_and_links() {
        let small = wants(10, 10);
        let big = wants(10_000, 10_000);
        let get = |w: &[Want], k: &str| w.iter().find(|x| x.key == k).unwrap().value;
        let t3 = "net/ipv4/neigh/default/gc_thresh3";
        assert_eq!(get(&small, t3), 1024);
        assert!(get(&big, t3) >= 4 * 10_000 + 4 * 10_000);
        assert!(get(&big, "net/ipv4/neigh/default/gc_thresh2") < get(&big, t3));
        assert!(get(&big, "net/core/netdev_max_backlog") >= 50_000);
    }

    #[test]
    fn raises_but_never_lowers() {
        let t3 = "net/ipv4/neigh/default/gc_thresh3";
        let t2 = "net/ipv4/neigh/default/gc_thresh2";
        let (_dir, s) = fake_tree(&[(t3, 1024), (t2, 1_000_000)]);
        let want = [
            Want {
                key: t3,
                value: 8192,
            },
            Want {
                key: t2,
                value: 4096,
            },
            Want {
                key: "net/ipv6/neigh/default/gc_thresh3",
                value: 8192,
            },
        ];
        let raised = s.raise(&want).unwrap();
        assert_eq!(
            raised,
            vec![Raised {
                key: t3,
                from: 1024,
                to: 8192
            }]
        );
        assert_eq!(s.read(t3).unwrap(), 8192);
        assert_eq!(s.read(t2).unwrap(), 1_000_000);
        // Applying again changes nothing.
        assert!(s.raise(&want).unwrap().is_empty());
    }
}
