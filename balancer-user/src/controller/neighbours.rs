//! Following backends on the wire: the next hop the data plane has for each backend, and
//! the rewrite of those the kernel's tables moved — same index, same epoch, so tracked
//! flows stay on their backend. Called briefly under the lock by the executor's neighbour
//! watch, which reads the kernel off the lock.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use balancer_common::Backend;

use super::{backend_ids, routed::routed, BackendId, Controller};
use crate::{
    error::Error,
    neighbor::{
        follow::{outcome, Outcome, Sighting},
        format_mac, NextHop,
    },
};

/// What [`Controller::follow`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Followed {
    /// Data-plane entries rewritten.
    pub rewritten: usize,
    /// Some sighting needs a full location (route first) to be understood.
    pub relocate: bool,
}

impl Controller {
    /// The next hop the data plane has for each backend address on L2 (serving or
    /// retired; routed backends are not followed); `None` when no entry of its
    /// own was written yet (it was not located at start).
    pub fn placements(&self) -> Result<BTreeMap<IpAddr, Option<NextHop>>, Error> {
        let mut placements: BTreeMap<IpAddr, Option<NextHop>> = BTreeMap::new();
        for ((index, epoch), addr) in wire_ids(&self.state) {
            let hop = self.current_hop(index, epoch)?;
            let placed = placements.entry(addr).or_default();
            if placed.is_none() {
                *placed = hop;
            }
        }
        Ok(placements)
    }

    /// Applies what the kernel says about backend addresses: every backend entry of a
    /// sighted address whose next hop moved is rewritten with the same epoch; a backend
    /// that stopped answering keeps its last MAC and is logged. Routed backends are
    /// never rewritten (that would turn them into L2 ones).
    pub fn follow(&mut self, sightings: &[(IpAddr, Sighting)]) -> Result<Followed, Error> {
        let mut by_addr: BTreeMap<IpAddr, Vec<BackendId>> = BTreeMap::new();
        for (id, addr) in wire_ids(&self.state) {
            by_addr.entry(addr).or_default().push(id);
        }
        let mut followed = Followed::default();
        let mut unreachable = BTreeSet::new();
        for (addr, sighting) in sightings {
            for &(index, epoch) in by_addr.get(addr).into_iter().flatten() {
                let current = self.current_hop(index, epoch)?;
                match outcome(current.as_ref(), sighting) {
                    Outcome::Keep => {}
                    Outcome::Rewrite(hop) => {
                        self.plane
                            .set_backend(index, &entry(&hop, epoch), current.is_none())?;
                        followed.rewritten += 1;
                        let from = current.map_or("none".into(), |c| format_mac(&c.dst_mac));
                        tracing::info!(
                            %addr,
                            index,
                            from,
                            to = format_mac(&hop.dst_mac),
                            ifindex = hop.ifindex,
                            "backend moved on the wire; the data plane follows it"
                        );
                    }
                    Outcome::Unreachable => {
                        unreachable.insert(*addr);
                    }
                    Outcome::Relocate => followed.relocate = true,
                }
            }
        }
        for addr in unreachable {
            tracing::warn!(
                %addr,
                "backend does not answer ARP/neighbour discovery (neighbour failed); \
                 the data plane keeps sending to its last MAC"
            );
        }
        Ok(followed)
    }

    /// The next hop of backend (index, epoch) in the data plane, if the entry is its own.
    fn current_hop(&self, index: u32, epoch: u32) -> Result<Option<NextHop>, Error> {
        let entry = self.plane.backend(index)?;
        Ok((entry.epoch == epoch).then_some(NextHop {
            ifindex: entry.ifindex,
            src_mac: entry.src_mac,
            dst_mac: entry.dst_mac,
        }))
    }
}

/// The backends of `state` reached on L2 (serving or retired): all but the routed.
fn wire_ids(state: &crate::state::State) -> BTreeMap<BackendId, IpAddr> {
    let routed = routed(state);
    backend_ids(state)
        .into_iter()
        .filter(|(id, _)| !routed.contains_key(id))
        .collect()
}

/// The data-plane entry of a backend of `epoch` at `hop`.
pub(super) fn entry(hop: &NextHop, epoch: u32) -> Backend {
    Backend {
        dst_mac: hop.dst_mac,
        src_mac: hop.src_mac,
        ifindex: hop.ifindex,
        epoch,
        forward: balancer_common::FORWARD_DSR,
    }
}
