//! The few socket operations std lacks: dual-stack listeners, binding a
//! client socket before connecting, and UDP replies sent from the address
//! a request was sent to.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::ptr;
use std::time::Duration;

/// Backlog of the listening sockets.
const LISTEN_BACKLOG: i32 = 128;

/// A TCP listener on `[::]:port` that also accepts IPv4 connections.
pub(crate) fn dual_stack_tcp_listener(port: u16) -> io::Result<TcpListener> {
    let socket = new_socket(libc::AF_INET6, libc::SOCK_STREAM)?;
    set_int_option(&socket, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    set_int_option(&socket, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0)?;
    bind(&socket, SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))?;
    // SAFETY: plain syscall on a valid socket.
    check(unsafe { libc::listen(socket.as_raw_fd(), LISTEN_BACKLOG) })?;
    Ok(TcpListener::from(socket))
}

/// A UDP socket on `[::]:port` that also receives IPv4, and reports each
/// datagram's destination address (see [`recv_with_destination`]).
pub(crate) fn dual_stack_udp_socket(port: u16) -> io::Result<UdpSocket> {
    let socket = new_socket(libc::AF_INET6, libc::SOCK_DGRAM)?;
    set_int_option(&socket, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0)?;
    set_int_option(&socket, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
    bind(&socket, SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))?;
    Ok(UdpSocket::from(socket))
}

/// Waits up to `timeout` for `socket` to become readable (for a listener:
/// to have a connection to accept); returns whether it did.
pub(crate) fn wait_readable(socket: &impl AsFd, timeout: Duration) -> io::Result<bool> {
    let mut poll_fd = libc::pollfd {
        fd: socket.as_fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `poll_fd` is one live pollfd.
    let ready = unsafe { libc::poll(&mut poll_fd, 1, timeout_ms) };
    check(ready)?;
    Ok(ready > 0)
}

/// Connects to `destination`, from `source` (port 0) if given, with
/// `timeout` on the connect and as read and write timeout of the stream.
pub(crate) fn connect_tcp(
    destination: SocketAddr,
    source: Option<std::net::IpAddr>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    connect_tcp_from(
        destination,
        source.map(|ip| SocketAddr::new(ip, 0)),
        timeout,
    )
}

/// Like [`connect_tcp`], bound to `source` (address and port) if given.
pub(crate) fn connect_tcp_from(
    destination: SocketAddr,
    source: Option<SocketAddr>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let domain = match destination {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    let stream = TcpStream::from(new_socket(domain, libc::SOCK_STREAM)?);
    // Linux bounds a blocking connect() by the send timeout.
    stream.set_write_timeout(Some(timeout))?;
    stream.set_read_timeout(Some(timeout))?;
    if let Some(source) = source {
        bind(&stream, source)?;
    }
    let (address, length) = to_raw(destination);
    // SAFETY: `address` is a valid sockaddr of `length` bytes.
    let rc = unsafe { libc::connect(stream.as_raw_fd(), ptr::from_ref(&address).cast(), length) };
    match check(rc) {
        Err(error) if error.raw_os_error() == Some(libc::EINPROGRESS) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connect timed out after {timeout:?}"),
        )),
        result => result.map(|()| stream),
    }
}

/// Where a datagram received by [`recv_with_destination`] came from and
/// went to (its payload is left in the caller's buffer).
pub(crate) struct Datagram {
    /// Sender (IPv4 senders as IPv4-mapped IPv6 addresses).
    pub(crate) peer: libc::sockaddr_in6,
    /// Address the datagram was sent to.
    pub(crate) destination: libc::in6_addr,
}

/// Receives one datagram on a [`dual_stack_udp_socket`] into `buffer`.
pub(crate) fn recv_with_destination(socket: &UdpSocket, buffer: &mut [u8]) -> io::Result<Datagram> {
    // SAFETY: all-zero is a valid value of these plain C structs.
    let mut peer: libc::sockaddr_in6 = unsafe { zeroed() };
    let mut control = ControlBuffer::new();
    let mut iov = libc::iovec {
        iov_base: buffer.as_mut_ptr().cast(),
        iov_len: buffer.len(),
    };
    // SAFETY: as above.
    let mut header: libc::msghdr = unsafe { zeroed() };
    header.msg_name = ptr::from_mut(&mut peer).cast();
    header.msg_namelen = socklen::<libc::sockaddr_in6>();
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    header.msg_control = control.bytes.as_mut_ptr().cast();
    header.msg_controllen = control.bytes.len() * size_of::<u64>();
    // SAFETY: every pointer in `header` refers to a live buffer of the
    // stated length.
    let received = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut header, 0) };
    usize::try_from(received).map_err(|_| io::Error::last_os_error())?;
    // SAFETY: the kernel filled `header`'s control buffer; the CMSG macros
    // walk it within `msg_controllen`.
    let destination = unsafe {
        let mut message = libc::CMSG_FIRSTHDR(&header);
        let mut destination = None;
        while !message.is_null() {
            if (*message).cmsg_level == libc::IPPROTO_IPV6
                && (*message).cmsg_type == libc::IPV6_PKTINFO
            {
                let info: libc::in6_pktinfo = ptr::read_unaligned(libc::CMSG_DATA(message).cast());
                destination = Some(info.ipi6_addr);
            }
            message = libc::CMSG_NXTHDR(&header, message);
        }
        destination
    };
    let destination =
        destination.ok_or_else(|| io::Error::other("datagram without IPV6_PKTINFO"))?;
    Ok(Datagram { peer, destination })
}

/// Sends `payload` back to `request`'s sender, from the address `request`
/// was sent to (a VIP, for direct server return), not the route's default.
pub(crate) fn reply_from_destination(
    socket: &UdpSocket,
    request: &Datagram,
    payload: &[u8],
) -> io::Result<()> {
    let mut peer = request.peer;
    let mut control = ControlBuffer::new();
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr().cast_mut().cast(),
        iov_len: payload.len(),
    };
    // SAFETY: all-zero is a valid msghdr.
    let mut header: libc::msghdr = unsafe { zeroed() };
    header.msg_name = ptr::from_mut(&mut peer).cast();
    header.msg_namelen = socklen::<libc::sockaddr_in6>();
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    header.msg_control = control.bytes.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure size computation.
    header.msg_controllen = unsafe { libc::CMSG_SPACE(socklen::<libc::in6_pktinfo>()) } as usize;
    let info = libc::in6_pktinfo {
        ipi6_addr: request.destination,
        ipi6_ifindex: 0,
    };
    // SAFETY: the control buffer is large enough for one in6_pktinfo
    // message (checked by `ControlBuffer`'s size), and every pointer in
    // `header` refers to a live buffer of the stated length.
    let sent = unsafe {
        let message = libc::CMSG_FIRSTHDR(&header);
        (*message).cmsg_level = libc::IPPROTO_IPV6;
        (*message).cmsg_type = libc::IPV6_PKTINFO;
        (*message).cmsg_len = libc::CMSG_LEN(socklen::<libc::in6_pktinfo>()) as usize;
        ptr::write_unaligned(libc::CMSG_DATA(message).cast(), info);
        libc::sendmsg(socket.as_raw_fd(), &header, 0)
    };
    usize::try_from(sent).map_err(|_| io::Error::last_os_error())?;
    Ok(())
}

/// An aligned buffer for control messages (room for a few in6_pktinfo).
struct ControlBuffer {
    bytes: [u64; 16],
}

impl ControlBuffer {
    fn new() -> Self {
        Self { bytes: [0; 16] }
    }
}

pub(super) fn new_socket(domain: i32, kind: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, 0) };
    check(fd)?;
    // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(super) fn set_int_option(
    socket: &impl AsFd,
    level: i32,
    name: i32,
    value: i32,
) -> io::Result<()> {
    // SAFETY: `value` is a live i32 of the stated length.
    check(unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            level,
            name,
            ptr::from_ref(&value).cast(),
            socklen::<i32>(),
        )
    })
}

fn bind(socket: &impl AsFd, address: SocketAddr) -> io::Result<()> {
    let (address, length) = to_raw(address);
    // SAFETY: `address` is a valid sockaddr of `length` bytes.
    check(unsafe {
        libc::bind(
            socket.as_fd().as_raw_fd(),
            ptr::from_ref(&address).cast(),
            length,
        )
    })
}

fn to_raw(address: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let length = match address {
        SocketAddr::V4(address) => {
            let raw = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: address.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*address.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { ptr::write(ptr::from_mut(&mut storage).cast(), raw) };
            socklen::<libc::sockaddr_in>()
        }
        SocketAddr::V6(address) => {
            let raw = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: address.port().to_be(),
                sin6_flowinfo: address.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: address.ip().octets(),
                },
                sin6_scope_id: address.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { ptr::write(ptr::from_mut(&mut storage).cast(), raw) };
            socklen::<libc::sockaddr_in6>()
        }
    };
    (storage, length)
}

pub(super) fn socklen<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(size_of::<T>()).expect("small C struct")
}

pub(super) fn check(rc: i32) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
