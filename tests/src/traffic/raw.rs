//! Raw Ethernet frames out of one interface: an AF_PACKET socket bound to it, sending
//! prepared frames in batches with `sendmmsg`. The frames go out exactly as given (MACs,
//! checksums and all), through the interface's driver as if the host's stack had built
//! them; nothing is received on the socket.

use std::io;
use std::mem::zeroed;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::sockets::{check, new_socket, set_int_option, socklen};

/// Frames handed to the kernel per `sendmmsg` call: also how often the deadline is read.
const BATCH: usize = 256;

/// Whether frames pass through the interface's queueing discipline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qdisc {
    /// Straight to the driver (`PACKET_QDISC_BYPASS`), on the transmit queue of the sending
    /// CPU: the fastest path. A frame the driver cannot take at once is lost (and counted
    /// by the interface as a transmit drop), not queued.
    Bypass,
    /// Through the queueing discipline, like the host's own packets (and seen by `tc`).
    Use,
}

/// An AF_PACKET raw socket bound to one interface of the network namespace of the thread
/// that opened it. It may be used from any thread afterwards.
#[derive(Debug)]
pub struct RawSender {
    socket: OwnedFd,
}

impl RawSender {
    /// Opens a socket that sends out of `iface`, an interface of the calling thread's
    /// namespace (call it inside [`crate::netns::in_netns`]).
    pub fn open(iface: &str, qdisc: Qdisc) -> Result<Self> {
        let index = ifindex(iface)?;
        // Protocol 0: the socket receives nothing, so the interface's traffic is not
        // copied to it.
        let socket =
            new_socket(libc::AF_PACKET, libc::SOCK_RAW).context("open an AF_PACKET raw socket")?;
        if qdisc == Qdisc::Bypass {
            set_int_option(&socket, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1)
                .context("set PACKET_QDISC_BYPASS")?;
        }
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut address: libc::sockaddr_ll = unsafe { zeroed() };
        address.sll_family = libc::AF_PACKET as libc::c_ushort;
        address.sll_ifindex = index;
        // SAFETY: `address` is a valid sockaddr_ll of the stated length.
        check(unsafe {
            libc::bind(
                socket.as_raw_fd(),
                ptr::from_ref(&address).cast(),
                socklen::<libc::sockaddr_ll>(),
            )
        })
        .with_context(|| format!("bind an AF_PACKET socket to {iface}"))?;
        Ok(Self { socket })
    }

    /// Sends `frames` once, in order; returns how many the kernel took. A frame the
    /// interface had no room for (`ENOBUFS`) is skipped.
    pub fn send(&self, frames: &[impl AsRef<[u8]>]) -> Result<u64> {
        self.send_until(frames, 1, None)
    }

    /// Sends `frames` in order, `times` times over or until `deadline` (read between
    /// batches of [`BATCH`] frames), whichever comes first; returns how many frames the
    /// kernel took. A frame the interface had no room for (`ENOBUFS`) is skipped; any other
    /// error ends the sending.
    pub fn send_until(
        &self,
        frames: &[impl AsRef<[u8]>],
        times: u64,
        deadline: Option<Instant>,
    ) -> Result<u64> {
        if frames.is_empty() {
            return Ok(0);
        }
        let mut iovecs: Vec<libc::iovec> = frames
            .iter()
            .map(|frame| libc::iovec {
                iov_base: frame.as_ref().as_ptr().cast_mut().cast(),
                iov_len: frame.as_ref().len(),
            })
            .collect();
        let mut messages: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .map(|iovec| {
                // SAFETY: all-zero is a valid mmsghdr: no address, no control data.
                let mut message: libc::mmsghdr = unsafe { zeroed() };
                message.msg_hdr.msg_iov = iovec;
                message.msg_hdr.msg_iovlen = 1;
                message
            })
            .collect();
        let mut sent = 0u64;
        for _ in 0..times {
            let mut next = 0;
            while next < messages.len() {
                if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                    return Ok(sent);
                }
                let batch = &mut messages[next..(next + BATCH).min(frames.len())];
                match self.send_batch(batch) {
                    Ok(0) => bail!("sendmmsg on an AF_PACKET socket took no frame"),
                    Ok(taken) => {
                        sent += taken as u64;
                        next += taken;
                    }
                    // The driver's queue was full: that frame is lost, go on with the next.
                    Err(error) if error.raw_os_error() == Some(libc::ENOBUFS) => next += 1,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => return Err(error).context("sendmmsg on an AF_PACKET socket"),
                }
            }
        }
        Ok(sent)
    }

    /// One `sendmmsg` call over `batch`: how many frames the kernel took (at least one), or
    /// the error of the first frame.
    fn send_batch(&self, batch: &mut [libc::mmsghdr]) -> io::Result<usize> {
        let length = u32::try_from(batch.len()).expect("batch of at most BATCH messages");
        // SAFETY: `batch` holds `length` initialised mmsghdrs, each pointing at one live
        // iovec that points at a live frame (`send_until` keeps frames and iovecs borrowed
        // for as long as the messages exist); the kernel only reads them and writes the
        // `msg_len` fields.
        let taken =
            unsafe { libc::sendmmsg(self.socket.as_raw_fd(), batch.as_mut_ptr(), length, 0) };
        check(taken)?;
        Ok(usize::try_from(taken).expect("non-negative after check"))
    }
}

/// Index of interface `name` in the calling thread's namespace.
fn ifindex(name: &str) -> Result<i32> {
    let c_name = std::ffi::CString::new(name)?;
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        bail!("no interface {name}");
    }
    Ok(i32::try_from(index)?)
}
