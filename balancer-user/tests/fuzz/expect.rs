//! What the model expects the program to send for one frame of a routed mode (or a reply,
//! or an ICMP error about a translated flow), and the check of a run against it: the
//! action, every byte but the incrementally updated checksums, and those by recomputation
//! ([`checksums`](super::checksums)); and the counters it adds to.

use std::net::IpAddr;

use balancer_user::dataplane::{GlobalCounters, TestRun};

use crate::{action_name, checksums::Sum};

/// One of the routed modes' counters (`TUNNEL_STATS`, `NAT_STATS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    /// Encapsulated, to the kernel: no neighbour entry for the next hop.
    TunnelUnresolved,
    /// Not encapsulated: no route to the backend.
    TunnelUnroutable,
    /// Too big for the route once encapsulated: answered (or dropped without DF).
    TunnelTooBig,
    /// Rewritten, to the kernel: no neighbour entry, or a reply longer than the route's MTU.
    NatUnresolved,
    /// A client's packet too big for the route to its backend: answered (or dropped
    /// without DF), not rewritten.
    NatTooBig,
    /// Not rewritten: no route to the backend or the client.
    NatUnroutable,
    /// A backend's reply rewritten.
    NatReply,
    /// An ICMP error about a translated flow rewritten.
    NatError,
}

impl Count {
    /// `counters` with one more under this counter.
    pub fn plus_one(self, mut counters: GlobalCounters) -> GlobalCounters {
        let field = match self {
            Count::TunnelUnresolved => &mut counters.tunnel.unresolved,
            Count::TunnelUnroutable => &mut counters.tunnel.unroutable,
            Count::TunnelTooBig => &mut counters.tunnel.too_big,
            Count::NatUnresolved => &mut counters.nat.unresolved,
            Count::NatUnroutable => &mut counters.nat.unroutable,
            Count::NatTooBig => &mut counters.nat.too_big,
            Count::NatReply => &mut counters.nat.replies,
            Count::NatError => &mut counters.nat.errors,
        };
        *field += 1;
        counters
    }
}

/// What the program must do with a frame.
#[derive(Clone, Debug)]
pub struct Expect {
    /// The path, for the run's tally (e.g. "gue: too big").
    pub path: String,
    /// The XDP action.
    pub action: u32,
    /// The frame it leaves, checksum fields of `sums` aside.
    pub frame: Vec<u8>,
    /// The checksums updated incrementally, checked by what they sum to.
    pub sums: Vec<Sum>,
    /// The counters it adds to.
    pub counts: Vec<Count>,
}

impl Expect {
    /// The frame left untouched with `action`.
    pub fn untouched(path: String, action: u32, frame: &[u8], counts: Vec<Count>) -> Self {
        Self {
            path,
            action,
            frame: frame.to_vec(),
            sums: Vec::new(),
            counts,
        }
    }

    /// Whether `run` did this to `sent`; what differs first if not.
    pub fn check(&self, sent: &[u8], run: &TestRun) -> Result<(), String> {
        let path = &self.path;
        if run.action != self.action {
            return Err(format!(
                "{path}: XDP action {} where the model says {}",
                action_name(run.action),
                action_name(self.action)
            ));
        }
        if run.packet.len() != self.frame.len() {
            return Err(format!(
                "{path}: {} bytes where the model says {}; expected {}",
                run.packet.len(),
                self.frame.len(),
                crate::hex(&self.frame)
            ));
        }
        let mut want = self.frame.clone();
        for sum in &self.sums {
            if let (Some(w), Some(got)) = (
                want.get_mut(sum.field..sum.field + 2),
                run.packet.get(sum.field..sum.field + 2),
            ) {
                w.copy_from_slice(got);
            }
        }
        if let Some(at) = (0..want.len()).find(|&i| want[i] != run.packet[i]) {
            return Err(format!(
                "{path}: byte {at} is {:#04x} where the model says {:#04x}; expected {}",
                run.packet[at],
                want[at],
                crate::hex(&self.frame)
            ));
        }
        for sum in &self.sums {
            sum.check(sent, &run.packet)
                .map_err(|what| format!("{path}: {what}"))?;
        }
        Ok(())
    }
}

/// The bytes of an address (4 or 16).
pub fn octets(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// Writes `addr` at `at`.
pub fn put_addr(frame: &mut [u8], at: usize, addr: IpAddr) {
    let bytes = octets(addr);
    frame[at..at + bytes.len()].copy_from_slice(&bytes);
}

/// Writes `port` (big-endian) at `at`.
pub fn put_port(frame: &mut [u8], at: usize, port: u16) {
    frame[at..at + 2].copy_from_slice(&port.to_be_bytes());
}

/// The address of `v6`'s family at `at`, if the frame holds it.
pub fn addr_at(frame: &[u8], at: usize, v6: bool) -> Option<IpAddr> {
    if v6 {
        let bytes: [u8; 16] = frame.get(at..at + 16)?.try_into().ok()?;
        Some(IpAddr::from(bytes))
    } else {
        let bytes: [u8; 4] = frame.get(at..at + 4)?.try_into().ok()?;
        Some(IpAddr::from(bytes))
    }
}

/// The big-endian u16 at `at`, if the frame holds it.
pub fn u16_at(frame: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]))
}
