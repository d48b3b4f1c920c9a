//! Network namespaces owned by fd, optionally visible to `ip netns` through a bind mount.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

/// Where `ip netns` looks for named namespaces.
pub const DEFAULT_NETNS_DIR: &str = "/run/netns";

/// A network namespace, kept alive by its fd and, if mounted, by its bind mount. Dropping it
/// unmounts and closes; the kernel then destroys the namespace and everything in it (its end
/// of every veth, its TUN devices) asynchronously, batched with other namespaces dropped at
/// the same time.
#[derive(Debug)]
pub struct NetNs {
    /// `None` once released: a mounted namespace is reached through its mount, which saves an
    /// fd per node where a process's fd limit is the constraint.
    fd: Option<OwnedFd>,
    mount: Option<PathBuf>,
}

/// A way into a namespace that can be sent to another thread: its fd (valid while the owning
/// [`NetNs`] lives) or its mount path.
#[derive(Debug, Clone)]
pub enum NsHandle {
    Fd(RawFd),
    Path(PathBuf),
}

impl NsHandle {
    /// Moves the calling thread into the namespace.
    pub fn enter(&self) -> io::Result<()> {
        match self {
            NsHandle::Fd(fd) => {
                // SAFETY: the handle's owner keeps the fd open while handles are in use (the
                // agent stops every node task before its fabric is torn down).
                let fd = unsafe { BorrowedFd::borrow_raw(*fd) };
                nix::sched::setns(fd, CloneFlags::CLONE_NEWNET)?;
            }
            NsHandle::Path(path) => {
                let file = File::open(path)?;
                nix::sched::setns(file.as_fd(), CloneFlags::CLONE_NEWNET)?;
            }
        }
        Ok(())
    }
}

impl NetNs {
    /// Moves the calling thread into a new network namespace and returns it. The thread stays
    /// there; creator threads exist for this.
    pub fn unshare_thread() -> io::Result<NetNs> {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET)?;
        Self::of_current_thread()
    }

    /// The calling thread's network namespace.
    pub fn of_current_thread() -> io::Result<NetNs> {
        let fd = OwnedFd::from(File::open("/proc/thread-self/ns/net")?);
        Ok(NetNs {
            fd: Some(fd),
            mount: None,
        })
    }

    /// The namespace's fd, unless released.
    pub fn raw_fd(&self) -> Option<RawFd> {
        self.fd.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Closes the fd of a mounted namespace; it stays reachable through the mount. Returns
    /// whether it did (an unmounted namespace keeps its fd: it would vanish otherwise).
    pub fn release_fd(&mut self) -> bool {
        if self.mount.is_some() {
            self.fd = None;
            true
        } else {
            false
        }
    }

    /// A handle for other threads.
    pub fn handle(&self) -> NsHandle {
        match (&self.fd, &self.mount) {
            (Some(fd), _) => NsHandle::Fd(fd.as_raw_fd()),
            (None, Some(path)) => NsHandle::Path(path.clone()),
            (None, None) => unreachable!("release_fd keeps the fd of an unmounted namespace"),
        }
    }

    /// Makes the namespace visible as `dir/name` (`ip netns add` does the same). The caller
    /// creates `dir` once ([`ensure_dir`]).
    pub fn bind_mount(&mut self, dir: &Path, name: &str) -> io::Result<()> {
        let path = dir.join(name);
        // O_EXCL: an existing file is another namespace's; never mount over it.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let fd = self
            .raw_fd()
            .ok_or_else(|| io::Error::other("namespace fd released"))?;
        let source = format!("/proc/self/fd/{fd}");
        if let Err(e) = nix::mount::mount(
            Some(source.as_str()),
            &path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        ) {
            let _ = std::fs::remove_file(&path);
            return Err(e.into());
        }
        self.mount = Some(path);
        Ok(())
    }

    /// Moves the calling thread into this namespace. The thread stays there.
    pub fn enter(&self) -> io::Result<()> {
        self.handle().enter()
    }

    /// Runs `f` on a short-lived thread inside this namespace: sockets `f` opens belong to it.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> io::Result<R> {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter()?;
                Ok(f())
            })
            .join()
            .expect("closure run in a namespace panicked")
        })
    }

    /// A namespace mounted at `path` by an earlier run (kept by `down --keep`): reached through
    /// the mount, which this value now owns. None when nothing is mounted there.
    pub fn adopt_mount(path: PathBuf) -> Option<NetNs> {
        let mounted = is_netns(&path);
        mounted.then_some(NetNs {
            fd: None,
            mount: Some(path),
        })
    }

    pub fn is_mounted(&self) -> bool {
        self.mount.is_some()
    }

    /// The namespace's inode (what `/proc/PID/ns/net` of a process inside it shows), from its
    /// fd or its mount.
    pub fn inode(&self) -> Option<u64> {
        use std::os::unix::fs::MetadataExt;
        match (&self.fd, &self.mount) {
            (Some(fd), _) => nix::sys::stat::fstat(fd.as_fd()).ok().map(|st| st.st_ino),
            (None, Some(path)) => std::fs::metadata(path).ok().map(|m| m.ino()),
            (None, None) => None,
        }
    }

    /// Leaves the namespace mounted for a later run: nothing is unmounted when it drops.
    pub fn leave_mounted(mut self) {
        self.mount = None;
    }

    /// Unmounts (if mounted) now, reporting failure; dropping does the same silently.
    pub fn close(mut self) -> io::Result<()> {
        match self.mount.take() {
            Some(path) => unmount(&path),
            None => Ok(()),
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Some(path) = self.mount.take()
            && let Err(e) = unmount(&path)
        {
            tracing::warn!(path = %path.display(), error = %e, "could not unmount namespace");
        }
    }
}

/// Detaches the bind mount at `path` and removes the file. A missing mount or file is fine:
/// cleanup must be idempotent.
pub fn unmount(path: &Path) -> io::Result<()> {
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Creates the directory for namespace mounts if needed.
pub fn ensure_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// Mount points directly under `dir`, from `/proc/self/mountinfo`.
pub fn mounted_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let dir_bytes = dir.as_os_str().as_bytes();
    let mut found = Vec::new();
    for line in info.lines() {
        let Some(target) = line.split(' ').nth(4) else {
            continue;
        };
        let target = unescape_mountinfo(target);
        let t = Path::new(&target);
        if t.parent().map(|p| p.as_os_str().as_bytes()) == Some(dir_bytes) {
            found.push(t.to_path_buf());
        }
    }
    Ok(found)
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let digit = |k: usize| u32::from(b[i + k] - b'0');
            out.push((digit(1) * 64 + digit(2) * 8 + digit(3)) as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A command that runs inside the namespace mounted at `path` (as `ip netns exec` does). The
/// returned file must stay open until the command is spawned.
pub fn command_in(path: &Path, program: &str) -> io::Result<(std::process::Command, File)> {
    use std::os::unix::process::CommandExt;
    let netns = File::open(path)?;
    let fd = netns.as_raw_fd();
    let mut cmd = std::process::Command::new(program);
    // SAFETY: setns is async-signal-safe, and the caller keeps `netns` (and so `fd`) open
    // until the child has been spawned.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok((cmd, netns))
}

/// Whether `path` is a namespace file (a bind mount of one): `setns` would take it.
fn is_netns(path: &Path) -> bool {
    // NS_GET_NSTYPE: the namespace type of an nsfs file; fails on anything else.
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    let Ok(file) = File::open(path) else {
        return false;
    };
    // SAFETY: an ioctl without arguments on a descriptor we own.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
    kind == libc::CLONE_NEWNET
}
