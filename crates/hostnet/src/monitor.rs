//! Waiting for links to disappear by listening to the kernel's link events (`ip monitor link`),
//! not by polling: namespace destruction is asynchronous, and this is how teardown and cleanup
//! know it has finished.

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, State};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use nix::sys::socket::sockopt::{RcvBufForce, ReceiveTimeout};
use nix::sys::time::TimeVal;

use crate::msg;
use crate::rtnl::Rtnl;

const RTMGRP_LINK: u32 = 1;
/// Room for the events of thousands of deletions arriving in one burst.
const EVENT_BUF: usize = 32 << 20;

pub struct LinkMonitor {
    socket: Socket,
    buf: Vec<u8>,
}

impl LinkMonitor {
    /// Subscribes to link events in the calling thread's namespace.
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind(&SocketAddr::new(0, RTMGRP_LINK))?;
        // Forcing the size needs CAP_NET_ADMIN; without it the default buffer still works,
        // with a re-dump after an overflow.
        if nix::sys::socket::setsockopt(&socket, RcvBufForce, &EVENT_BUF).is_err() {
            socket.set_rx_buf_sz(EVENT_BUF)?;
        }
        Ok(LinkMonitor {
            socket,
            buf: vec![0; 1 << 16],
        })
    }

    /// The links present now whose name passes `keep`: name → ifindex.
    pub fn present(&self, keep: impl Fn(&str) -> bool) -> io::Result<HashMap<String, u32>> {
        let mut rtnl: Rtnl<()> = Rtnl::open()?;
        let links = rtnl.dump(msg::get_links())?;
        Ok(links
            .iter()
            .filter_map(msg::link_name)
            .filter(|(name, _, _)| keep(name))
            .map(|(name, index, _)| (name.to_owned(), index))
            .collect())
    }

    /// Calls `f(name, oper_up)` for every link change, blocking, until `f` returns false. The
    /// kernel announces a bridge port's operstate UP after the bridge has enabled it, so a
    /// port reported up forwards.
    pub fn watch(&mut self, mut f: impl FnMut(&str, bool) -> bool) -> io::Result<()> {
        nix::sys::socket::setsockopt(&self.socket, ReceiveTimeout, &TimeVal::new(0, 0))?;
        loop {
            let n = match self.socket.recv(&mut &mut self.buf[..], 0) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    // Events were lost: report every link as it is now, then go on.
                    let mut rtnl: Rtnl<()> = Rtnl::open()?;
                    for m in rtnl.dump(msg::get_links())? {
                        if let RouteNetlinkMessage::NewLink(link) = &m
                            && !report(link, &mut f)
                        {
                            return Ok(());
                        }
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            for m in messages(&self.buf[..n]) {
                if let RouteNetlinkMessage::NewLink(link) = &m
                    && !report(link, &mut f)
                {
                    return Ok(());
                }
            }
        }
    }

    /// Waits until every link in `waiting` has been deleted, or until none of them has gone for
    /// `idle` (the kernel destroys namespaces in batches; a quiet spell that long means the rest
    /// are held by someone). Returns the links still present.
    pub fn wait_gone(
        &mut self,
        mut waiting: HashMap<String, u32>,
        idle: Duration,
    ) -> io::Result<Vec<(String, u32)>> {
        let mut deadline = Instant::now() + idle;
        while !waiting.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let timeout = TimeVal::new(left.as_secs() as i64, left.subsec_micros().max(1) as i64);
            nix::sys::socket::setsockopt(&self.socket, ReceiveTimeout, &timeout)?;
            let n = match self.socket.recv(&mut &mut self.buf[..], 0) {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    // Events were lost: look again at what is still there.
                    let still = self.present(|name| waiting.contains_key(name))?;
                    waiting.retain(|name, _| still.contains_key(name));
                    continue;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            for m in messages(&self.buf[..n]) {
                if let RouteNetlinkMessage::DelLink(link) = m
                    && let Some((name, _, _)) = msg::link_name(&RouteNetlinkMessage::NewLink(link))
                    && waiting.remove(name).is_some()
                {
                    deadline = Instant::now() + idle;
                }
            }
        }
        Ok(waiting.into_iter().collect())
    }
}

/// Calls `f(name, oper_up)` for one link; returns what `f` says.
fn report(
    link: &netlink_packet_route::link::LinkMessage,
    f: &mut impl FnMut(&str, bool) -> bool,
) -> bool {
    let up = link
        .attributes
        .iter()
        .any(|a| matches!(a, LinkAttribute::OperState(State::Up)));
    let name = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    });
    name.is_none_or(|name| f(name, up))
}

/// The rtnetlink messages in a buffer read from a netlink socket.
fn messages(buf: &[u8]) -> impl Iterator<Item = RouteNetlinkMessage> + '_ {
    let mut offset = 0;
    std::iter::from_fn(move || {
        while offset < buf.len() {
            let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[offset..]).ok()?;
            offset += (m.header.length as usize + 3) & !3;
            if let NetlinkPayload::InnerMessage(inner) = m.payload {
                return Some(inner);
            }
        }
        None
    })
}
