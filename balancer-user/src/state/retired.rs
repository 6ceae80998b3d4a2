//! Retired backends: backends that left the tables (removed, replaced by a rollout, or
//! gone from an applied file) while connection tracking still sends their flows to them.
//! A retired backend keeps its data-plane index and epoch, so its established flows keep
//! reaching it, and gets no new flow. It goes when no flow of it is active any more, when
//! it fails its health checks (it is dead: its clients are better off reset by a live
//! backend), after the retire timeout, or at once when the operator cuts it.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{BackendEntry, State, StateError};

/// A backend in no table whose tracked flows still reach it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retired {
    /// The backend's address.
    pub addr: IpAddr,
    /// The group it left.
    pub group: String,
    /// Its index in the data plane's backend map, kept while it is retired.
    pub index: u32,
    /// The epoch of that occupation of `index`: what its tracked flows name.
    pub epoch: u32,
    /// When it retired (Unix milliseconds).
    pub since_ms: u64,
}

impl State {
    /// Takes a backend out of its service's tables for good: with `cut`, its tracked flows
    /// are re-balanced at once (their clients get a reset); without, it retires and its
    /// flows keep reaching it. A retired backend may be cut too.
    pub fn remove_backend(
        &mut self,
        service: &str,
        addr: IpAddr,
        cut: bool,
        now_ms: u64,
    ) -> Result<(), StateError> {
        let svc = self.service_mut(service)?;
        if let Some(position) = svc.retired.iter().position(|r| r.addr == addr) {
            if !cut {
                return Err(StateError::AlreadyRetired(addr, service.to_string()));
            }
            svc.retired.remove(position);
            return Ok(());
        }
        let (group, entry) = self.take_backend(service, addr)?;
        if !cut {
            self.service_mut(service)?.retired.push(Retired {
                addr,
                group,
                index: entry.index,
                epoch: entry.epoch,
                since_ms: now_ms,
            });
        }
        Ok(())
    }

    /// Ends the retirement of the given backends of `service` (their flows are re-balanced
    /// from now on); addresses that are not retired are skipped.
    pub fn drop_retired(&mut self, service: &str, addrs: &[IpAddr]) -> Result<(), StateError> {
        self.service_mut(service)?
            .retired
            .retain(|r| !addrs.contains(&r.addr));
        Ok(())
    }

    /// The retired backend of `service` at `addr`, taken out of retirement to serve again:
    /// its index and epoch, so that its tracked flows are its own again.
    pub(super) fn revive(&mut self, service: &str, addr: IpAddr) -> Option<Retired> {
        let svc = self.services.get_mut(service)?;
        let position = svc.retired.iter().position(|r| r.addr == addr)?;
        Some(svc.retired.remove(position))
    }
}

/// Why a retired backend went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Farewell {
    /// No flow of it is active any more.
    Idle,
    /// It fails its health checks: its flows are re-balanced.
    Dead,
    /// It was retired for the retire timeout: its flows are re-balanced.
    Expired,
}

impl State {
    /// Ends the retirements that are over at `now_ms`: backends with no active flow
    /// (`active(index, epoch)`), dead ones (`dead(service, addr)`), and those retired for
    /// `timeout_ms` or longer. Returns (service, address, why) of each.
    pub fn end_retirements(
        &mut self,
        now_ms: u64,
        timeout_ms: u64,
        active: impl Fn(u32, u32) -> u64,
        dead: impl Fn(&str, IpAddr) -> bool,
    ) -> Vec<(String, IpAddr, Farewell)> {
        let mut ended = Vec::new();
        for (name, service) in &mut self.services {
            service.retired.retain(|r| {
                let why = if active(r.index, r.epoch) == 0 {
                    Farewell::Idle
                } else if dead(name, r.addr) {
                    Farewell::Dead
                } else if now_ms.saturating_sub(r.since_ms) >= timeout_ms {
                    Farewell::Expired
                } else {
                    return true;
                };
                ended.push((name.clone(), r.addr, why));
                false
            });
        }
        ended
    }
}

/// A retired backend back in a group at `weight`.
pub(super) fn revived(retired: &Retired, weight: u16) -> BackendEntry {
    BackendEntry {
        addr: retired.addr,
        weight,
        index: retired.index,
        epoch: retired.epoch,
        drain: None,
    }
}
