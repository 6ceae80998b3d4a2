//! Tunnelled backends (a service forwarding by ipip or gue): they are not looked for on
//! L2 — no neighbour entry, a gateway is fine — but need a route, and an outer source (the
//! service's, or the one the kernel prefers for the route). Their data-plane entry is a
//! `TUNNELS` entry, written before the `BACKENDS` entry that names the mode.

use std::{collections::BTreeMap, net::IpAddr};

use balancer_common::{Backend, Tunnel, FAMILY_V4, FAMILY_V6};

use super::{BackendId, Controller};
use crate::{
    error::Error,
    neighbor::{NeighborError, NextHop},
    state::{Forward, Mode, State},
};

/// Where a backend's packets go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Placement {
    /// To its MAC on a directly connected network (direct server return).
    Wire(NextHop),
    /// Through a tunnel of `mode` with this outer header.
    Tunnel(Mode, Tunnel),
}

impl Placement {
    /// The backend entry of a backend of `epoch` placed so (a tunnelled one also needs its
    /// [`Tunnel`], written first).
    pub(super) fn entry(&self, epoch: u32) -> Backend {
        match self {
            Placement::Wire(hop) => super::neighbours::entry(hop, epoch),
            Placement::Tunnel(mode, _) => Backend {
                epoch,
                forward: mode.code(),
                ..Backend::default()
            },
        }
    }
}

/// The forwarding of every tunnelled backend of `state` (serving or retired), by
/// (index, epoch).
pub(super) fn tunnelled(state: &State) -> BTreeMap<BackendId, Forward> {
    state
        .services
        .values()
        .filter(|s| s.forward.mode.tunnelled())
        .flat_map(|s| {
            let retired = s.retired.iter().map(|r| (r.index, r.epoch));
            s.backends()
                .map(|(_, b)| (b.index, b.epoch))
                .chain(retired)
                .map(|id| (id, s.forward))
        })
        .collect()
}

/// The outer header towards `dst` from `src` (of `dst`'s family: both are checked to be
/// the VIP's) for `forward`.
fn header(forward: &Forward, dst: IpAddr, src: IpAddr) -> Tunnel {
    Tunnel {
        dst: octets(dst),
        src: octets(src),
        family: if dst.is_ipv4() { FAMILY_V4 } else { FAMILY_V6 },
        port_be: match forward.mode {
            Mode::Gue => forward.gue_port().to_be(),
            _ => 0,
        },
        ..Tunnel::default()
    }
}

/// An address as the data plane keeps it: IPv4 in the first four bytes.
fn octets(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => {
            let mut bytes = [0; 16];
            bytes[..4].copy_from_slice(&a.octets());
            bytes
        }
        IpAddr::V6(a) => a.octets(),
    }
}

/// Tunnel placements: those found, and why each address without one has none.
pub(super) struct Placed {
    /// Placements by (index, epoch).
    pub(super) found: BTreeMap<BackendId, Placement>,
    /// Refusals by address.
    pub(super) failed: BTreeMap<IpAddr, NeighborError>,
}

impl Controller {
    /// The tunnel placements of `backends` ((index, epoch) → address, forwarding): a route
    /// to each is needed, and the outer source the service gives or the kernel prefers.
    /// Reads the routing table as it stands (no wait).
    pub(super) fn place_tunnels(
        &self,
        backends: &BTreeMap<BackendId, (IpAddr, Forward)>,
    ) -> Placed {
        let addrs = super::distinct(backends.values().map(|(addr, _)| addr));
        let mut sources = BTreeMap::new();
        let mut failed = BTreeMap::new();
        for (addr, source) in addrs.iter().zip(self.neighbors.sources(&addrs)) {
            match source {
                Ok(source) => {
                    sources.insert(*addr, source);
                }
                Err(e) => {
                    failed.insert(*addr, e);
                }
            }
        }
        let found = backends
            .iter()
            .filter_map(|(id, (addr, forward))| {
                let preferred = *sources.get(addr)?;
                let src = forward.source.unwrap_or(preferred);
                let tunnel = header(forward, *addr, src);
                Some((*id, Placement::Tunnel(forward.mode, tunnel)))
            })
            .collect();
        Placed { found, failed }
    }

    /// Writes a tunnelled backend's entries: its outer header, then the backend entry that
    /// names the mode.
    pub(super) fn write_placement(
        &mut self,
        index: u32,
        epoch: u32,
        placement: &Placement,
        fresh: bool,
    ) -> Result<(), Error> {
        if let Placement::Tunnel(_, tunnel) = placement {
            self.plane.set_tunnel(index, tunnel)?;
        }
        self.plane
            .set_backend(index, &placement.entry(epoch), fresh)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
