//! Sockets and TUN devices inside node namespaces, made by one thread that enters each
//! namespace in turn.
//!
//! A socket or TUN device belongs to the network namespace of the thread that creates it, for
//! its whole life; connecting, binding and I/O can then happen anywhere. So one thread does
//! `setns` + the creating call (a few microseconds) on request and hands the result to tokio:
//! no thread or process per node, no `ip netns exec`.

use hostnet::rtnl::Mode;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use hostnet::netns::NsHandle;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::sync::{mpsc, oneshot};

type Job = Box<dyn FnOnce() + Send>;

/// Makes things inside node namespaces. Cheap to clone.
#[derive(Clone)]
pub struct SocketFactory {
    tx: mpsc::UnboundedSender<Job>,
}

impl SocketFactory {
    /// Starts the factory thread. It ends when every clone is dropped.
    pub fn start() -> io::Result<Self> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        std::thread::Builder::new()
            .name("nm-sockets".into())
            .spawn(move || {
                while let Some(job) = rx.blocking_recv() {
                    job();
                }
            })?;
        Ok(SocketFactory { tx })
    }

    /// Runs `make` on the factory thread inside `netns`.
    pub async fn run_in<T: Send + 'static>(
        &self,
        netns: NsHandle,
        make: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = reply.send(netns.enter().and_then(|()| make()));
        });
        self.tx
            .send(job)
            .map_err(|_| io::Error::other("socket factory stopped"))?;
        rx.await
            .map_err(|_| io::Error::other("socket factory stopped"))?
    }

    /// Connects a TCP stream from inside the namespace `netns`.
    pub async fn connect(
        &self,
        netns: NsHandle,
        to: SocketAddrV4,
    ) -> io::Result<tokio::net::TcpStream> {
        let socket = self.run_in(netns, stream_socket).await?;
        let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
        let stream = socket.connect(SocketAddr::V4(to)).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// A listener inside `netns`, bound to `addr`.
    pub async fn listen(
        &self,
        netns: NsHandle,
        addr: SocketAddrV4,
    ) -> io::Result<tokio::net::TcpListener> {
        let socket = self
            .run_in(netns, move || {
                let socket = stream_socket()?;
                socket.set_reuse_address(true)?;
                socket.bind(&SockAddr::from(addr))?;
                socket.listen(1024)?;
                Ok(socket)
            })
            .await?;
        tokio::net::TcpListener::from_std(socket.into())
    }

    /// A non-blocking UDP socket inside `netns`, bound to `addr`, with `buffer` bytes each way
    /// asked for (the kernel caps them at its maximum; best effort). `reuse`: SO_REUSEADDR.
    pub async fn udp(
        &self,
        netns: NsHandle,
        addr: SocketAddrV4,
        buffer: usize,
        reuse: bool,
    ) -> io::Result<std::net::UdpSocket> {
        let socket = self
            .run_in(netns, move || {
                let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
                if reuse {
                    s.set_reuse_address(true)?;
                }
                let _ = s.set_recv_buffer_size(buffer);
                let _ = s.set_send_buffer_size(buffer);
                s.set_nonblocking(true)?;
                s.bind(&SockAddr::from(addr))?;
                Ok(s)
            })
            .await?;
        Ok(socket.into())
    }

    /// The node's TUN device `tun0`, up, with `addr/prefix_len` (which routes the overlay into
    /// it).
    pub async fn tun(
        &self,
        netns: NsHandle,
        addr: Ipv4Addr,
        prefix_len: u8,
        mtu: u16,
    ) -> io::Result<tun_rs::AsyncDevice> {
        let device = self
            .run_in(netns, move || {
                let device = tun_rs::DeviceBuilder::new()
                    .name(hostnet::plan::NODE_TUN_IFNAME)
                    .ipv4(addr, prefix_len, None)
                    .mtu(mtu)
                    // TSO segments and checksum offload: see `frame`.
                    .offload(true)
                    // Up only once its queue is set: replacing the queue of a running
                    // device stops and restarts it.
                    .enable(false)
                    .build_sync()?;
                // A device kept by the previous run is taken over as it is; it dies with its
                // descriptor again, as a new one would.
                unpersist(&device)?;
                let index = device.if_index()?;
                let mut rtnl = hostnet::rtnl::Rtnl::open()?;
                rtnl.queue(hostnet::msg::noqueue_root(index), Mode::Replace, ())?;
                rtnl.queue(hostnet::msg::link_up(index), Mode::Change, ())?;
                // Multicast leaves by the TUN device too (groups are routed in user space),
                // so programs need not name the device to send to a group.
                rtnl.queue(
                    hostnet::msg::new_device_route(Ipv4Addr::new(224, 0, 0, 0), 4, index),
                    Mode::Replace,
                    (),
                )?;
                rtnl.wait().map_err(|r| r.error)?;
                Ok(device)
            })
            .await?;
        tun_rs::AsyncDevice::new(device)
    }
}

fn stream_socket() -> io::Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// `TUNSETPERSIST 0`: the device goes when its last descriptor closes (a no-op for a new one).
fn unpersist(device: &tun_rs::SyncDevice) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // _IOW('T', 203, int)
    const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
    // SAFETY: an ioctl on the device's own descriptor with an integer argument.
    let r = unsafe { libc::ioctl(device.as_raw_fd(), TUNSETPERSIST as _, 0 as libc::c_ulong) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
