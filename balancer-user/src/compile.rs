//! Turns one service of the desired state into its data-plane image: split cells, one
//! Maglev table per group, and the effective share of every backend.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use balancer_common::{FLAG_CLIENT_AFFINITY, FLAG_HAS_CLIENT_PINS, NONE, SPLIT_CELLS};

use crate::{
    dataplane::{ImageClientPin, ServiceImage},
    maglev::{build_table, MaglevBackend, MaglevError},
    split::SplitError,
    state::{Affinity, BackendEntry, Service, StateError},
    vip::{addr_bytes, family},
};

/// Why a service could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The stored split is invalid.
    #[error(transparent)]
    State(#[from] StateError),
    /// A Maglev table could not be built.
    #[error(transparent)]
    Maglev(#[from] MaglevError),
    /// Split error.
    #[error(transparent)]
    Split(#[from] SplitError),
}

/// A service ready for the data plane.
pub struct Compiled {
    /// What to write.
    pub image: ServiceImage,
    /// Fraction of new flows (0..=1) each backend receives under this image.
    pub shares: BTreeMap<IpAddr, f64>,
}

/// Builds the image of `service` with hash seed `seed`. Backends in `down` (failing their
/// health checks) get no new flows, as if their weight were 0.
pub fn compile(
    service: &Service,
    seed: u64,
    down: &BTreeSet<IpAddr>,
) -> Result<Compiled, CompileError> {
    let weight = |b: &BackendEntry| if down.contains(&b.addr) { 0 } else { b.weight };
    let serving: Vec<bool> = service
        .groups
        .iter()
        .map(|g| g.backends.iter().any(|b| weight(b) > 0))
        .collect();
    let cells = if service.groups.is_empty() {
        vec![balancer_common::NO_GROUP; SPLIT_CELLS]
    } else {
        service.split_table()?.effective(&serving)
    };

    let mut flags = match service.affinity {
        Affinity::Connection => 0,
        Affinity::Client => FLAG_CLIENT_AFFINITY,
    };

    // A pin to a group that cannot serve is left out: its clients follow the split.
    let client_pins: Vec<ImageClientPin> = service
        .pins
        .iter()
        .filter_map(|pin| {
            let group = service.group_index(&pin.group)?;
            serving[group].then(|| ImageClientPin {
                family: family(pin.cidr.addr()),
                addr: addr_bytes(pin.cidr.addr()),
                prefix_len: pin.cidr.prefix_len(),
                group: group as u32,
            })
        })
        .collect();
    if !client_pins.is_empty() {
        flags |= FLAG_HAS_CLIENT_PINS;
    }

    let mut rings = Vec::with_capacity(service.groups.len());
    let mut shares = BTreeMap::new();
    for (g, group) in service.groups.iter().enumerate() {
        let members: Vec<MaglevBackend> = group
            .backends
            .iter()
            .map(|b| MaglevBackend {
                index: b.index,
                addr: b.addr,
                weight: weight(b),
            })
            .collect();
        let table = build_table(&members, service.table_size)?;
        let group_fraction =
            cells.iter().filter(|&&c| c as usize == g).count() as f64 / SPLIT_CELLS as f64;
        let slots = slots_per_index(&table);
        for b in &group.backends {
            let slots = slots.get(b.index as usize).copied().unwrap_or(0);
            shares.insert(
                b.addr,
                group_fraction * slots as f64 / service.table_size as f64,
            );
        }
        rings.push(table);
    }
    Ok(Compiled {
        image: ServiceImage {
            ring_size: service.table_size,
            flags,
            seed,
            cells,
            rings,
            client_pins,
        },
        shares,
    })
}

/// How many slots of `table` each backend index holds, indexed by backend index: one pass
/// over the table (counting per backend would take one pass per backend).
fn slots_per_index(table: &[u32]) -> Vec<usize> {
    let highest = table.iter().copied().filter(|&i| i != NONE).max();
    let mut counts = vec![0; highest.map_or(0, |i| i as usize + 1)];
    for &index in table {
        if let Some(count) = counts.get_mut(index as usize) {
            *count += 1;
        }
    }
    counts
}
