//! The UDP flood: prebuilt Ethernet frames (checksums complete) sent from the client's
//! `eth0` through AF_PACKET sockets that bypass the qdisc, in `sendmmsg` batches, one
//! thread per CPU, each cycling over its own share of the source ports. Bounded by time
//! and by count.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use balancer_tests::netns::in_netns;
use etherparse::PacketBuilder;

use super::{
    socket_option::set_option,
    topology::{CLIENT, CLIENT_MAC, CLIENT_NS, IFACE, LB_MAC, VIP},
};

/// UDP destination port of the flood; the backends' sink drops these datagrams.
pub const FLOOD_PORT: u16 = 9;
/// Distinct flows of the flood: source ports 10000 and up.
const FLOWS: u16 = 1024;
/// Frames per `sendmmsg` call.
const BATCH: usize = 64;
/// The most frames one thread sends per second of flood, a bound besides time.
const MAX_RATE_PER_THREAD: f64 = 50e6;

/// What one flood offered.
pub struct Offered {
    /// Frames the client's `eth0` accepted.
    pub packets: u64,
    /// How long the flood ran.
    pub seconds: f64,
}

/// Floods the VIP for `duration` from `threads` threads.
pub fn flood(threads: usize, duration: Duration) -> Result<Offered> {
    let frames = frames();
    let max_per_thread = (duration.as_secs_f64() * MAX_RATE_PER_THREAD) as u64;
    let start = Instant::now();
    let sent = in_netns(CLIENT_NS, || -> Result<u64> {
        let ifindex = ifindex(IFACE)?;
        let shares: Vec<&[Vec<u8>]> = frames.chunks(frames.len().div_ceil(threads)).collect();
        std::thread::scope(|scope| {
            let workers: Vec<_> = shares
                .into_iter()
                .enumerate()
                .map(|(cpu, share)| {
                    scope.spawn(move || {
                        pin_to_cpu(cpu);
                        let socket = packet_socket(ifindex)?;
                        send_until(&socket, share, start + duration, max_per_thread)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("generator thread panicked"))
                .sum::<Result<u64>>()
        })
    })??;
    Ok(Offered {
        packets: sent,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// One 60-byte frame per flow: client → VIP:[`FLOOD_PORT`], 18 bytes of payload.
fn frames() -> Vec<Vec<u8>> {
    (0..FLOWS)
        .map(|flow| {
            let mut frame = Vec::with_capacity(60);
            PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
                .ipv4(CLIENT.octets(), VIP.octets(), 64)
                .udp(10_000 + flow, FLOOD_PORT)
                .write(&mut frame, &[0u8; 18])
                .expect("frame");
            frame
        })
        .collect()
}

/// Sends `frames` over and over until `deadline` or `max` frames; returns how many the
/// interface accepted. A batch the interface refuses (queue full) is skipped.
fn send_until(socket: &OwnedFd, frames: &[Vec<u8>], deadline: Instant, max: u64) -> Result<u64> {
    let mut iovecs: Vec<libc::iovec> = frames
        .iter()
        .map(|f| libc::iovec {
            iov_base: f.as_ptr() as *mut libc::c_void,
            iov_len: f.len(),
        })
        .collect();
    // SAFETY: an all-zero mmsghdr is valid; each then points at one live iovec.
    let mut messages: Vec<libc::mmsghdr> = iovecs
        .iter_mut()
        .map(|iov| {
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let mut sent = 0u64;
    let mut next = 0;
    while sent < max && Instant::now() < deadline {
        let batch = BATCH.min(messages.len() - next);
        // SAFETY: `batch` messages from `next` are live, each pointing at a live frame.
        let rc = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                messages.as_mut_ptr().add(next),
                batch as u32,
                0,
            )
        };
        if rc >= 0 {
            sent += rc as u64;
        } else {
            let error = io::Error::last_os_error();
            if !matches!(error.raw_os_error(), Some(libc::ENOBUFS | libc::EAGAIN)) {
                return Err(error).context("sendmmsg on the AF_PACKET socket");
            }
        }
        next = (next + batch) % messages.len();
    }
    Ok(sent)
}

/// A send-only AF_PACKET socket bound to `ifindex`, bypassing the qdisc, with a send
/// timeout so a full queue cannot block past the deadline.
fn packet_socket(ifindex: i32) -> Result<OwnedFd> {
    // SAFETY: plain syscall; protocol 0 receives nothing.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error()).context("AF_PACKET socket");
    }
    // SAFETY: a fresh descriptor we own.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    set_option(&socket, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, &1i32)?;
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    set_option(&socket, libc::SOL_SOCKET, libc::SO_SNDTIMEO, &timeout)?;
    // SAFETY: an all-zero sockaddr_ll is valid; family and interface are filled in.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex;
    // SAFETY: `addr` is a live sockaddr_ll of the given size.
    let rc = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).context("bind the AF_PACKET socket");
    }
    Ok(socket)
}

/// Index of interface `name` in the calling thread's namespace.
fn ifindex(name: &str) -> Result<i32> {
    let c_name = std::ffi::CString::new(name)?;
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        bail!("no interface {name}");
    }
    Ok(index as i32)
}

/// Runs the calling thread on CPU `cpu` only (best effort: the flood runs anyway).
fn pin_to_cpu(cpu: usize) {
    // SAFETY: an all-zero cpu_set_t is the empty set; plain syscall on this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
