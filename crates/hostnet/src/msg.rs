//! Builders for the rtnetlink requests the plumbing sends. Each says its `ip` equivalent.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;

use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoBridge, InfoData, InfoKind, InfoVeth, InfoVxlan,
    LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

/// Interface index of `lo` in a fresh namespace.
pub const LO_INDEX: u32 = 1;
/// Interface index the plumbing gives a node's `eth0`: the first free index in its namespace.
pub const NODE_ETH_INDEX: u32 = 2;

fn link(index: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m
}

/// `ip link add <name> type bridge mcast_snooping 0` (left down: bringing it up after its ports
/// are attached saves a port-state pass per port).
pub fn new_bridge(name: &str, mac: [u8; 6]) -> RouteNetlinkMessage {
    let mut m = link(0);
    m.attributes.push(LinkAttribute::IfName(name.to_owned()));
    m.attributes.push(LinkAttribute::Address(mac.to_vec()));
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Bridge),
        LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::MulticastSnooping(false)])),
    ]));
    RouteNetlinkMessage::NewLink(m)
}

/// `ip link add <host_name> master <bridge> [up] type veth peer name eth0 index 2 [address
/// <mac>] netns <fd>`:
/// one request creates the pair, puts the peer in the node's namespace and attaches the host
/// end. The peer can't be created up (veth_open fails with ENOTCONN), so it is raised later.
pub fn new_node_veth(
    host_name: &str,
    bridge_index: u32,
    group: u32,
    netns_fd: RawFd,
    peer_mac: Option<[u8; 6]>,
    up: bool,
) -> RouteNetlinkMessage {
    let mut peer = link(NODE_ETH_INDEX);
    if let Some(mac) = peer_mac {
        peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    peer.attributes.push(LinkAttribute::IfName(
        crate::plan::NODE_UNDERLAY_IFNAME.to_owned(),
    ));
    peer.attributes.push(LinkAttribute::NetNsFd(netns_fd));
    // One queue each way on both ends, not one per CPU: the underlay carries control and
    // cross-host links, and every extra queue is a kernel object per node.
    peer.attributes.push(LinkAttribute::NumTxQueues(1));
    peer.attributes.push(LinkAttribute::NumRxQueues(1));

    let mut m = link(0);
    if up {
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
    }
    m.attributes
        .push(LinkAttribute::IfName(host_name.to_owned()));
    m.attributes.push(LinkAttribute::Controller(bridge_index));
    m.attributes.push(LinkAttribute::Group(group));
    m.attributes.push(LinkAttribute::NumTxQueues(1));
    m.attributes.push(LinkAttribute::NumRxQueues(1));
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    RouteNetlinkMessage::NewLink(m)
}

/// `tc qdisc replace dev <index> root noqueue`: a device whose driver never pushes back (a
/// TUN device drops when its own ring is full) gains nothing from a queue in front, and the
/// default `pfifo_fast` holds three rings of `txqueuelen` slots (12 KiB for a TUN device).
pub fn noqueue_root(index: u32) -> RouteNetlinkMessage {
    let mut m = netlink_packet_route::tc::TcMessage::default();
    m.header.index = index as i32;
    m.header.parent = netlink_packet_route::tc::TcHandle::ROOT;
    m.attributes
        .push(netlink_packet_route::tc::TcAttribute::Kind(
            "noqueue".into(),
        ));
    RouteNetlinkMessage::NewQueueDiscipline(m)
}

/// `ip link set dev <index> up`.
pub fn link_up(index: u32) -> RouteNetlinkMessage {
    link_state(index, true)
}

/// `ip link set dev <index> up|down`.
pub fn link_state(index: u32, up: bool) -> RouteNetlinkMessage {
    let mut m = link(index);
    if up {
        m.header.flags = LinkFlags::Up;
    }
    m.header.change_mask = LinkFlags::Up;
    RouteNetlinkMessage::SetLink(m)
}

/// `ip link set dev <name> up`.
pub fn link_up_by_name(name: &str) -> RouteNetlinkMessage {
    let mut m = link(0);
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    m.attributes.push(LinkAttribute::IfName(name.to_owned()));
    RouteNetlinkMessage::SetLink(m)
}

/// `ip link set dev <index|name> addrgenmode none`: the link gets no IPv6 link-local address,
/// so it sends no DAD, router solicitation or MLD report. Must come before the link goes up.
pub fn no_ipv6_addresses(index: u32, name: Option<&str>) -> RouteNetlinkMessage {
    let mut m = link(index);
    if let Some(name) = name {
        m.attributes.push(LinkAttribute::IfName(name.to_owned()));
    }
    m.attributes
        .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
            vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
        )]));
    RouteNetlinkMessage::SetLink(m)
}

/// `ip link del dev <index>`.
pub fn del_link(index: u32) -> RouteNetlinkMessage {
    RouteNetlinkMessage::DelLink(link(index))
}

/// `ip link del group <group>`: every link of the group in one unregister batch (one RCU
/// grace period for all, where deleting one by one costs one each).
pub fn del_link_group(group: u32) -> RouteNetlinkMessage {
    let mut m = link(0);
    m.attributes.push(LinkAttribute::Group(group));
    RouteNetlinkMessage::DelLink(m)
}

/// `ip link show` (as a dump request).
pub fn get_links() -> RouteNetlinkMessage {
    RouteNetlinkMessage::GetLink(LinkMessage::default())
}

/// `ip addr add <addr>/<prefix_len> dev <index>`.
pub fn new_address(index: u32, addr: Ipv4Addr, prefix_len: u8) -> RouteNetlinkMessage {
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.prefix_len = prefix_len;
    m.header.index = index;
    m.attributes.push(AddressAttribute::Local(IpAddr::V4(addr)));
    m.attributes
        .push(AddressAttribute::Address(IpAddr::V4(addr)));
    RouteNetlinkMessage::NewAddress(m)
}

/// `ip route add <dest>/<len> via <gateway> dev <index>`.
pub fn new_route_via(
    dest: Ipv4Addr,
    len: u8,
    gateway: Ipv4Addr,
    index: u32,
) -> RouteNetlinkMessage {
    new_route(dest, len, Some(gateway), index)
}

/// `ip route add <dest>/<len> dev <index>`: reached on the device itself, no gateway.
pub fn new_device_route(dest: Ipv4Addr, len: u8, index: u32) -> RouteNetlinkMessage {
    new_route(dest, len, None, index)
}

/// A static route out of device `index`, through `gateway` (scope universe) or on the
/// device itself (scope link); a prefix length of 0 is the default route.
fn new_route(
    dest: Ipv4Addr,
    len: u8,
    gateway: Option<Ipv4Addr>,
    index: u32,
) -> RouteNetlinkMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    m.header.destination_prefix_length = len;
    m.header.table = libc::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Static;
    m.header.scope = if gateway.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    m.header.kind = RouteType::Unicast;
    if len > 0 {
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(dest)));
    }
    if let Some(gateway) = gateway {
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
    }
    m.attributes.push(RouteAttribute::Oif(index));
    RouteNetlinkMessage::NewRoute(m)
}

/// `ip neigh add <addr> lladdr <mac> dev <index> nud permanent`: no ARP for this address.
pub fn new_permanent_neighbour(index: u32, addr: Ipv4Addr, mac: [u8; 6]) -> RouteNetlinkMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.kind = RouteType::Unicast;
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            addr,
        )));
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    RouteNetlinkMessage::NewNeighbour(m)
}

/// `ip link add <name> mtu <mtu> master <bridge> up type vxlan id <vni> local <local> dstport
/// <port> nolearning`: a tunnel port of a bridge. Remote MACs are learnt from frames that
/// arrive; unknown ones are flooded to every peer (see [`flood_to`]).
pub fn new_vxlan(
    name: &str,
    vni: u32,
    local: Ipv4Addr,
    port: u16,
    bridge_index: u32,
    mtu: u32,
) -> RouteNetlinkMessage {
    let mut m = link(0);
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    m.attributes.push(LinkAttribute::IfName(name.to_owned()));
    m.attributes.push(LinkAttribute::Mtu(mtu));
    m.attributes.push(LinkAttribute::Controller(bridge_index));
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Vxlan),
        LinkInfo::Data(InfoData::Vxlan(vec![
            InfoVxlan::Id(vni),
            InfoVxlan::Local(local),
            InfoVxlan::Port(port),
            InfoVxlan::Learning(true),
            InfoVxlan::Ttl(64),
        ])),
    ]));
    RouteNetlinkMessage::NewLink(m)
}

/// `bridge fdb append 00:00:00:00:00:00 dev <index> dst <peer> self permanent`: frames for
/// unknown or broadcast MACs go (also) to `peer`, a head-end replicated flood list.
pub fn flood_to(index: u32, peer: Ipv4Addr) -> RouteNetlinkMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.flags = netlink_packet_route::neighbour::NeighbourFlags::Own;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(vec![0; 6]));
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            peer,
        )));
    RouteNetlinkMessage::NewNeighbour(m)
}

/// The name and index of a link in a dump answer.
pub fn link_name(m: &RouteNetlinkMessage) -> Option<(&str, u32, u32)> {
    let RouteNetlinkMessage::NewLink(l) = m else {
        return None;
    };
    let mut name = None;
    let mut group = 0;
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => name = Some(n.as_str()),
            LinkAttribute::Group(g) => group = *g,
            _ => {}
        }
    }
    name.map(|n| (n, l.header.index, group))
}
