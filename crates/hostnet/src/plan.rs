//! The underlay addressing and naming plan: pure arithmetic, no kernel.
//!
//! Nodes are spread over *shards*: one Linux bridge per /22, because a bridge takes at most
//! 1,024 ports and a smaller flood domain keeps ARP cheap. In shard `k` (subnet
//! `base + k·1024`) the bridge holds `.1` and the nodes take `.2` upward, 1,021 of them, so the
//! broadcast address stays free.
//!
//! Addresses derive from the node id (`node_id - 1` is the node's *global index*), not from a
//! host-local index: with `node_id_offset` two hosts get disjoint addresses, which a later
//! multi-host underlay (one L2 segment across hosts) needs.
//!
//! Names carry the run's prefix so that cleanup finds them and two runs never collide:
//! `/run/netns/<prefix><node_id>`, host veth `<prefix>v<node_id>`, bridge `<prefix>br<shard>`.
//! Inside a node's own namespace the names are fixed (`eth0`, `tun0`): the namespace is ours.

use std::fmt;
use std::net::Ipv4Addr;

/// Prefix length of one shard's subnet.
pub const SHARD_PREFIX_LEN: u8 = 22;
/// Addresses in one shard's subnet.
const SHARD_SIZE: u32 = 1 << (32 - SHARD_PREFIX_LEN as u32);
/// Nodes in one shard: all addresses but the network, the bridge (`.1`) and the broadcast.
pub const NODES_PER_SHARD: u32 = SHARD_SIZE - 3;
/// The kernel's limit on interface names (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;
/// Longest prefix accepted; leaves room for `v` and a 7-digit node id in a 15-character name.
pub const MAX_PREFIX_LEN: usize = 7;
/// The default underlay base, as in the seeds' system (`bridge_ip = 172.16.8.1`).
pub const DEFAULT_BASE: Ipv4Addr = Ipv4Addr::new(172, 16, 8, 0);
/// Name of the node's underlay interface inside its namespace.
pub const NODE_UNDERLAY_IFNAME: &str = "eth0";
/// Name of the node's TUN interface inside its namespace.
pub const NODE_TUN_IFNAME: &str = "tun0";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "invalid prefix {0:?}: use 1 to {MAX_PREFIX_LEN} lowercase letters or digits, starting and ending with a letter (e.g. \"nm\")"
    )]
    BadPrefix(String),
    #[error("underlay base {0} is not aligned to a /{SHARD_PREFIX_LEN}: use e.g. 172.16.8.0")]
    UnalignedBase(Ipv4Addr),
    #[error(
        "{nodes} nodes from base {base} (node ids up to {last_id}) run past the end of the IPv4 space: choose a lower base"
    )]
    AddressOverflow {
        base: Ipv4Addr,
        nodes: u32,
        last_id: u64,
    },
    #[error(
        "interface name {name:?} is longer than the kernel's {MAX_IFNAME_LEN} characters: use a shorter prefix or fewer nodes"
    )]
    NameTooLong { name: String },
    #[error(
        "underlay base {base} is in {range}, which can't carry the run's bridges: use a private range such as 172.16.8.0"
    )]
    ReservedBase { base: Ipv4Addr, range: &'static str },
    #[error("a run needs at least one node")]
    NoNodes,
    #[error("node ids start at 1")]
    ZeroId,
}

/// A validated run prefix: lowercase ASCII letters and digits, starting and ending with a
/// letter. Ending in a letter keeps names unambiguous: prefix `nm` owns `nm12`, and prefix
/// `nm1` can't exist to own it too.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Prefix(String);

impl Prefix {
    pub fn new(s: &str) -> Result<Self, PlanError> {
        let ok = !s.is_empty()
            && s.len() <= MAX_PREFIX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && s.as_bytes()[0].is_ascii_lowercase()
            && s.as_bytes()[s.len() - 1].is_ascii_lowercase();
        if ok {
            Ok(Prefix(s.to_owned()))
        } else {
            Err(PlanError::BadPrefix(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Name of a node's namespace (its file under `/run/netns`).
    pub fn netns_name(&self, node_id: u32) -> String {
        format!("{}{node_id}", self.0)
    }

    /// Name of the host end of a node's veth.
    pub fn veth_name(&self, node_id: u32) -> String {
        format!("{}v{node_id}", self.0)
    }

    /// Name of a shard's bridge.
    pub fn bridge_name(&self, shard: u32) -> String {
        format!("{}br{shard}", self.0)
    }

    /// Name of a shard's tunnel to the same bridge on the experiment's other hosts.
    pub fn tunnel_name(&self, shard: u32) -> String {
        format!("{}vx{shard}", self.0)
    }

    /// What a name belongs to, if it is one of this prefix's names.
    pub fn classify(&self, name: &str) -> Option<Owned> {
        let rest = name.strip_prefix(self.0.as_str())?;
        let number = |s: &str| -> Option<u32> {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && !s.starts_with('0')
                || s == "0")
                .then(|| s.parse().ok())
                .flatten()
        };
        if let Some(n) = number(rest) {
            return Some(Owned::Netns(n));
        }
        if let Some(n) = rest.strip_prefix('v').and_then(number) {
            return Some(Owned::Veth(n));
        }
        if let Some(n) = rest.strip_prefix("br").and_then(number) {
            return Some(Owned::Bridge(n));
        }
        if let Some(n) = rest.strip_prefix("vx").and_then(number) {
            return Some(Owned::Tunnel(n));
        }
        None
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A name that [`Prefix::classify`] recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owned {
    Netns(u32),
    Veth(u32),
    Bridge(u32),
    Tunnel(u32),
}

/// Where every node of one host goes on the underlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnderlayPlan {
    prefix: Prefix,
    base: Ipv4Addr,
    n_nodes: u32,
    node_id_offset: u32,
    /// The host's node ids when they are not one block (`node_id_offset + 1 ..`): ascending,
    /// as a scheduler hands them out.
    ids: Option<std::sync::Arc<[u32]>>,
}

/// One node's place in the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    /// Index on this host, from 0.
    pub idx: u32,
    /// `idx + node_id_offset + 1`, or the `idx`-th of the plan's ids.
    pub node_id: u32,
    pub shard: u32,
    /// The node's underlay address (on `eth0` in its namespace), prefix [`SHARD_PREFIX_LEN`].
    pub addr: Ipv4Addr,
    /// Its shard's bridge address: the node's gateway and the controller's side.
    pub gateway: Ipv4Addr,
    pub netns_name: String,
    pub veth_name: String,
    /// MAC of the node's `eth0`.
    pub mac: [u8; 6],
}

/// The MAC of a node's `eth0`: locally administered, derived from the node id, so the host
/// can know it without asking (and skip ARP).
pub fn node_mac(node_id: u32) -> [u8; 6] {
    let b = node_id.to_be_bytes();
    [0x02, 0x6e, b[0], b[1], b[2], b[3]]
}

/// The MAC of a shard's bridge: locally administered, derived from the shard.
pub fn bridge_mac(shard: u32) -> [u8; 6] {
    let b = shard.to_be_bytes();
    [0x02, 0x62, b[0], b[1], b[2], b[3]]
}

/// One shard's bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgePlan {
    pub shard: u32,
    pub name: String,
    /// `.1` of the shard's subnet, prefix [`SHARD_PREFIX_LEN`].
    pub addr: Ipv4Addr,
    pub subnet: Ipv4Addr,
    pub mac: [u8; 6],
}

/// The special-purpose block `addr` is in, if any: addresses a bridge can't take or that mean
/// something else to the host.
fn reserved_range(addr: Ipv4Addr) -> Option<&'static str> {
    let o = addr.octets();
    match o[0] {
        0 => Some("0.0.0.0/8 (this network)"),
        127 => Some("127.0.0.0/8 (loopback)"),
        169 if o[1] == 254 => Some("169.254.0.0/16 (link-local)"),
        224..=239 => Some("224.0.0.0/4 (multicast)"),
        240..=255 => Some("240.0.0.0/4 (reserved)"),
        _ => None,
    }
}

impl UnderlayPlan {
    /// Every underlay address the plan may use (all its shards): first and last.
    pub fn range(&self) -> (Ipv4Addr, Ipv4Addr) {
        let base = u32::from(self.base);
        let shards = self.shards();
        (
            Ipv4Addr::from(base + shards.start * SHARD_SIZE),
            Ipv4Addr::from(base + shards.end * SHARD_SIZE - 1),
        )
    }

    pub fn new(
        prefix: Prefix,
        base: Ipv4Addr,
        n_nodes: u32,
        node_id_offset: u32,
    ) -> Result<Self, PlanError> {
        if n_nodes == 0 {
            return Err(PlanError::NoNodes);
        }
        if u32::from(base) % SHARD_SIZE != 0 {
            return Err(PlanError::UnalignedBase(base));
        }
        if let Some(range) = reserved_range(base) {
            return Err(PlanError::ReservedBase { base, range });
        }
        let last_id = u64::from(node_id_offset) + u64::from(n_nodes);
        let last_index = last_id - 1;
        let shards_needed = last_index / u64::from(NODES_PER_SHARD) + 1;
        if u64::from(u32::from(base)) + shards_needed * u64::from(SHARD_SIZE) > 1 << 32
            || last_id > u64::from(u32::MAX)
        {
            return Err(PlanError::AddressOverflow {
                base,
                nodes: n_nodes,
                last_id,
            });
        }
        let plan = UnderlayPlan {
            prefix,
            base,
            n_nodes,
            node_id_offset,
            ids: None,
        };
        // Names grow with the number, so the last node and last shard are the longest.
        let longest = [
            plan.prefix.veth_name(last_id as u32),
            plan.prefix.bridge_name(plan.shards().end - 1),
        ];
        if let Some(name) = longest.into_iter().find(|n| n.len() > MAX_IFNAME_LEN) {
            return Err(PlanError::NameTooLong { name });
        }
        Ok(plan)
    }

    /// A plan for exactly these node ids (any set, e.g. a scheduler's share for this host).
    pub fn with_ids(prefix: Prefix, base: Ipv4Addr, ids: &[u32]) -> Result<Self, PlanError> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let (Some(&first), Some(&last)) = (ids.first(), ids.last()) else {
            return Err(PlanError::NoNodes);
        };
        if first == 0 {
            return Err(PlanError::ZeroId);
        }
        // The block up to the largest id checks addresses and names for every id below it.
        let mut plan = UnderlayPlan::new(prefix, base, last, 0)?;
        plan.n_nodes = ids.len() as u32;
        plan.node_id_offset = first - 1;
        if ids.len() as u32 != last - first + 1 {
            plan.ids = Some(ids.into());
        }
        Ok(plan)
    }

    /// The node ids of this host, ascending.
    pub fn node_ids(&self) -> Vec<u32> {
        match &self.ids {
            Some(ids) => ids.to_vec(),
            None => (self.node_id_offset + 1..=self.node_id_offset + self.n_nodes).collect(),
        }
    }

    /// Whether the ids are one block `node_id_offset + 1 ..= node_id_offset + n_nodes`.
    pub fn is_block(&self) -> bool {
        self.ids.is_none()
    }

    pub fn prefix(&self) -> &Prefix {
        &self.prefix
    }

    pub fn base(&self) -> Ipv4Addr {
        self.base
    }

    pub fn n_nodes(&self) -> u32 {
        self.n_nodes
    }

    pub fn node_id_offset(&self) -> u32 {
        self.node_id_offset
    }

    fn global_index(&self, idx: u32) -> u32 {
        match &self.ids {
            Some(ids) => ids[idx as usize] - 1,
            None => idx + self.node_id_offset,
        }
    }

    fn shard_of_global(global: u32) -> u32 {
        global / NODES_PER_SHARD
    }

    fn subnet(&self, shard: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + shard * SHARD_SIZE)
    }

    /// The shards this host's nodes live in (a half-open range of shard numbers).
    pub fn shards(&self) -> std::ops::Range<u32> {
        let first = Self::shard_of_global(self.global_index(0));
        let last = Self::shard_of_global(self.global_index(self.n_nodes - 1));
        first..last + 1
    }

    pub fn bridge(&self, shard: u32) -> BridgePlan {
        let subnet = self.subnet(shard);
        BridgePlan {
            shard,
            name: self.prefix.bridge_name(shard),
            addr: Ipv4Addr::from(u32::from(subnet) + 1),
            subnet,
            mac: bridge_mac(shard),
        }
    }

    pub fn bridges(&self) -> impl Iterator<Item = BridgePlan> + '_ {
        self.shards().map(|k| self.bridge(k))
    }

    /// The node with host index `idx`; panics if `idx >= n_nodes` (a caller bug).
    pub fn node(&self, idx: u32) -> NodePlan {
        assert!(idx < self.n_nodes, "node index {idx} out of plan");
        let global = self.global_index(idx);
        let shard = Self::shard_of_global(global);
        let subnet = u32::from(self.subnet(shard));
        let node_id = global + 1;
        NodePlan {
            idx,
            node_id,
            shard,
            addr: Ipv4Addr::from(subnet + 2 + global % NODES_PER_SHARD),
            gateway: Ipv4Addr::from(subnet + 1),
            netns_name: self.prefix.netns_name(node_id),
            veth_name: self.prefix.veth_name(node_id),
            mac: node_mac(node_id),
        }
    }

    /// The host index of a node id, if this plan holds it.
    pub fn idx_of(&self, node_id: u32) -> Option<u32> {
        if let Some(ids) = &self.ids {
            return ids.binary_search(&node_id).ok().map(|i| i as u32);
        }
        let idx = node_id.checked_sub(self.node_id_offset + 1)?;
        (idx < self.n_nodes).then_some(idx)
    }

    /// The smallest prefix that covers every shard of the plan, counted from shard 0 so that
    /// hosts with different offsets agree on it. Nodes route only this range towards their
    /// bridge: nothing a node sends can leave the machine, even where the host forwards.
    pub fn underlay_route(&self) -> (Ipv4Addr, u8) {
        let start = u32::from(self.base);
        let end = start + (self.shards().end * SHARD_SIZE - 1);
        let mut len = SHARD_PREFIX_LEN;
        while len > 0 && (start >> (32 - len)) != (end >> (32 - len)) {
            len -= 1;
        }
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        (Ipv4Addr::from(start & mask), len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_in_special_ranges_are_refused_and_a_plan_knows_its_addresses() {
        let nm = Prefix::new("nm").unwrap();
        for base in [
            "127.0.0.0",
            "0.0.0.0",
            "169.254.0.0",
            "224.0.0.0",
            "250.0.0.0",
        ] {
            let e = UnderlayPlan::new(nm.clone(), base.parse().unwrap(), 10, 0)
                .unwrap_err()
                .to_string();
            assert!(e.contains("can't carry the run's bridges"), "{base}: {e}");
        }
        let plan = UnderlayPlan::new(nm.clone(), DEFAULT_BASE, 2000, 0).unwrap();
        assert_eq!(
            plan.range(),
            (DEFAULT_BASE, Ipv4Addr::new(172, 16, 15, 255))
        );
        // A host's share of a larger run: only its own shards.
        let share = UnderlayPlan::new(nm, DEFAULT_BASE, 10, NODES_PER_SHARD).unwrap();
        assert_eq!(
            share.range(),
            (
                Ipv4Addr::new(172, 16, 12, 0),
                Ipv4Addr::new(172, 16, 15, 255)
            )
        );
    }

    #[test]
    fn a_plan_of_any_ids_keeps_each_nodes_address_and_names() {
        let nm = Prefix::new("nm").unwrap();
        let block = UnderlayPlan::new(nm.clone(), DEFAULT_BASE, 2000, 0).unwrap();
        let ids = [3, 7, 8, 1500];
        let some = UnderlayPlan::with_ids(nm.clone(), DEFAULT_BASE, &[1500, 7, 3, 8, 7]).unwrap();
        assert_eq!(some.node_ids(), ids);
        assert_eq!(some.n_nodes(), 4);
        assert!(!some.is_block());
        for (idx, id) in ids.iter().enumerate() {
            let n = some.node(idx as u32);
            let same = block.node(id - 1);
            assert_eq!(
                (n.node_id, n.addr, n.gateway, n.shard, &n.veth_name, n.mac),
                (
                    *id,
                    same.addr,
                    same.gateway,
                    same.shard,
                    &same.veth_name,
                    same.mac
                )
            );
            assert_eq!(some.idx_of(*id), Some(idx as u32));
        }
        assert_eq!(some.idx_of(4), None);
        assert_eq!(some.shards(), 0..2, "ids 3..1500 span two shards");
        // Consecutive ids are a block, as with an offset.
        let run = UnderlayPlan::with_ids(nm.clone(), DEFAULT_BASE, &[5, 6, 7]).unwrap();
        assert_eq!(
            run,
            UnderlayPlan::new(nm.clone(), DEFAULT_BASE, 3, 4).unwrap()
        );
        assert!(matches!(
            UnderlayPlan::with_ids(nm.clone(), DEFAULT_BASE, &[]),
            Err(PlanError::NoNodes)
        ));
        assert!(matches!(
            UnderlayPlan::with_ids(nm, DEFAULT_BASE, &[0, 1]),
            Err(PlanError::ZeroId)
        ));
    }

    fn plan(n: u32, offset: u32) -> UnderlayPlan {
        UnderlayPlan::new(Prefix::new("nm").unwrap(), DEFAULT_BASE, n, offset).unwrap()
    }

    #[test]
    fn first_node_matches_the_seeds_plan() {
        let p = plan(1, 0);
        let n = p.node(0);
        assert_eq!(n.node_id, 1);
        assert_eq!(n.addr, Ipv4Addr::new(172, 16, 8, 2));
        assert_eq!(n.gateway, Ipv4Addr::new(172, 16, 8, 1));
        assert_eq!(n.netns_name, "nm1");
        assert_eq!(n.veth_name, "nmv1");
        assert_eq!(p.bridge(0).name, "nmbr0");
    }

    #[test]
    fn shard_edges() {
        let p = plan(3000, 0);
        let last_in_0 = p.node(NODES_PER_SHARD - 1);
        assert_eq!(last_in_0.shard, 0);
        assert_eq!(last_in_0.addr, Ipv4Addr::new(172, 16, 11, 254));
        let first_in_1 = p.node(NODES_PER_SHARD);
        assert_eq!(first_in_1.shard, 1);
        assert_eq!(first_in_1.addr, Ipv4Addr::new(172, 16, 12, 2));
        assert_eq!(first_in_1.gateway, Ipv4Addr::new(172, 16, 12, 1));
        assert_eq!(p.shards(), 0..3);
        assert_eq!(p.bridge(2).addr, Ipv4Addr::new(172, 16, 16, 1));
    }

    #[test]
    fn offsets_shift_ids_and_addresses() {
        let p = plan(5, 5);
        let n = p.node(0);
        assert_eq!(n.node_id, 6);
        assert_eq!(n.addr, Ipv4Addr::new(172, 16, 8, 7));
        assert_eq!(p.idx_of(6), Some(0));
        assert_eq!(p.idx_of(5), None);
        assert_eq!(p.idx_of(11), None);
        // An offset past a shard boundary starts in that shard.
        let p = plan(10, NODES_PER_SHARD);
        assert_eq!(p.shards(), 1..2);
        assert_eq!(p.node(0).addr, Ipv4Addr::new(172, 16, 12, 2));
    }

    #[test]
    fn ten_thousand_nodes_are_unique_and_named_within_limits() {
        let p = plan(20_000, 0);
        let mut seen = std::collections::HashSet::new();
        for idx in 0..p.n_nodes() {
            let n = p.node(idx);
            assert!(seen.insert(n.addr), "duplicate address {}", n.addr);
            assert!(n.veth_name.len() <= MAX_IFNAME_LEN);
            let octet = u32::from(n.addr) & 0x3ff;
            assert!(
                (2..=1022).contains(&octet),
                "{} is the bridge or broadcast",
                n.addr
            );
            assert_eq!(p.idx_of(n.node_id), Some(idx));
        }
        assert_eq!(
            p.shards().len(),
            20_000usize.div_ceil(NODES_PER_SHARD as usize)
        );
        let macs: std::collections::HashSet<_> = (0..p.n_nodes()).map(|i| p.node(i).mac).collect();
        assert_eq!(macs.len(), p.n_nodes() as usize, "node MACs are unique");
        for b in p.bridges() {
            assert!(b.name.len() <= MAX_IFNAME_LEN);
            assert!(!macs.contains(&b.mac));
            assert!(!seen.contains(&b.addr));
        }
    }

    #[test]
    fn underlay_route_covers_all_shards() {
        assert_eq!(plan(10, 0).underlay_route(), (DEFAULT_BASE, 22));
        assert_eq!(
            plan(1500, 0).underlay_route(),
            (Ipv4Addr::new(172, 16, 8, 0), 21)
        );
        // 10 shards from 172.16.8.0 end at 172.16.47.255: /18 from 172.16.0.0 covers them.
        let (net, len) = plan(10_000, 0).underlay_route();
        assert_eq!((net, len), (Ipv4Addr::new(172, 16, 0, 0), 18));
    }

    #[test]
    fn prefixes_are_checked() {
        for bad in ["", "NM", "1nm", "nm1", "n-m", "abcdefgh", "nm_"] {
            assert!(Prefix::new(bad).is_err(), "{bad} accepted");
        }
        for good in ["n", "nm", "t3a", "abcdefg"] {
            assert!(Prefix::new(good).is_ok(), "{good} refused");
        }
    }

    #[test]
    fn names_are_classified_without_ambiguity() {
        let nm = Prefix::new("nm").unwrap();
        assert_eq!(nm.classify("nm12"), Some(Owned::Netns(12)));
        assert_eq!(nm.classify("nmv12"), Some(Owned::Veth(12)));
        assert_eq!(nm.classify("nmbr0"), Some(Owned::Bridge(0)));
        assert_eq!(nm.classify("nmvx0"), Some(Owned::Tunnel(0)));
        // Another run's names, or names that merely start alike, are not ours.
        for other in [
            "nma12", "nmav12", "nmabr0", "nm", "nmv", "nmbr", "nm012", "nmx", "eth0",
        ] {
            assert_eq!(nm.classify(other), None, "{other}");
        }
        let nma = Prefix::new("nma").unwrap();
        assert_eq!(nma.classify("nma12"), Some(Owned::Netns(12)));
        assert_eq!(nma.classify("nm12"), None);
    }

    #[test]
    fn bad_plans_are_refused() {
        let nm = Prefix::new("nm").unwrap();
        assert_eq!(
            UnderlayPlan::new(nm.clone(), DEFAULT_BASE, 0, 0),
            Err(PlanError::NoNodes)
        );
        assert!(matches!(
            UnderlayPlan::new(nm.clone(), Ipv4Addr::new(172, 16, 9, 0), 1, 0),
            Err(PlanError::UnalignedBase(_))
        ));
        assert!(matches!(
            UnderlayPlan::new(nm.clone(), Ipv4Addr::new(223, 0, 0, 0), 600_000_000, 0),
            Err(PlanError::AddressOverflow { .. })
        ));
        let long = Prefix::new("abcdefg").unwrap();
        assert!(matches!(
            UnderlayPlan::new(long, Ipv4Addr::new(10, 0, 0, 0), 100_000_000, 0),
            Err(PlanError::NameTooLong { .. })
        ));
    }
}
