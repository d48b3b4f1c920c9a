//! Which prefixes a live run holds on this host. An agent takes its prefix's claim before it
//! creates anything and holds it while it lives: a lock file under `/run/nextmini`, per
//! network namespace (simulated hosts share one file system), locked with `flock`, which the
//! kernel releases when the process ends however it ends. So a second run can't plumb over a
//! live one's prefix, and `cleanup` can tell a live experiment from a crashed one's leftovers.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::plan::Prefix;

pub const CLAIM_DIR: &str = "/run/nextmini";

/// A prefix held by this process until dropped.
#[derive(Debug)]
pub struct PrefixClaim {
    claim: Option<Claim>,
}

impl Drop for PrefixClaim {
    fn drop(&mut self) {
        if let Some(claim) = self.claim.take() {
            claim.release_and_remove();
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error(
        "prefix {prefix} belongs to a running experiment (pid {pid}): stop it with `nextmini down`, or give this run another --prefix"
    )]
    Held { prefix: String, pid: u32 },
    #[error("cannot claim prefix {prefix} in {CLAIM_DIR}: {source}")]
    Io { prefix: String, source: io::Error },
}

fn claim_path(prefix: &Prefix) -> io::Result<PathBuf> {
    let netns = std::fs::metadata("/proc/self/ns/net")?.ino();
    Ok(PathBuf::from(CLAIM_DIR).join(format!("{netns}-{}.lock", prefix.as_str())))
}

fn read_pid(file: &mut File) -> u32 {
    let mut text = String::new();
    let _ = file.rewind();
    let _ = file.read_to_string(&mut text);
    text.trim().parse().unwrap_or(0)
}

/// Something held by one live process: a locked file holding its pid.
#[derive(Debug)]
pub struct Claim {
    lock: Flock<File>,
    path: PathBuf,
}

impl Claim {
    /// Takes the claim at `path` (created if missing), or answers the holder's pid.
    pub fn take(path: &Path) -> io::Result<Result<Claim, u32>> {
        loop {
            let file = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(mut lock) => {
                    // A holder removes its file when it lets go: if ours was removed between
                    // opening and locking, the lock is on a file nobody else will see.
                    let still_there = std::fs::metadata(path)
                        .is_ok_and(|m| lock.metadata().is_ok_and(|l| l.ino() == m.ino()));
                    if !still_there {
                        continue;
                    }
                    lock.set_len(0)?;
                    lock.rewind()?;
                    writeln!(lock, "{}", std::process::id())?;
                    return Ok(Ok(Claim {
                        lock,
                        path: path.to_owned(),
                    }));
                }
                Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                    return Ok(Err(read_pid(&mut file)));
                }
                Err((_, e)) => return Err(e.into()),
            }
        }
    }

    /// Lets go and removes the file (while still holding it, so no one takes a file that is
    /// about to vanish: see `take`).
    pub fn release_and_remove(self) {
        let _ = std::fs::remove_file(&self.path);
        drop(self.lock);
    }

    /// The live process holding the claim at `path`, if one does.
    pub fn holder(path: &Path) -> io::Result<Option<u32>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            // Nobody holds it: the lock taken here goes when it is dropped.
            Ok(_) => Ok(None),
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => Ok(Some(read_pid(&mut file))),
            Err((_, e)) => Err(e.into()),
        }
    }
}

impl PrefixClaim {
    /// Claims `prefix` for this process, or says which process holds it.
    pub fn take(prefix: &Prefix) -> Result<PrefixClaim, ClaimError> {
        let io_err = |source| ClaimError::Io {
            prefix: prefix.as_str().to_owned(),
            source,
        };
        std::fs::create_dir_all(CLAIM_DIR).map_err(io_err)?;
        let path = claim_path(prefix).map_err(io_err)?;
        match Claim::take(&path).map_err(io_err)? {
            Ok(claim) => Ok(PrefixClaim { claim: Some(claim) }),
            Err(pid) => Err(ClaimError::Held {
                prefix: prefix.as_str().to_owned(),
                pid,
            }),
        }
    }

    /// The process holding `prefix` on this host's network namespace, if one does.
    pub fn holder(prefix: &Prefix) -> io::Result<Option<u32>> {
        Claim::holder(&claim_path(prefix)?)
    }

    /// Removes the claim file a killed holder left (the kernel dropped its lock, the file
    /// stayed). True when there was one; a live holder's file is left alone.
    pub fn clear_stale(prefix: &Prefix) -> io::Result<bool> {
        let path = claim_path(prefix)?;
        if !path.exists() {
            return Ok(false);
        }
        match Claim::take(&path)? {
            Ok(claim) => {
                claim.release_and_remove();
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_held_until_dropped_and_names_its_holder() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: /run/nextmini needs root");
            return;
        }
        let prefix = Prefix::new("tcl").unwrap();
        assert_eq!(PrefixClaim::holder(&prefix).unwrap(), None);
        let claim = PrefixClaim::take(&prefix).unwrap();
        assert_eq!(
            PrefixClaim::holder(&prefix).unwrap(),
            Some(std::process::id())
        );
        // flock is per open file: a second take in this process is refused too.
        let e = PrefixClaim::take(&prefix).unwrap_err().to_string();
        assert!(
            e.contains("prefix tcl belongs to a running experiment (pid"),
            "{e}"
        );
        drop(claim);
        assert_eq!(PrefixClaim::holder(&prefix).unwrap(), None);
        assert!(
            !claim_path(&prefix).unwrap().exists(),
            "the file goes with the claim"
        );
    }

    #[test]
    fn a_killed_holders_claim_file_is_cleared_and_a_live_one_is_not() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: /run/nextmini needs root");
            return;
        }
        let prefix = Prefix::new("tcm").unwrap();
        std::fs::create_dir_all(CLAIM_DIR).unwrap();
        let path = claim_path(&prefix).unwrap();
        // What a SIGKILLed agent leaves: its pid in a file nobody locks.
        std::fs::write(&path, "4194303\n").unwrap();
        assert_eq!(PrefixClaim::holder(&prefix).unwrap(), None);
        assert!(PrefixClaim::clear_stale(&prefix).unwrap());
        assert!(!path.exists());
        assert!(
            !PrefixClaim::clear_stale(&prefix).unwrap(),
            "nothing left to clear"
        );
        let live = PrefixClaim::take(&prefix).unwrap();
        assert!(!PrefixClaim::clear_stale(&prefix).unwrap());
        assert!(path.exists(), "a live claim stays");
        drop(live);
    }
}
