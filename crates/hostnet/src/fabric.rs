//! A host's nodes and the bridges that join them: created in bulk, removed in bulk.
//!
//! Creation, per node, on one of a few creator threads (no more than cores: every link change
//! takes the kernel's global RTNL lock, so more threads only queue on it):
//! 1. `unshare(CLONE_NEWNET)` moves the thread into a fresh namespace, kept by fd (and bind
//!    mounted under `/run/netns` if asked); the next node is unshared from there.
//! 2. IPv6 is switched off in it (with it on, every node's DAD/MLD/RS multicast floods every
//!    bridge port and creation becomes O(N²)), unless the run asks for it.
//! 3. One request on the thread's host-side socket creates the veth, places the peer as `eth0`
//!    (ifindex 2) in the namespace and attaches the host end, up, to its shard's bridge.
//! 4. One batch on a socket opened inside the namespace: `lo` up, `eth0` up, the address, and
//!    the route to the underlay range via the bridge.
//!
//! Bridges are created first with multicast snooping off and raised only after all their ports
//! are attached. No step sleeps or polls: each request is acked by the kernel.
//!
//! Teardown closes every namespace at once, so the kernel destroys them in one batch (each
//! veth dies with its namespace), waits for the host veths to vanish by listening to link
//! events, and deletes the bridges.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::monitor::LinkMonitor;
use crate::msg;
use crate::netns::{self, NetNs};
use crate::plan::{BridgePlan, NodePlan, Prefix, SHARD_PREFIX_LEN, UnderlayPlan};
use crate::rtnl::{Mode, Refused, Rtnl};

/// How to build a host's nodes.
#[derive(Debug, Clone)]
pub struct FabricSpec {
    pub plan: UnderlayPlan,
    /// Bind-mount each namespace here (as `ip netns add` does); `None` keeps them by fd only.
    pub netns_dir: Option<PathBuf>,
    /// Creator threads; clamped to 1..=cores.
    pub threads: usize,
    /// Leave IPv6 on inside the nodes.
    pub ipv6: bool,
    /// Bring bridges up before their ports are attached, so that nodes can talk while later
    /// ones are still being created (the agent starts each node as soon as it exists). Late
    /// is cheaper when nothing needs to talk during creation.
    pub early_bridges: bool,
    /// Keep each namespace's fd open. When namespaces are mounted, `false` closes the fds
    /// after plumbing and reaches nodes through their mounts: one fd less per node.
    pub keep_fds: bool,
    /// Join each bridge to the same bridge on the experiment's other hosts.
    pub tunnel: Option<TunnelSpec>,
    /// Give each node an underlay (`eth0` on a bridge). Without it a node is a namespace with
    /// `lo` alone: about 110 KiB of kernel memory and most of the plumbing time less, for runs
    /// where nothing crosses an underlay (one host, links in process).
    pub underlay: bool,
}

/// A full mesh of VXLAN tunnels: each shard's bridge gets a port `<prefix>vx<shard>` with VNI
/// `vni + shard` that floods unknown destinations to every peer and learns where MACs live.
/// The VNI keeps experiments apart on shared hosts; the bridges of one experiment become one
/// L2 segment, which is why underlay addresses come from node ids, not per-host indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelSpec {
    pub vni: u32,
    /// This host's address on the network between hosts.
    pub local: Ipv4Addr,
    /// The other hosts' addresses.
    pub peers: Vec<Ipv4Addr>,
    /// UDP port (4789 is VXLAN's).
    pub port: u16,
}

/// MTU of the tunnel ports: the nodes' 1,500 bytes, so the bridge keeps its MTU. Between hosts
/// the encapsulated frames are 50 bytes longer; a network with a 1,500-byte MTU fragments them
/// (correct, slower); give it 1,550 or more.
const TUNNEL_MTU: u32 = 1500;

impl FabricSpec {
    pub fn new(plan: UnderlayPlan) -> Self {
        FabricSpec {
            plan,
            netns_dir: Some(PathBuf::from(netns::DEFAULT_NETNS_DIR)),
            threads: 1,
            ipv6: false,
            early_bridges: false,
            keep_fds: true,
            tunnel: None,
            underlay: true,
        }
    }
}

/// One step of plumbing, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Unshare,
    Mount,
    DisableIpv6,
    NetlinkSocket,
    CreateVeth,
    LoopbackUp,
    UnderlayUp,
    AddAddress,
    AddRoute,
    Neighbour,
    CreateBridge,
    BridgeAddress,
    BridgeForwarding,
    BridgeUp,
    CreateTunnel,
    TunnelPeer,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Unshare => "creating the namespace (unshare)",
            Step::Mount => "bind-mounting the namespace",
            Step::DisableIpv6 => "switching IPv6 addressing off",
            Step::NetlinkSocket => "opening a netlink socket in the namespace",
            Step::CreateVeth => "creating the veth pair",
            Step::LoopbackUp => "bringing lo up",
            Step::UnderlayUp => "bringing eth0 up",
            Step::AddAddress => "adding the underlay address",
            Step::AddRoute => "adding the underlay route",
            Step::Neighbour => "adding a permanent neighbour entry",
            Step::CreateBridge => "creating the bridge",
            Step::BridgeAddress => "adding the bridge address",
            Step::BridgeForwarding => "enabling forwarding between shards",
            Step::BridgeUp => "bringing the bridge up",
            Step::CreateTunnel => "creating the VXLAN tunnel port",
            Step::TunnelPeer => "adding a peer host to the tunnel's flood list",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(
        "node {node_id} ({name}): {step} failed: {source}{}",
        hint(source, prefix)
    )]
    Node {
        node_id: u32,
        name: String,
        step: Step,
        prefix: String,
        #[source]
        source: io::Error,
    },
    #[error("bridge {name}: {step} failed: {source}{}", hint(source, prefix))]
    Bridge {
        name: String,
        step: Step,
        prefix: String,
        #[source]
        source: io::Error,
    },
    #[error("could not create {}: {source}", dir.display())]
    NetnsDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not open a netlink socket: {source}{}", hint(source, ""))]
    Socket {
        #[source]
        source: io::Error,
    },
}

/// What to do about a kernel error, in a few words.
fn hint(e: &io::Error, prefix: &str) -> String {
    match e.raw_os_error() {
        Some(libc::EEXIST) => {
            format!(
                "; something named like this run exists already: run `nextmini cleanup --prefix {prefix}`, or pick another prefix"
            )
        }
        Some(libc::EPERM) | Some(libc::EACCES) => {
            "; this needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN)".to_owned()
        }
        Some(libc::EMFILE) | Some(libc::ENFILE) => {
            "; out of file descriptors: raise `ulimit -n` or fs.file-max".to_owned()
        }
        Some(libc::ENOBUFS) | Some(libc::ENOMEM) => {
            "; the kernel ran out of memory or buffer space: create fewer nodes".to_owned()
        }
        Some(libc::ENOSPC) => {
            "; a kernel limit was reached (user.max_net_namespaces?): raise it or create fewer nodes"
                .to_owned()
        }
        _ => String::new(),
    }
}

/// A node's plumbing on this host.
#[derive(Debug)]
pub struct Node {
    pub plan: NodePlan,
    pub netns: NetNs,
    /// Whether the kernel created this node's veth: teardown must wait for, or delete, only
    /// links this run made (a failed creation's name may belong to someone else).
    veth_made: bool,
}

/// A bridge this run created.
#[derive(Debug, Clone)]
pub struct Bridge {
    pub plan: BridgePlan,
    pub index: u32,
}

/// Figures from a teardown.
#[derive(Debug, Clone, Copy, Default)]
pub struct TeardownStats {
    /// Closing every namespace (and unmounting).
    pub close: Duration,
    /// Until the kernel had removed every host veth.
    pub drain: Duration,
    pub total: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("teardown: {0}")]
pub struct TeardownError(#[from] io::Error);

/// Why a kept fabric can't be taken over.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error("kept nodes live in mounted namespaces: this run does not mount them")]
    NotMounted,
    #[error("the kept nodes are incomplete ({0} is gone)")]
    Missing(String),
    #[error("looking for the kept nodes: {0}")]
    Io(#[from] io::Error),
}

/// The group number host veths of a prefix carry, so that cleanup can delete them in one
/// request. A 32-bit hash of the prefix; cleanup checks that the group holds only this prefix's
/// links before it uses it.
pub fn link_group(prefix: &Prefix) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in b"nextmini:".iter().chain(prefix.as_str().as_bytes()) {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.max(2) // 0 is the default group
}

/// Every node and bridge of a run on this host. Dropping it tears everything down.
#[derive(Debug)]
pub struct Fabric {
    plan: UnderlayPlan,
    bridges: Vec<Bridge>,
    /// Interface indexes of the tunnel ports.
    tunnels: Vec<u32>,
    nodes: Vec<Node>,
    torn_down: bool,
}

impl Fabric {
    /// Creates every node of the spec. `progress` is called from creator threads with the
    /// number of nodes finished so far and the node just finished. On failure everything created is removed and the error
    /// names the node and the step.
    pub fn create(
        spec: &FabricSpec,
        progress: &(dyn Fn(u32, &NodePlan) + Sync),
    ) -> Result<Fabric, CreateError> {
        let plan = &spec.plan;
        let prefix = plan.prefix().to_string();
        if let Some(dir) = &spec.netns_dir {
            netns::ensure_dir(dir).map_err(|source| CreateError::NetnsDir {
                dir: dir.clone(),
                source,
            })?;
        }
        let mut fabric = Fabric {
            plan: plan.clone(),
            bridges: Vec::new(),
            tunnels: Vec::new(),
            nodes: Vec::new(),
            torn_down: false,
        };
        let started = Instant::now();
        if spec.underlay {
            fabric.create_bridges()?;
        }
        if let Some(tunnel) = &spec.tunnel {
            fabric.create_tunnels(tunnel)?;
        }
        if spec.early_bridges {
            fabric.raise_bridges()?;
        }
        fabric.create_nodes(spec, progress)?;
        if !spec.early_bridges {
            fabric.raise_bridges()?;
        }
        tracing::info!(
            nodes = plan.n_nodes(),
            bridges = fabric.bridges.len(),
            seconds = started.elapsed().as_secs_f64(),
            "plumbed {} nodes with prefix {prefix}",
            plan.n_nodes()
        );
        Ok(fabric)
    }

    fn create_bridges(&mut self) -> Result<(), CreateError> {
        let prefix = self.plan.prefix().to_string();
        let mut host: Rtnl<Step> = Rtnl::open().map_err(|source| CreateError::Socket { source })?;
        let forwarding = self.plan.shards().len() > 1;
        for b in self.plan.bridges() {
            let fail = |step, source| CreateError::Bridge {
                name: b.name.clone(),
                step,
                prefix: prefix.clone(),
                source,
            };
            host.request(
                msg::new_bridge(&b.name, b.mac),
                Mode::Create,
                Step::CreateBridge,
            )
            .map_err(|r| fail(r.tag, r.error))?;
            let index = nix::net::if_::if_nametoindex(b.name.as_str())
                .map_err(|e| fail(Step::CreateBridge, e.into()))?;
            self.bridges.push(Bridge {
                plan: b.clone(),
                index,
            });
            host.request(
                msg::new_address(index, b.addr, SHARD_PREFIX_LEN),
                Mode::Create,
                Step::BridgeAddress,
            )
            .map_err(|r| fail(r.tag, r.error))?;
            // Shards reach each other through the host; only our bridges forward, and nodes
            // route only the underlay range, so nothing is forwarded off the machine.
            if forwarding {
                let key = format!("/proc/sys/net/ipv4/conf/{}/forwarding", b.name);
                std::fs::write(key, "1").map_err(|e| fail(Step::BridgeForwarding, e))?;
            }
        }
        Ok(())
    }

    fn create_tunnels(&mut self, t: &TunnelSpec) -> Result<(), CreateError> {
        let prefix = self.plan.prefix().clone();
        let mut host: Rtnl<Step> = Rtnl::open().map_err(|source| CreateError::Socket { source })?;
        for b in &self.bridges {
            let name = prefix.tunnel_name(b.plan.shard);
            let fail = |step, source| CreateError::Bridge {
                name: name.clone(),
                step,
                prefix: prefix.to_string(),
                source,
            };
            host.request(
                msg::new_vxlan(
                    &name,
                    t.vni + b.plan.shard,
                    t.local,
                    t.port,
                    b.index,
                    TUNNEL_MTU,
                ),
                Mode::Create,
                Step::CreateTunnel,
            )
            .map_err(|r| fail(r.tag, r.error))?;
            let index = nix::net::if_::if_nametoindex(name.as_str())
                .map_err(|e| fail(Step::CreateTunnel, e.into()))?;
            self.tunnels.push(index);
            // No IPv6 link-local chatter from the tunnel port to every other host.
            host.queue(
                msg::no_ipv6_addresses(index, None),
                Mode::Change,
                Step::CreateTunnel,
            )
            .map_err(|e| fail(Step::CreateTunnel, e))?;
            for peer in &t.peers {
                host.queue(msg::flood_to(index, *peer), Mode::Append, Step::TunnelPeer)
                    .map_err(|e| fail(Step::TunnelPeer, e))?;
            }
            host.wait().map_err(|r| fail(r.tag, r.error))?;
        }
        tracing::info!(
            tunnels = self.tunnels.len(),
            peers = t.peers.len(),
            vni = t.vni,
            "joined this host's bridges to {} other hosts",
            t.peers.len()
        );
        Ok(())
    }

    fn create_nodes(
        &mut self,
        spec: &FabricSpec,
        progress: &(dyn Fn(u32, &NodePlan) + Sync),
    ) -> Result<(), CreateError> {
        let plan = &spec.plan;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = spec.threads.clamp(1, cores).min(plan.n_nodes() as usize);
        let next = AtomicU32::new(0);
        let done = AtomicU32::new(0);
        let abort = AtomicBool::new(false);
        let first_error: Mutex<Option<CreateError>> = Mutex::new(None);
        let bridge_index: Vec<u32> = self.bridges.iter().map(|b| b.index).collect();
        let first_shard = plan.shards().start;
        let group = link_group(plan.prefix());
        let route = plan.underlay_route();

        let worker = || -> Vec<Node> {
            let mut made = Vec::new();
            let fail = |e: CreateError| {
                abort.store(true, Ordering::Relaxed);
                first_error
                    .lock()
                    .expect("no panics hold it")
                    .get_or_insert(e);
            };
            // Opened before the first unshare: it stays in the host namespace.
            let mut host: Rtnl<Step> = match Rtnl::open() {
                Ok(h) => h,
                Err(e) => {
                    fail(CreateError::Socket { source: e });
                    return made;
                }
            };
            while !abort.load(Ordering::Relaxed) {
                let idx = next.fetch_add(1, Ordering::Relaxed);
                if idx >= plan.n_nodes() {
                    break;
                }
                let node_plan = plan.node(idx);
                let bridge = bridge_index
                    .get((node_plan.shard - first_shard) as usize)
                    .copied()
                    .unwrap_or(0);
                match plumb_node(spec, node_plan, bridge, group, route, &mut host) {
                    Ok(node) => {
                        progress(done.fetch_add(1, Ordering::Relaxed) + 1, &node.plan);
                        made.push(node);
                    }
                    Err(failed) => {
                        let (partial, e) = *failed;
                        made.extend(partial);
                        fail(e);
                        break;
                    }
                }
            }
            made
        };
        let made: Vec<Vec<Node>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|i| {
                    std::thread::Builder::new()
                        .name(format!("nm-create-{i}"))
                        .spawn_scoped(s, worker)
                        .expect("spawning a creator thread")
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("creator thread panicked"))
                .collect()
        });
        self.nodes = made.into_iter().flatten().collect();
        self.nodes.sort_by_key(|n| n.plan.idx);
        match first_error.into_inner().expect("no panics hold it") {
            Some(e) => Err(e), // `self` is dropped by the caller's `?`: everything goes
            None => Ok(()),
        }
    }

    fn raise_bridges(&mut self) -> Result<(), CreateError> {
        let mut host: Rtnl<usize> =
            Rtnl::open().map_err(|source| CreateError::Socket { source })?;
        for (i, b) in self.bridges.iter().enumerate() {
            host.queue(msg::link_up(b.index), Mode::Change, i)
                .map_err(|source| CreateError::Socket { source })?;
        }
        host.wait().map_err(|r| CreateError::Bridge {
            name: self.bridges[r.tag].plan.name.clone(),
            step: Step::BridgeUp,
            prefix: self.plan.prefix().to_string(),
            source: r.error,
        })
    }

    pub fn plan(&self) -> &UnderlayPlan {
        &self.plan
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn bridges(&self) -> &[Bridge] {
        &self.bridges
    }

    pub fn node(&self, node_id: u32) -> Option<&Node> {
        self.plan
            .idx_of(node_id)
            .and_then(|i| self.nodes.get(i as usize))
    }

    /// Leaves everything in place for a later run of the same layout ([`Fabric::adopt`]):
    /// only a fabric of mounted namespaces without tunnels can be kept (an unmounted
    /// namespace lives only while this process holds it, tunnels join hosts that may go).
    /// The fabric comes back when it can't be kept.
    pub fn keep(mut self) -> Result<(), Box<Fabric>> {
        if !self.tunnels.is_empty() || self.nodes.iter().any(|n| !n.netns.is_mounted()) {
            return Err(Box::new(self));
        }
        self.torn_down = true;
        stop_programs_in(self.plan.prefix(), &self.nodes);
        for node in std::mem::take(&mut self.nodes) {
            node.netns.leave_mounted();
        }
        Ok(())
    }

    /// The fabric a previous run of this layout kept ([`Fabric::keep`]), found in place: each
    /// node's namespace at its mount and each bridge by name. Fails, changing nothing, when
    /// any part is missing.
    pub fn adopt(spec: &FabricSpec) -> Result<Fabric, AdoptError> {
        let plan = &spec.plan;
        let dir = spec.netns_dir.as_ref().ok_or(AdoptError::NotMounted)?;
        let mut host: Rtnl<()> = Rtnl::open()?;
        let links: HashMap<String, u32> = host
            .dump(msg::get_links())?
            .iter()
            .filter_map(msg::link_name)
            .map(|(name, index, _)| (name.to_owned(), index))
            .collect();
        let mut bridges = Vec::new();
        for b in plan.bridges().filter(|_| spec.underlay) {
            let index = *links
                .get(&b.name)
                .ok_or_else(|| AdoptError::Missing(format!("bridge {}", b.name)))?;
            bridges.push(Bridge { plan: b, index });
        }
        let mut nodes = Vec::new();
        for idx in 0..plan.n_nodes() {
            let node = plan.node(idx);
            if spec.underlay && !links.contains_key(&node.veth_name) {
                return Err(AdoptError::Missing(format!("veth {}", node.veth_name)));
            }
            let netns = NetNs::adopt_mount(dir.join(&node.netns_name))
                .ok_or_else(|| AdoptError::Missing(format!("namespace {}", node.netns_name)))?;
            nodes.push(Node {
                plan: node,
                netns,
                veth_made: spec.underlay,
            });
        }
        Ok(Fabric {
            plan: plan.clone(),
            bridges,
            tunnels: Vec::new(),
            nodes,
            torn_down: false,
        })
    }

    /// Removes everything: namespaces (and with them every veth), mounts, bridges.
    pub fn teardown(mut self) -> Result<TeardownStats, TeardownError> {
        self.torn_down = true;
        teardown_parts(
            self.plan.prefix(),
            std::mem::take(&mut self.nodes),
            std::mem::take(&mut self.bridges),
            std::mem::take(&mut self.tunnels),
        )
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        if self.torn_down {
            return;
        }
        let nodes = std::mem::take(&mut self.nodes);
        let bridges = std::mem::take(&mut self.bridges);
        let tunnels = std::mem::take(&mut self.tunnels);
        if let Err(e) = teardown_parts(self.plan.prefix(), nodes, bridges, tunnels) {
            tracing::error!("{e}");
        }
    }
}

/// Plumbs one node on the calling creator thread. On error, returns whatever was created so
/// the caller can remove it with the rest.
fn plumb_node(
    spec: &FabricSpec,
    plan: NodePlan,
    bridge_index: u32,
    group: u32,
    route: (Ipv4Addr, u8),
    host: &mut Rtnl<Step>,
) -> Result<Node, Box<(Option<Node>, CreateError)>> {
    let err = |plan: &NodePlan, step, source| CreateError::Node {
        node_id: plan.node_id,
        name: plan.netns_name.clone(),
        step,
        prefix: spec.plan.prefix().to_string(),
        source,
    };
    let netns =
        NetNs::unshare_thread().map_err(|e| Box::new((None, err(&plan, Step::Unshare, e))))?;
    let mut node = Node {
        plan,
        netns,
        veth_made: false,
    };
    macro_rules! fail {
        ($step:expr, $e:expr) => {{
            let e = err(&node.plan, $step, $e);
            return Err(Box::new((Some(node), e)));
        }};
    }
    if let Some(dir) = &spec.netns_dir
        && let Err(e) = node.netns.bind_mount(dir, &node.plan.netns_name)
    {
        fail!(Step::Mount, e);
    }
    let mut inner: Rtnl<Step> = match Rtnl::open() {
        Ok(r) => r,
        Err(e) => fail!(Step::NetlinkSocket, e),
    };
    if !spec.underlay {
        if let Err(Refused { tag, error }) =
            inner.request(msg::link_up(msg::LO_INDEX), Mode::Change, Step::LoopbackUp)
        {
            fail!(tag, error);
        }
        if !spec.keep_fds {
            node.netns.release_fd();
        }
        return Ok(node);
    }
    // Without IPv6 addresses on either end, no DAD, RS or MLD multicast is flooded through the
    // bridge to every other node: with them, creation is O(N²).
    let veth = msg::new_node_veth(
        &node.plan.veth_name,
        bridge_index,
        group,
        node.netns.raw_fd().expect("a new namespace has its fd"),
        Some(node.plan.mac),
        spec.ipv6,
    );
    // The host knows the node's MAC (we chose it): no ARP on the bridge for the node.
    let neighbour = msg::new_permanent_neighbour(bridge_index, node.plan.addr, node.plan.mac);
    let mut host_batch = vec![
        (veth, Mode::Create, Step::CreateVeth),
        // Replace: the bridge may have learnt the address already from the node's traffic
        // elsewhere on the experiment's segment (another host's node asking for it).
        (neighbour, Mode::Replace, Step::Neighbour),
    ];
    if !spec.ipv6 {
        let name = node.plan.veth_name.as_str();
        host_batch.push((
            msg::no_ipv6_addresses(0, Some(name)),
            Mode::Change,
            Step::DisableIpv6,
        ));
        host_batch.push((msg::link_up_by_name(name), Mode::Change, Step::CreateVeth));
    }
    for (m, mode, step) in host_batch {
        if let Err(e) = host.queue(m, mode, step) {
            fail!(step, e);
        }
    }
    if let Err(e) = host.flush() {
        fail!(Step::CreateVeth, e);
    }
    // The kernel has created (or refused) the veth by now; its ack is read below.
    let mut batch = vec![(msg::link_up(msg::LO_INDEX), Mode::Change, Step::LoopbackUp)];
    if !spec.ipv6 {
        let m = msg::no_ipv6_addresses(msg::NODE_ETH_INDEX, None);
        batch.push((m, Mode::Change, Step::DisableIpv6));
    }
    batch.push((
        msg::link_up(msg::NODE_ETH_INDEX),
        Mode::Change,
        Step::UnderlayUp,
    ));
    batch.push((
        msg::new_address(msg::NODE_ETH_INDEX, node.plan.addr, SHARD_PREFIX_LEN),
        Mode::Create,
        Step::AddAddress,
    ));
    // And the node knows its gateway's: its first packets need no ARP either.
    let gateway_mac = crate::plan::bridge_mac(node.plan.shard);
    batch.push((
        msg::new_permanent_neighbour(msg::NODE_ETH_INDEX, node.plan.gateway, gateway_mac),
        Mode::Replace,
        Step::Neighbour,
    ));
    // With one shard the address's own /22 route is the whole underlay.
    let (net, len) = route;
    if len < SHARD_PREFIX_LEN {
        batch.push((
            msg::new_route_via(net, len, node.plan.gateway, msg::NODE_ETH_INDEX),
            Mode::Create,
            Step::AddRoute,
        ));
    }
    for (m, mode, step) in batch {
        if let Err(e) = inner.queue(m, mode, step) {
            fail!(step, e);
        }
    }
    if let Err(e) = inner.flush() {
        fail!(Step::LoopbackUp, e);
    }
    // The host's answer first: if the veth failed, the in-namespace errors are only echoes.
    if let Err(Refused { tag, error }) = host.wait() {
        fail!(tag, error);
    }
    node.veth_made = true;
    if !spec.keep_fds {
        node.netns.release_fd();
    }
    if let Err(Refused { tag, error }) = inner.wait() {
        fail!(tag, error);
    }
    Ok(node)
}

/// How long teardown waits without seeing a host veth go before it deletes the rest itself:
/// long enough for the kernel's namespace workqueue to start on a batch of thousands.
const DRAIN_IDLE: Duration = Duration::from_secs(10);

/// The run is over: programs still running in its nodes end with it (they would keep the
/// namespaces, and what a node's TUN device carried, alive).
fn stop_programs_in(prefix: &Prefix, nodes: &[Node]) {
    let inodes: HashSet<u64> = nodes.iter().filter_map(|n| n.netns.inode()).collect();
    let stopped = crate::cleanup::stop_processes_inside(&inodes);
    if !stopped.is_empty() {
        tracing::info!(
            "stopped {} programs left running in nodes of prefix {prefix}: {}",
            stopped.len(),
            stopped.join(", ")
        );
    }
}

fn teardown_parts(
    prefix: &Prefix,
    nodes: Vec<Node>,
    bridges: Vec<Bridge>,
    tunnels: Vec<u32>,
) -> Result<TeardownStats, TeardownError> {
    let started = Instant::now();
    stop_programs_in(prefix, &nodes);
    let node_count = nodes.len();
    let names: HashSet<String> = nodes
        .iter()
        .filter(|n| n.veth_made)
        .map(|n| n.plan.veth_name.clone())
        .collect();
    // Subscribe before looking, so no deletion falls between the two.
    let mut monitor = LinkMonitor::open()?;
    let group = link_group(prefix);
    let mut host: Rtnl<()> = Rtnl::open()?;
    let links = host.dump(msg::get_links())?;
    let present: HashMap<String, u32> = links
        .iter()
        .filter_map(msg::link_name)
        .filter(|(name, _, _)| names.contains(*name))
        .map(|(name, index, _)| (name.to_owned(), index))
        .collect();
    // One request removes every veth of the group in one unregister batch, synchronously;
    // only when the group holds nothing but this run's veths.
    let group_is_ours = links
        .iter()
        .filter_map(msg::link_name)
        .filter(|(_, _, g)| *g == group)
        .all(|(name, _, _)| names.contains(name));
    if group_is_ours
        && !present.is_empty()
        && let Err(r) = host.request(msg::del_link_group(group), Mode::Delete, ())
    {
        tracing::warn!(
            "bulk delete of group {group} failed ({}); waiting for the kernel instead",
            r.error
        );
    }
    let mut unmount_error = None;
    for node in nodes {
        if let Err(e) = node.netns.close() {
            unmount_error.get_or_insert(e);
        }
    }
    let close = started.elapsed();
    // Whatever the group request did not remove goes with its namespace.
    let still = monitor.present(|name| present.contains_key(name))?;
    let remaining = monitor.wait_gone(still, DRAIN_IDLE)?;
    let drain = started.elapsed() - close;
    let stuck = remaining.len();
    if stuck > 0 {
        // A process still holds some namespace (`ip netns exec`, a program left running in a
        // node): remove the veths ourselves so nothing of the run stays visible.
        tracing::warn!(
            "{stuck} node namespaces of prefix {prefix} are still held by a process after {drain:?}; deleting their veths"
        );
        for (_, index) in &remaining {
            host.queue(msg::del_link(*index), Mode::Delete, ())?;
        }
        let _ = host.wait(); // one may have gone meanwhile
    }
    for index in bridges.iter().map(|b| b.index).chain(tunnels) {
        host.queue(msg::del_link(index), Mode::Delete, ())?;
    }
    if let Err(r) = host.wait()
        && r.error.raw_os_error() != Some(libc::ENODEV)
    {
        return Err(r.error.into());
    }
    if let Some(e) = unmount_error {
        return Err(e.into());
    }
    let total = started.elapsed();
    tracing::info!(
        seconds = total.as_secs_f64(),
        "tore down {} nodes and {} bridges of prefix {prefix}",
        node_count,
        bridges.len()
    );
    Ok(TeardownStats {
        close,
        drain,
        total,
    })
}
