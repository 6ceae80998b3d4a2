//! Where a backend is on the wire — the interface that reaches it directly, that
//! interface's MAC and the backend's MAC — read from the kernel's routing, link and
//! neighbour tables over rtnetlink, and followed as those tables change.
//!
//! * [`locate`] reads the tables as they stand: no probe, no wait (fit to run under the
//!   controller's lock).
//! * [`resolve`] also probes the backends whose neighbour entry is missing (the
//!   [`nudge`](nudge::nudge), one ICMP echo) and waits for them, at most [`RESOLVE_TIMEOUT`].
//! * [`sources`] reads, for tunnelled backends, the source address the kernel prefers for
//!   the route to each (a gateway is fine: the outer packet is routed).
//! * [`watch::Watch`] subscribes to the kernel's neighbour, link and route changes;
//!   [`follow`] decides what a change means for a backend's data-plane entry.

use std::{io, net::IpAddr, time::Duration};

pub mod follow;
mod locate;
mod nudge;
mod parse;
pub(crate) mod rtnl;
mod source;
pub mod watch;

pub use locate::{locate, probe, resolve};
pub use source::sources;

/// How long [`resolve`] waits for the neighbours it probed.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where to send a backend's frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHop {
    /// Interface index towards the backend.
    pub ifindex: u32,
    /// MAC of that interface (new source MAC).
    pub src_mac: [u8; 6],
    /// MAC of the backend (new destination MAC).
    pub dst_mac: [u8; 6],
}

/// Why a backend could not be located.
#[derive(Debug, thiserror::Error)]
pub enum NeighborError {
    /// The backend is behind a router.
    #[error("backend {0} is reached through gateway {1}: L2 direct server return needs backends on a directly connected network")]
    Routed(IpAddr, String),
    /// No route.
    #[error("no route to backend {0}")]
    NoRoute(IpAddr),
    /// A tunnelled backend's route names no source address of this host.
    #[error("the route to backend {0} has no preferred source address: give the service a --tunnel-source")]
    NoSource(IpAddr),
    /// ARP/ND did not answer.
    #[error("backend {0} does not answer ARP/neighbour discovery on {1}")]
    Unresolved(IpAddr, String),
    /// The kernel's tables could not be read.
    #[error("reading the kernel's {what} over rtnetlink failed")]
    Netlink {
        /// Which table.
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl NeighborError {
    /// Whether the host failed (its tables could not be read), as opposed to the backend
    /// not being on a directly connected network.
    pub fn is_host_fault(&self) -> bool {
        matches!(self, Self::Netlink { .. })
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_macs() {
        assert_eq!(
            parse_mac("02:00:0a:ff:10:01"),
            Some([2, 0, 0x0a, 0xff, 0x10, 1])
        );
        assert_eq!(parse_mac("02:00:0a:ff:10"), None);
        assert_eq!(parse_mac("02:00:0a:ff:10:01:02"), None);
        assert_eq!(parse_mac("zz:00:0a:ff:10:01"), None);
    }

    #[test]
    fn formats_macs() {
        assert_eq!(
            format_mac(&[2, 0, 0x0a, 0xff, 0x10, 1]),
            "02:00:0a:ff:10:01"
        );
    }
}
