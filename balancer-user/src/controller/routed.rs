//! Routed backends (a service forwarding by ipip, gue or nat): they are not looked for on
//! L2 — no neighbour entry, a gateway is fine — but need a route. A tunnelled backend also
//! needs an outer source (the service's, or the one the kernel prefers for the route); its
//! data-plane entry is a `TUNNELS` entry, a `nat` backend's a `REWRITES` entry (its address
//! and port), each written before the `BACKENDS` entry that names the mode. A `nat`
//! backend's replies are rewritten by its endpoint's `REPLIES` entry, written before any
//! table names the backend and removed once no backend of the state answers from it.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use balancer_common::{Backend, Endpoint, Reply, Rewrite, Tunnel, REPLY_FULLNAT};

use super::{BackendId, Controller};
use crate::{
    error::Error,
    neighbor::{NeighborError, NextHop},
    state::{Forward, Mode, State},
    vip::{addr_bytes, family},
};

/// Where a backend's packets go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Placement {
    /// To its MAC on a directly connected network (direct server return).
    Wire(NextHop),
    /// Through a tunnel of `mode` with this outer header.
    Tunnel(Mode, Tunnel),
    /// Rewritten to this address and port (`nat`; `fullnat`: from the pool it names too),
    /// routed.
    Nat(Mode, Rewrite),
}

impl Placement {
    /// The backend entry of a backend of `epoch` placed so (a routed one also needs its
    /// [`Tunnel`] or [`Rewrite`], written first).
    pub(super) fn entry(&self, epoch: u32) -> Backend {
        let routed = |mode: Mode| Backend {
            epoch,
            forward: mode.code(),
            ..Backend::default()
        };
        match self {
            Placement::Wire(hop) => super::neighbours::entry(hop, epoch),
            Placement::Tunnel(mode, _) => routed(*mode),
            Placement::Nat(mode, _) => routed(*mode),
        }
    }
}

/// The forwarding of every routed backend of `state` (serving or retired), by
/// (index, epoch).
pub(super) fn routed(state: &State) -> BTreeMap<BackendId, Forward> {
    state
        .services
        .values()
        .filter(|s| s.forward.mode.routed())
        .flat_map(|s| {
            let retired = s.retired.iter().map(|r| (r.index, r.epoch));
            s.backends()
                .map(|(_, b)| (b.index, b.epoch))
                .chain(retired)
                .map(|id| (id, s.forward))
        })
        .collect()
}

/// The reply entries `state` needs: for each backend (serving or retired) of a `nat` or
/// `fullnat` service, its endpoint → the service's VIP and the backend's index (and for
/// `fullnat`, that replies go to a pool port's client).
pub(super) fn replies(state: &State) -> HashMap<Endpoint, Reply> {
    state
        .services
        .values()
        .filter(|s| s.forward.mode.translated())
        .flat_map(|s| {
            let retired = s.retired.iter().map(|r| (r.addr, r.index));
            s.backends()
                .map(|(_, b)| (b.addr, b.index))
                .chain(retired)
                .map(|(addr, backend)| {
                    let reply = Reply {
                        vip: s.vip.key(),
                        backend,
                        flags: match s.forward.mode {
                            Mode::Fullnat => REPLY_FULLNAT,
                            _ => 0,
                        },
                    };
                    (s.endpoint(addr).key(), reply)
                })
        })
        .collect()
}

/// The outer header towards `dst` from `src` (of `dst`'s family: both are checked to be
/// the VIP's) for `forward`.
fn header(forward: &Forward, dst: IpAddr, src: IpAddr) -> Tunnel {
    Tunnel {
        dst: addr_bytes(dst),
        src: addr_bytes(src),
        family: family(dst),
        port_be: match forward.mode {
            Mode::Gue => forward.gue_port().to_be(),
            _ => 0,
        },
        ..Tunnel::default()
    }
}

/// The destination a translated backend's packets are rewritten to.
fn rewrite(to: &Destination) -> Rewrite {
    Rewrite {
        addr: addr_bytes(to.addr),
        port_be: to.port.to_be(),
        family: family(to.addr),
        ..Rewrite::default()
    }
}

/// A routed backend to place: its address, its service's forwarding, and the port it takes
/// the service's packets on.
#[derive(Clone, Copy, Debug)]
pub(super) struct Destination {
    pub(super) addr: IpAddr,
    pub(super) forward: Forward,
    pub(super) port: u16,
}

/// Routed placements: those found, and why each address without one has none.
pub(super) struct Placed {
    /// Placements by (index, epoch).
    pub(super) found: BTreeMap<BackendId, Placement>,
    /// Refusals by address.
    pub(super) failed: BTreeMap<IpAddr, NeighborError>,
}

impl Controller {
    /// The placements of routed `backends` ((index, epoch) → address, forwarding): a route
    /// to each is needed; a tunnel's outer source is the one the service gives or the
    /// kernel prefers. Reads the routing table as it stands (no wait).
    pub(super) fn place_routed(&self, backends: &BTreeMap<BackendId, Destination>) -> Placed {
        let addrs = super::distinct(backends.values().map(|d| &d.addr));
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
            .filter_map(|(id, to)| {
                let preferred = *sources.get(&to.addr)?;
                let placement = match to.forward.mode {
                    Mode::Nat => Placement::Nat(Mode::Nat, rewrite(to)),
                    Mode::Fullnat => {
                        let pool = to.forward.pool_ports();
                        Placement::Nat(
                            Mode::Fullnat,
                            Rewrite {
                                source: addr_bytes(to.forward.source.unwrap_or(preferred)),
                                ports: [pool.first, pool.last],
                                ..rewrite(to)
                            },
                        )
                    }
                    mode => {
                        let src = to.forward.source.unwrap_or(preferred);
                        Placement::Tunnel(mode, header(&to.forward, to.addr, src))
                    }
                };
                Some((*id, placement))
            })
            .collect();
        Placed { found, failed }
    }

    /// Writes a backend's entries: a routed one's tunnel or rewrite, then the backend
    /// entry that names the mode.
    pub(super) fn write_placement(
        &mut self,
        index: u32,
        epoch: u32,
        placement: &Placement,
        fresh: bool,
    ) -> Result<(), Error> {
        match placement {
            Placement::Tunnel(_, tunnel) => self.plane.set_tunnel(index, tunnel)?,
            Placement::Nat(_, rewrite) => self.plane.set_rewrite(index, rewrite)?,
            Placement::Wire(_) => {}
        }
        self.plane
            .set_backend(index, &placement.entry(epoch), fresh)?;
        Ok(())
    }

    /// Writes the reply entries that `next` needs and the data plane lacks (before the
    /// tables that name new `nat` backends), or — `prune` — removes those it no longer needs
    /// (after no table names their backends).
    pub(super) fn sync_replies(&mut self, next: &State, prune: bool) -> Result<(), Error> {
        let wanted = replies(next);
        let present: HashMap<Endpoint, Reply> = self.plane.replies()?.into_iter().collect();
        if prune {
            for backend in present.keys().filter(|k| !wanted.contains_key(k)) {
                self.plane.remove_reply(backend)?;
            }
        } else {
            for (backend, reply) in &wanted {
                if present.get(backend) != Some(reply) {
                    self.plane.set_reply(backend, reply)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
