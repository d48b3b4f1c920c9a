//! Kernel links, for max mode: a veth pair between two nodes' namespaces, over which the two
//! kernels forward packets themselves, shaped by a token bucket filter. Nothing of a packet
//! that crosses a max-mode node from one kernel link to another reaches user space.
//!
//! Each end lives in its node's namespace, named `k<peer>` and carrying the MAC address of
//! its own node ([`mac`]), so a node's neighbour entries and routes are known without ARP.
//! Every function here works in the calling thread's namespace (the agent's socket factory
//! enters the node's first).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::RawFd;

use netlink_packet_core::DefaultNla;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute,
    LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteNextHop, RouteNextHopFlags,
    RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage, TcOption};

use crate::rtnl::{Mode, Rtnl};

/// The end of the kernel link towards `peer`, in a node's namespace.
pub fn ifname(peer: u32) -> String {
    format!("k{peer}")
}

/// The MAC address of every kernel-link end in `node`'s namespace: locally administered,
/// and unique on each pair (whose two ends belong to different nodes).
pub fn mac(node: u32) -> [u8; 6] {
    let id = node.to_be_bytes();
    [0x02, 0x4b, id[0], id[1], id[2], id[3]]
}

/// Routes of the kernel's own: what `apply_routes` replaces and removes, and nothing else.
const PROTOCOL: RouteProtocol = RouteProtocol::Other(0x4e);

/// `tc` handles: the token bucket filter at the root, its queue under it.
const TBF_HANDLE: u32 = 0x0001_0000;
const TBF_CLASS: u32 = 0x0001_0001;
const QUEUE_HANDLE: u32 = 0x0002_0000;

fn kernel_error(what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn write_sysctl(key: &str, value: &str) -> io::Result<()> {
    std::fs::write(format!("/proc/sys/{key}"), value)
        .map_err(|e| kernel_error(&format!("cannot set {key}"), e))
}

/// Makes the namespace a router: it forwards, spreads equal-cost routes by flow (addresses
/// and ports, as the user-space hops do) and takes packets whose return path is elsewhere
/// (routes may differ by direction).
pub fn enable_forwarding() -> io::Result<()> {
    write_sysctl("net/ipv4/ip_forward", "1")?;
    write_sysctl("net/ipv4/fib_multipath_hash_policy", "1")?;
    for conf in ["all", "default"] {
        write_sysctl(&format!("net/ipv4/conf/{conf}/rp_filter"), "0")?;
    }
    Ok(())
}

fn index_of(name: &str) -> io::Result<u32> {
    nix::net::if_::if_nametoindex(name)
        .map_err(|e| kernel_error(&format!("no link {name}"), io::Error::from(e)))
}

/// `ip link add k<peer> address <mac(me)> type veth peer name k<me> address <mac(peer)>
/// netns <peer_ns>`; a link of the same name left by an earlier run is replaced. Each end is
/// raised and configured by its own node ([`configure_end`]).
pub fn create_pair(me: u32, peer: u32, peer_ns: RawFd) -> io::Result<()> {
    let mut rtnl: Rtnl<()> = Rtnl::open()?;
    if let Ok(old) = index_of(&ifname(peer)) {
        let mut m = LinkMessage::default();
        m.header.index = old;
        rtnl.request(RouteNetlinkMessage::DelLink(m), Mode::Delete, ())
            .map_err(|r| kernel_error("cannot remove an old kernel link", r.error))?;
    }
    let mut theirs = LinkMessage::default();
    theirs.attributes.push(LinkAttribute::IfName(ifname(me)));
    theirs
        .attributes
        .push(LinkAttribute::Address(mac(peer).to_vec()));
    theirs.attributes.push(LinkAttribute::NetNsFd(peer_ns));
    let mut mine = LinkMessage::default();
    mine.attributes.push(LinkAttribute::IfName(ifname(peer)));
    mine.attributes
        .push(LinkAttribute::Address(mac(me).to_vec()));
    mine.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(theirs))),
    ]));
    rtnl.request(RouteNetlinkMessage::NewLink(mine), Mode::Create, ())
        .map_err(|r| kernel_error("cannot create a kernel link", r.error))
}

/// `ip link set k<peer> up|down`: a link down drops what it holds and carries nothing either
/// way (the other end loses its carrier).
pub fn set_up(rtnl: &mut Rtnl<()>, peer: u32, up: bool) -> io::Result<()> {
    let index = index_of(&ifname(peer))?;
    rtnl.request(crate::msg::link_state(index, up), Mode::Change, ())
        .map_err(|r| kernel_error("cannot set a kernel link up or down", r.error))
}

/// This node's end of the kernel link to `peer`: `ip link set k<peer> mtu <mtu> addrgenmode
/// none` (the node's TUN MTU, so that what fits one fits the other; no IPv6 chatter), `ip
/// neigh replace <peer_addr> lladdr <mac(peer)> dev k<peer> nud permanent`, and up unless
/// the link is down.
pub fn configure_end(
    rtnl: &mut Rtnl<()>,
    peer: u32,
    peer_addr: Ipv4Addr,
    mtu: u16,
    up: bool,
) -> io::Result<()> {
    let index = index_of(&ifname(peer))?;
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.attributes.push(LinkAttribute::Mtu(u32::from(mtu)));
    m.attributes
        .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
            vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
        )]));
    // Queued together, acknowledged together; the address mode is set before the link is up.
    rtnl.queue(RouteNetlinkMessage::SetLink(m), Mode::Change, ())?;
    rtnl.queue(
        crate::msg::new_permanent_neighbour(index, peer_addr, mac(peer)),
        Mode::Replace,
        (),
    )?;
    if up {
        rtnl.queue(crate::msg::link_up(index), Mode::Change, ())?;
    }
    rtnl.wait()
        .map_err(|r| kernel_error("cannot configure a kernel link's end", r.error))
}

/// How a kernel link's direction is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub bytes_per_sec: u64,
    /// The bucket: this many bytes may leave at once after a pause.
    pub burst: u32,
    pub queue: Queue,
}

/// The queue in front of the token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    Packets(u32),
    Bytes(u32),
}

/// `struct tc_ratespec` for `bytes_per_sec`, the link layer counted (Ethernet: the veth's
/// frames carry their 14-byte header, which the rate counts as a wire would).
fn ratespec(bytes_per_sec: u64) -> [u8; 12] {
    let mut r = [0u8; 12];
    r[1] = 1; // TC_LINKLAYER_ETHERNET: no rate table needed.
    r[8..12].copy_from_slice(&(bytes_per_sec.min(u64::from(u32::MAX)) as u32).to_ne_bytes());
    r
}

/// The token bucket filter's options: `struct tc_tbf_qopt` (rate, no peak rate, no queue of
/// its own: the queue is its child), the 64-bit rate and the burst in bytes.
pub fn tbf_options(shape: &Shape) -> Vec<TcOption> {
    let mut qopt = Vec::with_capacity(36);
    qopt.extend_from_slice(&ratespec(shape.bytes_per_sec));
    qopt.extend_from_slice(&[0u8; 12]); // peak rate
    qopt.extend_from_slice(&0u32.to_ne_bytes()); // limit: the child qdisc holds the queue
    // The bucket in scheduler ticks (64 ns each); TCA_TBF_BURST below is what the kernel uses.
    let ticks =
        u128::from(shape.burst) * 1_000_000_000 / u128::from(shape.bytes_per_sec.max(1)) / 64;
    qopt.extend_from_slice(&(ticks.min(u128::from(u32::MAX)) as u32).to_ne_bytes());
    qopt.extend_from_slice(&0u32.to_ne_bytes()); // mtu (of the peak rate's bucket)
    vec![
        TcOption::Other(DefaultNla::new(1, qopt)), // TCA_TBF_PARMS
        TcOption::Other(DefaultNla::new(
            4,
            shape.bytes_per_sec.to_ne_bytes().to_vec(),
        )), // TCA_TBF_RATE64
        TcOption::Other(DefaultNla::new(6, shape.burst.to_ne_bytes().to_vec())), // TCA_TBF_BURST
    ]
}

/// `tc qdisc replace dev k<peer> root handle 1: tbf rate … burst …` and `tc qdisc replace dev
/// k<peer> parent 1:1 handle 2: pfifo|bfifo limit …`; with no shape, the root goes back to
/// the veth's default (no queue, no rate).
pub fn shape(rtnl: &mut Rtnl<()>, peer: u32, shape: Option<Shape>) -> io::Result<()> {
    let index = index_of(&ifname(peer))? as i32;
    let Some(shape) = shape else {
        let mut m = TcMessage::default();
        m.header.index = index;
        m.header.parent = TcHandle::ROOT;
        m.attributes.push(TcAttribute::Kind("noqueue".into()));
        return rtnl
            .request(
                RouteNetlinkMessage::NewQueueDiscipline(m),
                Mode::Replace,
                (),
            )
            .map_err(|r| kernel_error("cannot unshape a kernel link", r.error));
    };
    let mut tbf = TcMessage::default();
    tbf.header.index = index;
    tbf.header.parent = TcHandle::ROOT;
    tbf.header.handle = TcHandle::from(TBF_HANDLE);
    tbf.attributes.push(TcAttribute::Kind("tbf".into()));
    tbf.attributes
        .push(TcAttribute::Options(tbf_options(&shape)));
    rtnl.request(
        RouteNetlinkMessage::NewQueueDiscipline(tbf),
        Mode::Replace,
        (),
    )
    .map_err(|r| kernel_error("cannot shape a kernel link", r.error))?;
    let (kind, limit) = match shape.queue {
        Queue::Packets(n) => ("pfifo", n),
        Queue::Bytes(n) => ("bfifo", n),
    };
    let mut fifo = TcMessage::default();
    fifo.header.index = index;
    fifo.header.parent = TcHandle::from(TBF_CLASS);
    fifo.header.handle = TcHandle::from(QUEUE_HANDLE);
    fifo.attributes.push(TcAttribute::Kind(kind.into()));
    // TCA_OPTIONS of a fifo is `struct tc_fifo_qopt` itself, not nested attributes.
    fifo.attributes.push(TcAttribute::Other(DefaultNla::new(
        2,
        limit.to_ne_bytes().to_vec(),
    )));
    rtnl.request(
        RouteNetlinkMessage::NewQueueDiscipline(fifo),
        Mode::Replace,
        (),
    )
    .map_err(|r| kernel_error("cannot give a kernel link its queue", r.error))
}

/// A route of the kernel's: `dest/prefix_len` leaves over the kernel links to these peers
/// (their overlay addresses are the gateways), spread by flow when there are several.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KernelRoute {
    pub dest: Ipv4Addr,
    pub prefix_len: u8,
    pub via: Vec<(u32, Ipv4Addr)>,
}

/// A route of ours in the main table to `dest/prefix_len`, with `scope`.
fn route_to(dest: Ipv4Addr, prefix_len: u8, scope: RouteScope) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    m.header.destination_prefix_length = prefix_len;
    m.header.table = libc::RT_TABLE_MAIN;
    m.header.protocol = PROTOCOL;
    m.header.scope = scope;
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::Inet(dest)));
    m
}

fn route_message(route: &KernelRoute, src: Ipv4Addr) -> io::Result<RouteNetlinkMessage> {
    let mut m = route_to(route.dest, route.prefix_len, RouteScope::Universe);
    m.header.kind = RouteType::Unicast;
    // The node's own packets leave from its overlay address (the veths have none).
    m.attributes
        .push(RouteAttribute::PrefSource(RouteAddress::Inet(src)));
    match route.via.as_slice() {
        [(peer, gateway)] => {
            m.header.flags = RouteFlags::Onlink;
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet(*gateway)));
            m.attributes
                .push(RouteAttribute::Oif(index_of(&ifname(*peer))?));
        }
        hops => {
            let mut next_hops = Vec::with_capacity(hops.len());
            for (peer, gateway) in hops {
                let mut hop = RouteNextHop::default();
                hop.flags = RouteNextHopFlags::Onlink;
                hop.interface_index = index_of(&ifname(*peer))?;
                hop.attributes
                    .push(RouteAttribute::Gateway(RouteAddress::Inet(*gateway)));
                next_hops.push(hop);
            }
            m.attributes.push(RouteAttribute::MultiPath(next_hops));
        }
    }
    Ok(RouteNetlinkMessage::NewRoute(m))
}

/// Puts `new` in the kernel's table (each route replaced, so one the kernel dropped with a
/// link that went down comes back) and removes what of `old` is not in it, all in one batch.
/// Returns the first refusal; the kernel has tried every request by then.
pub fn apply_routes(
    rtnl: &mut Rtnl<()>,
    old: &[KernelRoute],
    new: &[KernelRoute],
    src: Ipv4Addr,
) -> io::Result<()> {
    let keep: std::collections::HashSet<(Ipv4Addr, u8)> =
        new.iter().map(|r| (r.dest, r.prefix_len)).collect();
    let gone = old
        .iter()
        .filter(|r| !keep.contains(&(r.dest, r.prefix_len)));
    // Removals first: one the kernel dropped already (its link went down) is refused, and a
    // refusal there must not hide one among the routes put in.
    for r in gone {
        let m = route_to(r.dest, r.prefix_len, RouteScope::NoWhere);
        rtnl.queue(RouteNetlinkMessage::DelRoute(m), Mode::Delete, ())?;
    }
    if let Err(refused) = rtnl.wait()
        && refused.error.raw_os_error() != Some(libc::ESRCH)
    {
        return Err(kernel_error("cannot remove a kernel route", refused.error));
    }
    for r in new {
        rtnl.queue(route_message(r, src)?, Mode::Replace, ())?;
    }
    rtnl.wait()
        .map_err(|r| kernel_error("cannot route over kernel links", r.error))
}

/// What one kernel link's end has sent since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelCounters {
    pub peer: u32,
    /// Frames sent; a segment the kernel carried whole (GSO) counts once.
    pub packets: u64,
    /// Their IP bytes (the Ethernet headers taken off).
    pub ip_bytes: u64,
    /// Dropped by the queue in front of the token bucket.
    pub dropped: u64,
    /// Waiting in that queue now.
    pub queued: u64,
}

/// The counters of every kernel link's end in the namespace, by peer.
pub fn counters() -> io::Result<Vec<KernelCounters>> {
    let mut rtnl: Rtnl<()> = Rtnl::open()?;
    let mut by_index = std::collections::BTreeMap::new();
    for m in rtnl.dump(crate::msg::get_links())? {
        let RouteNetlinkMessage::NewLink(l) = m else {
            continue;
        };
        let mut peer = None;
        let mut stats = None;
        for a in &l.attributes {
            match a {
                LinkAttribute::IfName(n) => {
                    peer = n.strip_prefix('k').and_then(|id| id.parse::<u32>().ok());
                }
                LinkAttribute::Stats64(s) => stats = Some((s.tx_packets, s.tx_bytes)),
                _ => {}
            }
        }
        if let (Some(peer), Some((packets, bytes))) = (peer, stats) {
            by_index.insert(
                l.header.index as i32,
                KernelCounters {
                    peer,
                    packets,
                    ip_bytes: bytes.saturating_sub(packets * 14),
                    ..Default::default()
                },
            );
        }
    }
    for m in rtnl.dump(RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()))? {
        let RouteNetlinkMessage::NewQueueDiscipline(q) = m else {
            continue;
        };
        if q.header.parent != TcHandle::ROOT {
            continue;
        }
        let Some(c) = by_index.get_mut(&q.header.index) else {
            continue;
        };
        for a in &q.attributes {
            if let TcAttribute::Stats(s) = a {
                c.dropped = u64::from(s.drops);
                c.queued = u64::from(s.qlen);
            }
        }
    }
    let mut all: Vec<KernelCounters> = by_index.into_values().collect();
    all.sort_by_key(|c| c.peer);
    Ok(all)
}

/// The CIDR blocks that cover `first..=last` exactly, largest first.
pub fn cidr_blocks(first: Ipv4Addr, last: Ipv4Addr) -> Vec<(Ipv4Addr, u8)> {
    let (mut lo, hi) = (u64::from(u32::from(first)), u64::from(u32::from(last)));
    let mut blocks = Vec::new();
    while lo <= hi {
        // The largest block aligned at `lo` that stays within `hi`.
        let mut size = if lo == 0 {
            1u64 << 32
        } else {
            1u64 << lo.trailing_zeros()
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        blocks.push((Ipv4Addr::from(lo as u32), 32 - size.trailing_zeros() as u8));
        lo += size;
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_become_the_fewest_aligned_blocks() {
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            cidr_blocks(a("10.0.0.5"), a("10.0.0.5")),
            vec![(a("10.0.0.5"), 32)]
        );
        assert_eq!(
            cidr_blocks(a("10.0.0.1"), a("10.0.0.8")),
            vec![
                (a("10.0.0.1"), 32),
                (a("10.0.0.2"), 31),
                (a("10.0.0.4"), 30),
                (a("10.0.0.8"), 32)
            ]
        );
        assert_eq!(
            cidr_blocks(a("10.0.0.0"), a("10.0.255.255")),
            vec![(a("10.0.0.0"), 16)]
        );
        assert_eq!(
            cidr_blocks(a("0.0.0.0"), a("255.255.255.255")),
            vec![(a("0.0.0.0"), 0)]
        );
        // Every address of a range is in exactly one block.
        let (first, last) = (u32::from(a("10.0.3.7")), u32::from(a("10.0.9.200")));
        let blocks = cidr_blocks(first.into(), last.into());
        let covered: u64 = blocks.iter().map(|&(_, len)| 1u64 << (32 - len)).sum();
        assert_eq!(covered, u64::from(last - first + 1));
    }

    #[test]
    fn the_token_bucket_options_carry_rate_burst_and_no_queue_of_their_own() {
        let opts = tbf_options(&Shape {
            bytes_per_sec: 12_500_000,
            burst: 15_000,
            queue: Queue::Packets(100),
        });
        let TcOption::Other(parms) = &opts[0] else {
            panic!("TCA_TBF_PARMS first")
        };
        use netlink_packet_core::Nla;
        assert_eq!((parms.kind(), parms.value_len()), (1, 36));
        let mut qopt = vec![0u8; 36];
        parms.emit_value(&mut qopt);
        assert_eq!(qopt[1], 1, "Ethernet link layer");
        assert_eq!(
            u32::from_ne_bytes(qopt[8..12].try_into().unwrap()),
            12_500_000
        );
        assert_eq!(
            u32::from_ne_bytes(qopt[24..28].try_into().unwrap()),
            0,
            "limit"
        );
        // 15,000 bytes at 12.5 MB/s is 1.2 ms: 18,750 ticks of 64 ns.
        assert_eq!(u32::from_ne_bytes(qopt[28..32].try_into().unwrap()), 18_750);
        assert!(matches!(&opts[2], TcOption::Other(b) if b.kind() == 6));
    }
}
