//! The commands on a running experiment: `status`, `down`, `exec`, `link set`, `link show`.
//! They find it through the run file in the state directory, or talk to any controller with
//! `--api` (for example a head's experiment).

use controller::run::KeptNodes;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use controller::client::ControllerClient;
use controller::run::{DEFAULT_STATE_DIR, RunFile};

use crate::host;

/// A link, as two node ids: `1-2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkId(pub u32, pub u32);

impl std::str::FromStr for LinkId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.split_once('-')
            .and_then(|(a, b)| Some(LinkId(a.trim().parse().ok()?, b.trim().parse().ok()?)))
            .ok_or_else(|| format!("{s:?} is not a link: write it as two node ids, e.g. 1-2"))
    }
}

/// What `link show` shows: a link (`1-2`) or every link of a node (`3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkOrNode {
    Link(LinkId),
    Node(u32),
}

impl std::str::FromStr for LinkOrNode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.parse::<u32>() {
            Ok(n) => Ok(LinkOrNode::Node(n)),
            Err(_) => s.parse().map(LinkOrNode::Link),
        }
    }
}

/// Which experiment a command talks to.
#[derive(Args, Debug, Clone)]
pub struct Target {
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// A controller's address instead of the run in --state-dir (host:port), e.g. a head's
    /// experiment at the port `nextmini exp status` shows.
    #[arg(long)]
    pub api: Option<String>,
}

impl Target {
    pub fn client(&self) -> Result<ControllerClient> {
        Ok(match &self.api {
            // A controller elsewhere that wants a token gets it from the environment.
            Some(a) => ControllerClient::new(a).with_token(
                std::env::var("NEXTMINI_TOKEN")
                    .ok()
                    .filter(|t| !t.is_empty()),
            ),
            None => RunFile::load(&self.state_dir)?.client(),
        })
    }
}

#[derive(Args, Debug)]
pub struct LinkSetArgs {
    /// The link, as two node ids: 1-2.
    pub link: LinkId,
    /// Rate: 50mbit, 1gbit, 64kbit.
    #[arg(long)]
    pub rate: Option<linkem::Rate>,
    /// A token bucket of this many bytes in front of the rate (0: none).
    #[arg(long)]
    pub burst: Option<u32>,
    /// Remove the rate limit.
    #[arg(long, conflicts_with = "rate")]
    pub unshaped: bool,
    /// Propagation delay: 20ms, 250us.
    #[arg(long)]
    pub delay: Option<linkem::Span>,
    #[arg(long)]
    pub jitter: Option<linkem::Span>,
    /// Random loss: 1%, 0.5%.
    #[arg(long, conflicts_with = "gilbert_elliott")]
    pub loss: Option<linkem::Fraction>,
    /// Bursty loss: p,r,loss_good,loss_bad (good→bad and bad→good per packet, and the loss
    /// in each state), e.g. 0.01,0.1,0%,50%.
    #[arg(long = "gilbert-elliott", value_name = "P,R,GOOD,BAD")]
    pub gilbert_elliott: Option<linkem::GilbertElliott>,
    /// Queue limit in packets.
    #[arg(long, conflicts_with = "queue_bytes")]
    pub queue: Option<u32>,
    /// Queue limit in bytes.
    #[arg(long)]
    pub queue_bytes: Option<u32>,
    /// Queue discipline.
    #[arg(long, value_parser = ["droptail", "red"])]
    pub aqm: Option<String>,
    /// How the transmitter picks the next packet: fifo, or wrr (a queue per flow, served by
    /// the flows' weights: their DSCP).
    #[arg(long, value_parser = ["fifo", "wrr"])]
    pub scheduler: Option<String>,
    /// Take the link down (traffic is rerouted where another path exists).
    #[arg(long, conflicts_with = "up")]
    pub down: bool,
    #[arg(long)]
    pub up: bool,
    #[command(flatten)]
    pub target: Target,
}

impl LinkSetArgs {
    /// The change the flags ask for, checked.
    fn change(&self) -> Result<linkem::LinkChange> {
        let change = linkem::LinkChange {
            rate: self.rate,
            burst: self.burst,
            unshaped: self.unshaped,
            delay: self.delay,
            jitter: self.jitter,
            reorder: None,
            loss: self.loss,
            gilbert_elliott: self.gilbert_elliott,
            queue: self.queue,
            queue_bytes: self.queue_bytes,
            aqm: self.aqm.as_deref().map(|a| match a {
                "red" => linkem::Aqm::RED,
                _ => linkem::Aqm::DropTail,
            }),
            scheduler: self.scheduler.as_deref().map(|s| match s {
                "wrr" => linkem::Scheduler::Wrr,
                _ => linkem::Scheduler::Fifo,
            }),
            up: (self.down || self.up).then_some(self.up),
        };
        change.check()?;
        Ok(change)
    }
}

#[derive(Args, Debug)]
pub struct LinkShowArgs {
    /// Only these links: 1-2, or a node id for every link of that node.
    pub links: Vec<LinkOrNode>,
    #[command(flatten)]
    pub target: Target,
}

/// Changes a link of the running experiment, both directions, while traffic flows.
pub fn link_set(args: &LinkSetArgs) -> Result<()> {
    let LinkId(a, b) = args.link;
    let params = args.target.client()?.set_link(a, b, &args.change()?)?;
    println!("link {a}-{b}: {}", params.describe());
    Ok(())
}

/// Each direction of the running experiment's links: parameters and counters.
pub fn link_show(args: &LinkShowArgs) -> Result<()> {
    let rows = args.target.client()?.links()?;
    let wanted = |a: u32, b: u32| {
        args.links.is_empty()
            || args.links.iter().any(|w| match *w {
                LinkOrNode::Link(LinkId(x, y)) => (x.min(y), x.max(y)) == (a, b),
                LinkOrNode::Node(n) => n == a || n == b,
            })
    };
    let shown: Vec<_> = rows.iter().filter(|r| wanted(r.a, r.b)).collect();
    if shown.is_empty() && !args.links.is_empty() {
        bail!("no such link in the experiment");
    }
    print!("{}", controller::render::links(shown));
    Ok(())
}

pub fn status(state_dir: &Path) -> Result<()> {
    let run = match RunFile::load(state_dir) {
        Err(controller::run::RunFileError::Missing { .. })
            if let Some(kept) = KeptNodes::load(state_dir).filter(KeptNodes::present) =>
        {
            println!(
                "no experiment runs; {} nodes of prefix {} are kept (`nextmini down --keep`): the next `up` here with the same prefix, base ({}) and node count takes them over; `nextmini down` or `nextmini cleanup --prefix {}` removes them",
                kept.nodes, kept.prefix, kept.underlay_base, kept.prefix
            );
            return Ok(());
        }
        other => other?,
    };
    let s = run.client().status()?;
    println!(
        "experiment {} (prefix {}, pid {})",
        run.name, run.prefix, run.pid
    );
    print!("{}", controller::render::status(&s));
    Ok(())
}

pub fn down(state_dir: &Path, keep: bool) -> Result<()> {
    host::require_root("nextmini down")?;
    let run = match RunFile::load(state_dir) {
        // Nothing runs, but a run kept its nodes: they go now.
        Err(controller::run::RunFileError::Missing { .. })
            if !keep && let Some(kept) = KeptNodes::load(state_dir) =>
        {
            kept.remove(state_dir)?;
            check_nothing_left("the kept nodes", &kept.prefix)?;
            println!(
                "removed the {} nodes of prefix {} a run had kept",
                kept.nodes, kept.prefix
            );
            return Ok(());
        }
        Err(controller::run::RunFileError::Gone { pid, .. }) => {
            // Killed or crashed: clear its file, and say what it left.
            let run = RunFile::load_any(state_dir)?;
            let _ = std::fs::remove_file(RunFile::path(state_dir));
            leftovers_of(&run)?;
            println!(
                "experiment {} was already gone (its process {pid} had ended); its run file is cleared and it left nothing",
                run.name
            );
            return Ok(());
        }
        other => other?,
    };
    // Watch the run's process before asking, so its exit can't be missed.
    let pidfd = pidfd_open(run.pid);
    if keep {
        run.client().down_keeping_nodes()?;
    } else {
        run.client().down()?;
    }
    // No pidfd: the process is gone already.
    if let Some(fd) = pidfd {
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&fd),
            nix::poll::PollFlags::POLLIN,
        )];
        let timeout = nix::poll::PollTimeout::try_from(300_000i32).expect("fits");
        if nix::poll::poll(&mut fds, timeout)? == 0 {
            bail!("the experiment did not finish tearing down within 5 minutes");
        }
    }
    if keep && let Some(kept) = KeptNodes::load(state_dir) {
        println!(
            "experiment {} is down; its {} nodes are kept for the next `up` here of the same layout (`nextmini down` or `nextmini cleanup --prefix {}` removes them)",
            run.name, kept.nodes, kept.prefix
        );
        return Ok(());
    }
    leftovers_of(&run)?;
    println!("experiment {} is down", run.name);
    Ok(())
}

/// Fails, naming what is left, when a run that ended left anything of its prefix on this host
/// (an agent killed while tearing down, for instance).
fn leftovers_of(run: &RunFile) -> Result<()> {
    check_nothing_left(&run.name, &run.prefix)
}

/// Fails, naming what is left, when anything of `prefix` is still on this host.
pub fn check_nothing_left(name: &str, prefix: &str) -> Result<()> {
    let prefix = hostnet::Prefix::new(prefix)?;
    let left = hostnet::cleanup::find(&prefix, Path::new(hostnet::netns::DEFAULT_NETNS_DIR))?;
    if !left.is_empty() {
        bail!(
            "experiment {name} ended but left {} things of prefix {prefix} behind (first: {}): remove them with `nextmini cleanup --prefix {prefix}`",
            left.len(),
            left[0]
        );
    }
    Ok(())
}

/// A process's pidfd: readable when it exits. None when it is gone already.
fn pidfd_open(pid: u32) -> Option<std::os::fd::OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Some(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
}

/// Runs a command inside a node's namespace; returns its exit code.
pub fn exec(state_dir: &Path, node_id: u32, command: &[String]) -> Result<i32> {
    use std::os::unix::process::CommandExt;
    host::require_root("nextmini exec")?;
    let run = RunFile::load(state_dir)?;
    if run.netns_dir.as_os_str().is_empty() {
        bail!(
            "experiment {} keeps its namespaces without mounts (no_mount): exec needs them mounted",
            run.name
        );
    }
    let Some((program, rest)) = command.split_first() else {
        bail!("give a command: nextmini exec {node_id} -- ping 10.0.0.1");
    };
    let path = run.netns_dir.join(format!("{}{node_id}", run.prefix));
    let (mut cmd, _netns) = hostnet::netns::command_in(&path, program)
        .with_context(|| format!("node {node_id} is not part of experiment {}", run.name))?;
    // The program takes this process's place (as `ip netns exec` does): its pid is the one a
    // caller holds, so a signal to it (Ctrl-C, a script's kill) reaches the program, and no
    // program outlives a killed `exec`. Its exit code is the process's.
    let err = cmd.args(rest).envs(run.node_env(node_id)).exec();
    Err(err).with_context(|| format!("cannot run {program}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_nodes_read_as_written() {
        assert_eq!("1-2".parse::<LinkId>(), Ok(LinkId(1, 2)));
        assert!("1-".parse::<LinkId>().unwrap_err().contains("e.g. 1-2"));
        assert_eq!("7".parse::<LinkOrNode>(), Ok(LinkOrNode::Node(7)));
        assert_eq!(
            "3-4".parse::<LinkOrNode>(),
            Ok(LinkOrNode::Link(LinkId(3, 4)))
        );
        assert!("x".parse::<LinkOrNode>().is_err());
    }
}
