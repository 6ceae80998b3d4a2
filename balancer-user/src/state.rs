//! Desired state: services, groups, backends, split. The daemon persists it after every
//! change and rebuilds the data plane from it at start.
//!
//! Every mutation validates before it changes anything, so a rejected command leaves the
//! state exactly as it was.

mod error;
mod forward;
mod health;
mod retired;
mod store;

use std::{collections::BTreeMap, net::IpAddr};

use ipnet::IpNet;

use balancer_common::{MAX_BACKENDS, MAX_CLIENT_PINS, MAX_GROUPS, MAX_SERVICES, RING_CAPACITY};
use serde::{Deserialize, Serialize};

pub use error::StateError;
pub use forward::{Forward, ForwardError, Mode, PoolPorts, DEFAULT_POOL_PORTS};
pub use health::{CheckKind, HealthCheck};
pub use retired::{Farewell, Retired};
pub use store::{FileStore, StoreError};

use crate::{
    basis_points::BasisPoints,
    maglev::{is_prime, DEFAULT_TABLE_SIZE},
    release::{canary::Canary, drain::Drain, flip::FlipDrain, rollout::Rollout},
    split::{CellRun, SplitTable},
    vip::{is_unicast, Vip},
};

/// Version of the state file format.
pub const STATE_FORMAT: u32 = 1;

/// Longest service or group name.
const MAX_NAME_LEN: usize = 64;

/// Default backend weight.
pub const DEFAULT_WEIGHT: u16 = 100;

/// How new flows are hashed to groups and backends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Affinity {
    /// The 5-tuple: every connection is placed on its own.
    #[default]
    Connection,
    /// The client address only: one client keeps one group and backend.
    Client,
}

impl std::fmt::Display for Affinity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Affinity::Connection => "connection",
            Affinity::Client => "client",
        })
    }
}

/// The whole desired state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// File format version, [`STATE_FORMAT`].
    pub format: u32,
    /// Next backend epoch to hand out; epochs are never reused.
    pub next_epoch: u32,
    /// Services by name.
    pub services: BTreeMap<String, Service>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            format: STATE_FORMAT,
            next_epoch: 1,
            services: BTreeMap::new(),
        }
    }
}

/// One balanced service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Service {
    /// Index in the data plane's per-service maps.
    pub slot: u32,
    /// Address, port and protocol.
    pub vip: Vip,
    /// Hashing affinity.
    pub affinity: Affinity,
    /// Maglev table size (prime).
    pub table_size: u32,
    /// Groups in index order.
    pub groups: Vec<Group>,
    /// Which group each split cell belongs to (persisted so that the split stays monotonic
    /// across restarts).
    pub split: Vec<CellRun>,
    /// Client pins: clients in these prefixes get the named group for new flows.
    #[serde(default)]
    pub pins: Vec<ClientPin>,
    /// The running or last canary.
    #[serde(default)]
    pub canary: Option<Canary>,
    /// The running or last rolling replacement.
    #[serde(default)]
    pub rollout: Option<Rollout>,
    /// After a flip with a drain timeout: when flows still on the old groups stop being
    /// kept.
    #[serde(default)]
    pub flip_drain: Option<FlipDrain>,
    /// Health checks of the backends; none: every backend counts as healthy.
    #[serde(default)]
    pub health: Option<HealthCheck>,
    /// Backends that left the tables while their tracked flows still reach them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<Retired>,
    /// How packets reach the backends; absent from older state files: direct server return.
    #[serde(default, skip_serializing_if = "Forward::is_dsr")]
    pub forward: Forward,
}

/// A client pin: clients in `cidr` always get `group` for new flows, whatever the split.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientPin {
    /// Client prefix (host bits zero).
    pub cidr: IpNet,
    /// Group name.
    pub group: String,
}

/// A named set of backends (e.g. blue, green, canary).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Group name, unique in its service.
    pub name: String,
    /// Backends of the group.
    pub backends: Vec<BackendEntry>,
}

/// One backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendEntry {
    /// The backend's own address (it also holds the VIP on a loopback).
    pub addr: IpAddr,
    /// Relative weight for new flows; 0 = no new flows, established ones kept.
    pub weight: u16,
    /// Index in the data plane's backend map.
    pub index: u32,
    /// Epoch of this occupation of `index`.
    pub epoch: u32,
    /// The drain in progress or ended, if any.
    #[serde(default)]
    pub drain: Option<Drain>,
}

impl Service {
    /// Where backend `addr` takes this service's packets: its address with the port they
    /// arrive on (the `nat` backend port, else the VIP's) and the VIP's protocol.
    pub fn endpoint(&self, addr: IpAddr) -> Vip {
        Vip {
            addr: std::net::SocketAddr::new(addr, self.forward.backend_port(self.vip)),
            protocol: self.vip.protocol,
        }
    }

    /// The split table.
    pub fn split_table(&self) -> Result<SplitTable, StateError> {
        Ok(SplitTable::from_runs(&self.split, self.groups.len())?)
    }

    /// Group index by name.
    pub fn group_index(&self, name: &str) -> Option<usize> {
        self.groups.iter().position(|g| g.name == name)
    }

    /// Every backend with its group index.
    pub fn backends(&self) -> impl Iterator<Item = (usize, &BackendEntry)> {
        self.groups
            .iter()
            .enumerate()
            .flat_map(|(g, group)| group.backends.iter().map(move |b| (g, b)))
    }

    /// A backend by address, to change it.
    pub(crate) fn backend_mut(&mut self, addr: IpAddr) -> Option<&mut BackendEntry> {
        self.groups
            .iter_mut()
            .flat_map(|g| g.backends.iter_mut())
            .find(|b| b.addr == addr)
    }

    /// Removes groups that have neither backends nor a share.
    fn prune_groups(&mut self) -> Result<(), StateError> {
        while let Some(g) = self
            .shares()?
            .iter()
            .zip(&self.groups)
            .position(|(share, group)| {
                *share == BasisPoints::ZERO
                    && group.backends.is_empty()
                    && !self.pins.iter().any(|p| p.group == group.name)
                    && !self.canary.as_ref().is_some_and(|c| {
                        c.running() && (c.from == group.name || c.to == group.name)
                    })
            })
        {
            let table = self.split_table()?.without_group(g as u8)?;
            self.groups.remove(g);
            self.split = table.to_runs();
        }
        Ok(())
    }

    /// Keeps a pending flip drain to the groups that still have no share: a group that
    /// takes new flows again is live, and its flows are never forgotten.
    fn settle_flip_drain(&mut self) -> Result<(), StateError> {
        let shares = self.shares()?;
        let live: Vec<&str> = self
            .groups
            .iter()
            .zip(&shares)
            .filter(|(_, share)| **share > BasisPoints::ZERO)
            .map(|(group, _)| group.name.as_str())
            .collect();
        if let Some(drain) = &mut self.flip_drain {
            drain.groups.retain(|g| !live.contains(&g.as_str()));
            if drain.groups.is_empty() {
                self.flip_drain = None;
            }
        }
        Ok(())
    }

    /// Shares per group, in group order.
    pub fn shares(&self) -> Result<Vec<BasisPoints>, StateError> {
        let table = self.split_table()?;
        (0..self.groups.len())
            .map(|g| {
                let cells = table.share_of(g as u8);
                BasisPoints::new(cells).ok_or_else(|| {
                    StateError::Corrupt(format!("group {g} has {cells} of 10000 cells"))
                })
            })
            .collect()
    }
}

impl Service {
    /// Checks that the running analyses (of its canary, of its rollout) check only signals
    /// the service has: reply signals need a forwarding whose replies pass the LB.
    fn check_analyses(&self, name: &str) -> Result<(), StateError> {
        let canary = self.canary.iter().filter(|c| c.running());
        let rollout = self.rollout.iter().filter(|r| r.running());
        let plans = canary
            .filter_map(|c| c.analysis.as_ref())
            .chain(rollout.filter_map(|r| r.analysis.as_ref()))
            .map(|a| &a.plan);
        for plan in plans {
            match plan.reply_signal() {
                Some(signal) if !self.forward.mode.translated() => {
                    return Err(StateError::NoReplies(
                        name.to_string(),
                        signal.name(),
                        self.forward.mode,
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl State {
    /// The names of the services for which `wants` holds, in name order.
    pub fn services_where(&self, wants: impl Fn(&Service) -> bool) -> Vec<String> {
        self.services
            .iter()
            .filter(|(_, s)| wants(s))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Checks invariants of a state read from disk or built from a config file.
    pub fn validate(&self) -> Result<(), StateError> {
        let mut slots = BTreeMap::new();
        let mut vips = BTreeMap::new();
        let mut indices = BTreeMap::new();
        let mut answering = BTreeMap::new();
        for (name, service) in &self.services {
            check_name("service", name)?;
            if service.slot >= MAX_SERVICES || slots.insert(service.slot, name).is_some() {
                return Err(StateError::Corrupt(format!(
                    "service {name:?} has a bad slot"
                )));
            }
            if let Some(other) = vips.insert(service.vip, name) {
                return Err(StateError::VipInUse(service.vip, other.clone()));
            }
            check_table_size(service.table_size)?;
            service.forward.check(service.vip)?;
            service.check_analyses(name)?;
            if service.groups.len() > MAX_GROUPS as usize {
                return Err(StateError::TooManyGroups(name.clone()));
            }
            service.split_table()?;
            for (g, group) in service.groups.iter().enumerate() {
                check_name("group", &group.name)?;
                if service.group_index(&group.name) != Some(g) {
                    return Err(StateError::Corrupt(format!(
                        "group {:?} appears twice in service {name:?}",
                        group.name
                    )));
                }
            }
            for pin in &service.pins {
                if service.group_index(&pin.group).is_none() {
                    return Err(StateError::Corrupt(format!(
                        "pin {} of service {name:?} names no group",
                        pin.cidr
                    )));
                }
            }
            let mut addrs = BTreeMap::new();
            let retired = service.retired.iter().map(|r| (r.addr, r.index, r.epoch));
            for (addr, index, epoch) in service
                .backends()
                .map(|(_, b)| (b.addr, b.index, b.epoch))
                .chain(retired)
            {
                check_backend_addr(service, addr)?;
                if addrs.insert(addr, ()).is_some() {
                    return Err(StateError::DuplicateBackend(addr, name.clone()));
                }
                if service.forward.mode.translated() {
                    let endpoint = service.endpoint(addr);
                    if let Some(other) = answering.insert(endpoint, name) {
                        return Err(StateError::ReplyInUse(
                            endpoint,
                            name.clone(),
                            other.clone(),
                        ));
                    }
                }
                if index >= MAX_BACKENDS
                    || epoch == 0
                    || epoch >= self.next_epoch
                    || indices.insert(index, ()).is_some()
                {
                    return Err(StateError::Corrupt(format!(
                        "backend {addr} of service {name:?} has a bad index or epoch"
                    )));
                }
            }
        }
        Ok(())
    }

    /// A service by name.
    pub fn service(&self, name: &str) -> Result<&Service, StateError> {
        self.services
            .get(name)
            .ok_or_else(|| StateError::UnknownService(name.to_string()))
    }

    /// A service by name, to change it.
    pub(crate) fn service_mut(&mut self, name: &str) -> Result<&mut Service, StateError> {
        self.services
            .get_mut(name)
            .ok_or_else(|| StateError::UnknownService(name.to_string()))
    }

    /// Adds a service without groups; it drops its VIP's packets until backends exist.
    pub fn add_service(
        &mut self,
        name: &str,
        vip: Vip,
        affinity: Affinity,
        table_size: Option<u32>,
    ) -> Result<(), StateError> {
        check_name("service", name)?;
        if self.services.contains_key(name) {
            return Err(StateError::ServiceExists(name.to_string()));
        }
        if let Some((other, _)) = self.services.iter().find(|(_, s)| s.vip == vip) {
            return Err(StateError::VipInUse(vip, other.clone()));
        }
        let table_size = table_size.unwrap_or(DEFAULT_TABLE_SIZE);
        check_table_size(table_size)?;
        let slot = (0..MAX_SERVICES)
            .find(|slot| self.services.values().all(|s| s.slot != *slot))
            .ok_or(StateError::TooManyServices)?;
        self.services.insert(
            name.to_string(),
            Service {
                slot,
                vip,
                affinity,
                table_size,
                groups: Vec::new(),
                split: Vec::new(),
                pins: Vec::new(),
                canary: None,
                rollout: None,
                flip_drain: None,
                health: None,
                retired: Vec::new(),
                forward: Forward::default(),
            },
        );
        Ok(())
    }

    /// Changes a service's affinity and table size; its backends and their established
    /// flows stay.
    pub fn reconfigure_service(
        &mut self,
        name: &str,
        affinity: Affinity,
        table_size: u32,
    ) -> Result<(), StateError> {
        check_table_size(table_size)?;
        let service = self.service_mut(name)?;
        service.affinity = affinity;
        service.table_size = table_size;
        Ok(())
    }

    /// Sets how a service's packets reach its backends. A change is refused while the
    /// service has backends, serving or retired: their established flows would be sent
    /// another way (an L2 backend is not a tunnel endpoint, nor the reverse). Setting what
    /// the service already has is no change.
    pub fn set_forward(&mut self, name: &str, forward: Forward) -> Result<(), StateError> {
        let service = self.service_mut(name)?;
        if service.forward == forward {
            return Ok(());
        }
        forward.check(service.vip)?;
        let backends = service.backends().count() + service.retired.len();
        if backends > 0 {
            return Err(ForwardError::InUse(name.to_string(), backends).into());
        }
        service.forward = forward;
        Ok(())
    }

    /// Gives services new VIPs, all at once (two services may swap theirs); each keeps its
    /// backends and so its established flows, which keep reaching them until idle.
    pub fn move_vips(&mut self, moves: &[(String, Vip)]) -> Result<(), StateError> {
        for (name, vip) in moves {
            let service = self.service_mut(name)?;
            service.vip = *vip;
            service.forward.check(*vip)?;
        }
        let mut seen = BTreeMap::new();
        for (name, service) in &self.services {
            if let Some(other) = seen.insert(service.vip, name) {
                return Err(StateError::VipInUse(service.vip, other.clone()));
            }
        }
        Ok(())
    }

    /// Removes a service and its backends.
    pub fn remove_service(&mut self, name: &str) -> Result<Service, StateError> {
        self.services
            .remove(name)
            .ok_or_else(|| StateError::UnknownService(name.to_string()))
    }

    /// Adds a backend to a group, creating the group if needed (the first group of a
    /// service gets 100% of new flows, later ones 0% until a split gives them a share).
    pub fn add_backend(
        &mut self,
        service: &str,
        addr: IpAddr,
        group: &str,
        weight: u16,
    ) -> Result<(), StateError> {
        let mut free = FreeIndices::of(self);
        self.add_backend_from(service, addr, group, weight, &mut free)
    }

    /// Adds `backends` (address, group, weight) to `service` in order, each as
    /// [`State::add_backend`] does, finding the free backend indices once for all of them.
    pub fn add_backends(
        &mut self,
        service: &str,
        backends: &[(IpAddr, &str, u16)],
    ) -> Result<(), StateError> {
        let mut free = FreeIndices::of(self);
        for &(addr, group, weight) in backends {
            self.add_backend_from(service, addr, group, weight, &mut free)?;
        }
        Ok(())
    }

    /// [`State::add_backend`], a new backend's index taken from `free`.
    fn add_backend_from(
        &mut self,
        service: &str,
        addr: IpAddr,
        group: &str,
        weight: u16,
        free: &mut FreeIndices,
    ) -> Result<(), StateError> {
        check_name("group", group)?;
        let svc = self.service(service)?;
        check_backend_addr(svc, addr)?;
        if svc.backends().any(|(_, b)| b.addr == addr) {
            return Err(StateError::DuplicateBackend(addr, service.to_string()));
        }
        // A retired backend comes back with its index and epoch: its flows are its own.
        let (entry, next_epoch) = match self.revive(service, addr) {
            Some(retired) => (retired::revived(&retired, weight), self.next_epoch),
            None => {
                let epoch = self.next_epoch;
                let next_epoch = epoch.checked_add(1).ok_or(StateError::EpochsExhausted)?;
                let entry = BackendEntry {
                    addr,
                    weight,
                    index: free.take()?,
                    epoch,
                    drain: None,
                };
                (entry, next_epoch)
            }
        };
        let svc = self.service_mut(service)?;
        let group_index = match svc.group_index(group) {
            Some(g) => g,
            None => {
                if svc.groups.len() >= MAX_GROUPS as usize {
                    return Err(StateError::TooManyGroups(service.to_string()));
                }
                let mut shares: Vec<u16> = svc.shares()?.iter().map(|s| s.get()).collect();
                shares.push(if shares.is_empty() { 10_000 } else { 0 });
                let table = match svc.groups.len() {
                    0 => SplitTable::initial(&shares)?,
                    _ => svc.split_table()?.rebalance(&shares)?,
                };
                svc.groups.push(Group {
                    name: group.to_string(),
                    backends: Vec::new(),
                });
                svc.split = table.to_runs();
                svc.groups.len() - 1
            }
        };
        svc.groups[group_index].backends.push(entry);
        self.next_epoch = next_epoch;
        Ok(())
    }

    /// Changes a backend's weight.
    pub fn set_weight(
        &mut self,
        service: &str,
        addr: IpAddr,
        weight: u16,
    ) -> Result<(), StateError> {
        let svc = self.service_mut(service)?;
        let backend = svc
            .backend_mut(addr)
            .ok_or_else(|| StateError::UnknownBackend(addr, service.to_string()))?;
        backend.weight = weight;
        if weight > 0 {
            // Serving again: a drain in progress is over.
            backend.drain = None;
        }
        Ok(())
    }

    /// Takes a backend out of its group, returning the group's name and the entry. A group
    /// left without backends and without share is removed too.
    fn take_backend(
        &mut self,
        service: &str,
        addr: IpAddr,
    ) -> Result<(String, BackendEntry), StateError> {
        let svc = self.service_mut(service)?;
        let (g, position) = svc
            .groups
            .iter()
            .enumerate()
            .find_map(|(g, group)| {
                group
                    .backends
                    .iter()
                    .position(|b| b.addr == addr)
                    .map(|p| (g, p))
            })
            .ok_or_else(|| StateError::UnknownBackend(addr, service.to_string()))?;
        let removed = svc.groups[g].backends.remove(position);
        let group = svc.groups[g].name.clone();
        svc.prune_groups()?;
        Ok((group, removed))
    }

    /// Sets the split: every named group gets its share, unnamed groups 0. Shares must sum
    /// to 100%.
    pub fn set_split(
        &mut self,
        service: &str,
        shares: &[(String, BasisPoints)],
    ) -> Result<(), StateError> {
        let svc = self.service_mut(service)?;
        if svc.groups.is_empty() {
            return Err(StateError::NoGroups(service.to_string()));
        }
        let mut new_shares = vec![0u16; svc.groups.len()];
        let mut seen = vec![false; svc.groups.len()];
        for (name, share) in shares {
            let g = svc
                .group_index(name)
                .ok_or_else(|| StateError::UnknownGroup(name.clone(), service.to_string()))?;
            if seen[g] {
                return Err(StateError::GroupTwice(name.clone()));
            }
            seen[g] = true;
            new_shares[g] = share.get();
        }
        let table = svc.split_table()?.rebalance(&new_shares)?;
        svc.split = table.to_runs();
        svc.settle_flip_drain()?;
        svc.prune_groups()
    }

    /// Pins clients in `cidr` to `group` for new flows, whatever the split (also a group
    /// whose share is 0: a preview group). The longest matching prefix wins.
    pub fn add_pin(&mut self, service: &str, cidr: IpNet, group: &str) -> Result<(), StateError> {
        let svc = self.service_mut(service)?;
        if svc.group_index(group).is_none() {
            return Err(StateError::UnknownGroup(
                group.to_string(),
                service.to_string(),
            ));
        }
        if cidr != cidr.trunc() {
            return Err(StateError::HostBits(cidr, cidr.trunc()));
        }
        if cidr.addr().is_ipv4() != svc.vip.addr.is_ipv4() {
            return Err(StateError::PinFamily(cidr, svc.vip));
        }
        if svc.pins.iter().any(|p| p.cidr == cidr) {
            return Err(StateError::PinExists(cidr, service.to_string()));
        }
        if svc.pins.len() >= MAX_CLIENT_PINS as usize {
            return Err(StateError::TooManyPins(service.to_string()));
        }
        svc.pins.push(ClientPin {
            cidr,
            group: group.to_string(),
        });
        svc.pins.sort_by_key(|p| p.cidr);
        Ok(())
    }

    /// Removes the pin of exactly `cidr`.
    pub fn remove_pin(&mut self, service: &str, cidr: IpNet) -> Result<(), StateError> {
        let svc = self.service_mut(service)?;
        let position = svc
            .pins
            .iter()
            .position(|p| p.cidr == cidr)
            .ok_or_else(|| StateError::UnknownPin(cidr, service.to_string()))?;
        svc.pins.remove(position);
        svc.prune_groups()
    }
}

/// The backend indices no backend holds (serving or retired), lowest first.
struct FreeIndices {
    /// Whether each index is held.
    used: Vec<bool>,
    /// No index below this one is free.
    next: usize,
}

impl FreeIndices {
    /// The indices free in `state`.
    fn of(state: &State) -> Self {
        let mut used = vec![false; MAX_BACKENDS as usize];
        for s in state.services.values() {
            let retired = s.retired.iter().map(|r| r.index);
            for index in s.backends().map(|(_, b)| b.index).chain(retired) {
                if let Some(slot) = used.get_mut(index as usize) {
                    *slot = true;
                }
            }
        }
        Self { used, next: 0 }
    }

    /// The lowest free index, held from now on.
    fn take(&mut self) -> Result<u32, StateError> {
        while self.used.get(self.next) == Some(&true) {
            self.next += 1;
        }
        let slot = self
            .used
            .get_mut(self.next)
            .ok_or(StateError::TooManyBackends)?;
        *slot = true;
        Ok(self.next as u32)
    }
}

/// Checks a service or group name: 1-64 characters from A-Z a-z 0-9 - _ .
pub(crate) fn check_name(kind: &'static str, name: &str) -> Result<(), StateError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(StateError::BadName(kind, name.to_string()))
    }
}

fn check_table_size(size: u32) -> Result<(), StateError> {
    if size as usize > RING_CAPACITY || !is_prime(size) || size < 3 {
        return Err(StateError::BadTableSize(size, RING_CAPACITY));
    }
    Ok(())
}

fn check_backend_addr(service: &Service, addr: IpAddr) -> Result<(), StateError> {
    if !is_unicast(addr) || addr.is_loopback() {
        return Err(StateError::BadBackendAddr(addr));
    }
    if addr.is_ipv4() != service.vip.addr.is_ipv4() {
        return Err(StateError::FamilyMismatch(addr, service.vip));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
