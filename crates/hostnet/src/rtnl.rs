//! A blocking, pipelined rtnetlink socket.
//!
//! Messages are built with `netlink-packet-route` and queued; [`Rtnl::flush`] sends everything
//! queued in one `send()`, and [`Rtnl::wait`] collects the acks. The kernel handles a request
//! inside the `send()` call, so a caller may rely on a queued object existing once `flush`
//! returns, and read the acks later: a node's in-namespace requests go out right behind its
//! veth request with no round trip in between.
//!
//! Each request carries a caller tag `T` (which node, which step), so an error names what
//! failed instead of "File exists".
//!
//! A socket belongs to the network namespace of the thread that opened it, for its whole life.

use std::collections::VecDeque;
use std::io;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
    NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// Requests in flight before [`Rtnl::flush`] waits for acks: bounds the acks queued on the
/// socket so none is dropped for want of buffer space.
const MAX_IN_FLIGHT: usize = 256;
/// Receive buffer for acks and dumps.
const RECV_BUF: usize = 1 << 20;

/// How a request treats an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Create; fail with EEXIST if it exists (`ip link add`).
    Create,
    /// Change an existing object (`ip link set`).
    Change,
    /// Delete (`ip link del`).
    Delete,
    /// Add another entry under the same key (`bridge fdb append`).
    Append,
    /// Create, or replace what is there (`ip neigh replace`).
    Replace,
}

impl Mode {
    fn flags(self) -> u16 {
        match self {
            Mode::Create => NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            Mode::Change | Mode::Delete => NLM_F_REQUEST | NLM_F_ACK,
            Mode::Append => NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND,
            Mode::Replace => NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        }
    }
}

/// A request the kernel refused, with the caller's tag.
#[derive(Debug)]
pub struct Refused<T> {
    pub tag: T,
    pub error: io::Error,
}

pub struct Rtnl<T> {
    socket: Socket,
    next_seq: u32,
    out: Vec<u8>,
    queued: usize,
    /// Sequence numbers sent and not yet acked, oldest first, with their tags.
    in_flight: VecDeque<(u32, T)>,
    first_error: Option<Refused<T>>,
    recv: Vec<u8>,
}

impl<T> Rtnl<T> {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind(&SocketAddr::new(0, 0))?;
        socket.set_rx_buf_sz(RECV_BUF)?;
        // Errors carry the kernel's reason text where it gives one; ignore old kernels.
        let _ = socket.set_ext_ack(true);
        Ok(Rtnl {
            socket,
            next_seq: 1,
            out: Vec::with_capacity(16 * 1024),
            queued: 0,
            in_flight: VecDeque::new(),
            first_error: None,
            recv: vec![0; 64 * 1024],
        })
    }

    /// Queues a request; sent by the next [`flush`](Self::flush).
    pub fn queue(&mut self, message: RouteNetlinkMessage, mode: Mode, tag: T) -> io::Result<()> {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = mode.flags();
        header.sequence_number = seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(message));
        msg.finalize();
        let start = self.out.len();
        self.out.resize(start + msg.buffer_len(), 0);
        msg.serialize(&mut self.out[start..]);
        self.in_flight.push_back((seq, tag));
        self.queued += 1;
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            self.flush()?;
            self.drain(0)?;
        }
        Ok(())
    }

    /// Sends every queued request in one `send()`. The kernel has handled them when it returns.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let sent = self.socket.send(&self.out, 0)?;
        if sent != self.out.len() {
            return Err(io::Error::other("short netlink send"));
        }
        self.out.clear();
        self.queued = 0;
        Ok(())
    }

    /// Flushes, then waits for every ack. Returns the first refusal since the last `wait`.
    pub fn wait(&mut self) -> Result<(), Refused<T>>
    where
        T: Clone,
    {
        let io_result = self.flush().and_then(|()| self.drain(0));
        if let Some(refused) = self.first_error.take() {
            return Err(refused);
        }
        io_result.map_err(|error| Refused {
            tag: self
                .in_flight
                .front()
                .map(|(_, t)| t.clone())
                .expect("an I/O error leaves requests in flight"),
            error,
        })
    }

    /// One request, sent and acked.
    pub fn request(
        &mut self,
        message: RouteNetlinkMessage,
        mode: Mode,
        tag: T,
    ) -> Result<(), Refused<T>>
    where
        T: Clone,
    {
        if let Err(error) = self.queue(message, mode, tag.clone()) {
            return Err(Refused { tag, error });
        }
        self.wait()
    }

    /// Receives acks until at most `keep` requests remain in flight.
    fn drain(&mut self, keep: usize) -> io::Result<()> {
        while self.in_flight.len() > keep {
            let n = self.socket.recv(&mut &mut self.recv[..], 0)?;
            let mut offset = 0;
            while offset < n {
                let (len, seq, error) = parse_ack(&self.recv[offset..n])?;
                offset += len;
                let Some(pos) = self.in_flight.iter().position(|(s, _)| *s == seq) else {
                    continue; // not ours (a late answer after an I/O error)
                };
                let (_, tag) = self.in_flight.remove(pos).expect("position is valid");
                if let Some(error) = error
                    && self.first_error.is_none()
                {
                    self.first_error = Some(Refused { tag, error });
                }
            }
        }
        Ok(())
    }

    /// Sends a dump request and returns every message of the answer.
    pub fn dump(&mut self, message: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        assert!(
            self.in_flight.is_empty() && self.out.is_empty(),
            "dump with requests in flight"
        );
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(message));
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let mut result = Vec::new();
        loop {
            let n = self.socket.recv(&mut &mut self.recv[..], 0)?;
            let mut offset = 0;
            while offset < n {
                let parsed =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.recv[offset..n])
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                offset += parsed.header.length as usize;
                if parsed.header.sequence_number != seq {
                    continue;
                }
                match parsed.payload {
                    NetlinkPayload::Done(_) => return Ok(result),
                    NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                    NetlinkPayload::InnerMessage(m) => result.push(m),
                    _ => {}
                }
            }
        }
    }
}

/// Parses one ack: (length, sequence number, error if any).
fn parse_ack(buf: &[u8]) -> io::Result<(usize, u32, Option<io::Error>)> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("netlink: {what}"));
    if buf.len() < 16 {
        return Err(bad("truncated header"));
    }
    let len = u32::from_ne_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    let kind = u16::from_ne_bytes(buf[4..6].try_into().expect("2 bytes"));
    let seq = u32::from_ne_bytes(buf[8..12].try_into().expect("4 bytes"));
    if len < 16 || len > buf.len() {
        return Err(bad("bad message length"));
    }
    let aligned = (len + 3) & !3;
    const NLMSG_ERROR: u16 = 2;
    if kind != NLMSG_ERROR {
        return Ok((aligned.min(buf.len()), seq, None));
    }
    if len < 20 {
        return Err(bad("truncated error"));
    }
    let code = i32::from_ne_bytes(buf[16..20].try_into().expect("4 bytes"));
    let error = (code != 0).then(|| {
        let os = io::Error::from_raw_os_error(-code);
        match ext_ack_message(&buf[..len]) {
            Some(text) => io::Error::new(os.kind(), format!("{os}: {text}")),
            None => os,
        }
    });
    Ok((aligned.min(buf.len()), seq, error))
}

/// The kernel's extended-ack text (NLMSGERR_ATTR_MSG), if the error carries one.
fn ext_ack_message(msg: &[u8]) -> Option<String> {
    const NLM_F_CAPPED: u16 = 0x100;
    const NLM_F_ACK_TLVS: u16 = 0x200;
    const NLMSGERR_ATTR_MSG: u16 = 1;
    let flags = u16::from_ne_bytes(msg[6..8].try_into().ok()?);
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    // nlmsghdr (16) + error code (4) + the offending request's header, or all of it.
    let echoed = u32::from_ne_bytes(msg[20..24].try_into().ok()?) as usize;
    let mut off = 20
        + if flags & NLM_F_CAPPED != 0 {
            16
        } else {
            echoed
        };
    off = (off + 3) & !3;
    while off + 4 <= msg.len() {
        let alen = u16::from_ne_bytes(msg[off..off + 2].try_into().ok()?) as usize;
        let atype = u16::from_ne_bytes(msg[off + 2..off + 4].try_into().ok()?);
        if alen < 4 || off + alen > msg.len() {
            return None;
        }
        if atype == NLMSGERR_ATTR_MSG {
            let text = &msg[off + 4..off + alen];
            let text = text.split(|b| *b == 0).next()?;
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        off += (alen + 3) & !3;
    }
    None
}
