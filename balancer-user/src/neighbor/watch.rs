//! The kernel's notifications of neighbour, link and route changes (`RTNLGRP_NEIGH`,
//! `RTNLGRP_LINK`, `RTNLGRP_IPV4_ROUTE`, `RTNLGRP_IPV6_ROUTE`), read in batches.

use std::{
    io,
    net::IpAddr,
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};

use super::{
    follow::Sighting,
    parse::{self, Event},
};

/// Notifications that follow the first one within this time are read as one batch.
const GATHER: Duration = Duration::from_millis(20);

/// Size of one read: any notification fits.
const READ_BUFFER: usize = 64 * 1024;

/// What the socket may queue before the kernel drops notifications (then: a resync).
const SOCKET_BUFFER: libc::c_int = 1 << 20;

/// A subscription to the kernel's neighbour, link and route notifications.
pub struct Watch {
    socket: Socket,
    buffer: Vec<u8>,
}

/// What one batch of notifications says.
#[derive(Debug, Default)]
pub struct Batch {
    /// Neighbour entries that changed, in order.
    pub sightings: Vec<(IpAddr, Sighting)>,
    /// Links or routes changed, or notifications were lost: every backend may be
    /// elsewhere now.
    pub resync: bool,
}

impl Watch {
    /// Subscribes.
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        for group in [
            libc::RTNLGRP_NEIGH,
            libc::RTNLGRP_LINK,
            libc::RTNLGRP_IPV4_ROUTE,
            libc::RTNLGRP_IPV6_ROUTE,
        ] {
            socket.add_membership(group)?;
        }
        socket.set_rx_buf_sz(SOCKET_BUFFER)?;
        socket.set_non_blocking(true)?;
        Ok(Self {
            socket,
            buffer: vec![0; READ_BUFFER],
        })
    }

    /// Waits at most `timeout` for a notification, then reads it and those that follow
    /// within [`GATHER`]. An empty batch: nothing came.
    pub fn next(&mut self, timeout: Duration) -> io::Result<Batch> {
        let mut batch = Batch::default();
        if !self.readable(timeout)? {
            return Ok(batch);
        }
        let until = Instant::now() + GATHER;
        loop {
            match self.socket.recv(&mut &mut self.buffer[..], 0) {
                Ok(size) => read(&self.buffer[..size.min(READ_BUFFER)], &mut batch),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => batch.resync = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() || !self.readable(left)? {
                        return Ok(batch);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether a notification is there to read within `timeout`.
    fn readable(&self, timeout: Duration) -> io::Result<bool> {
        let mut fd = libc::pollfd {
            fd: self.socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd, and its count; the fd is the socket's, open while
        // `self` lives.
        let ready = unsafe { libc::poll(&mut fd, 1, ms) };
        match ready {
            n if n > 0 => Ok(true),
            0 => Ok(false),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }
}

/// Adds what the notifications in `datagram` say to `batch`.
fn read(mut datagram: &[u8], batch: &mut Batch) {
    while !datagram.is_empty() {
        let Ok(message) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(datagram) else {
            // A notification this crate cannot parse: look at everything again.
            batch.resync = true;
            return;
        };
        if let NetlinkPayload::InnerMessage(inner) = &message.payload {
            match parse::event(inner) {
                Some(Event::Sighting(addr, sighting)) => batch.sightings.push((addr, sighting)),
                Some(Event::Resync) => batch.resync = true,
                None => {}
            }
        }
        let length = (message.header.length as usize + 3) & !3;
        if length == 0 || length > datagram.len() {
            return;
        }
        datagram = &datagram[length..];
    }
}
