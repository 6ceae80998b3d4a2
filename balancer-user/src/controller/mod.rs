//! The daemon's core: owns the desired state and the data plane, applies every change as
//! validate → locate → compile → persist → publish, drives the release strategies on its
//! clock, follows backends that move on the wire, and answers status queries.
//!
//! It talks to the outside only through [`ports`] and a [`Clock`], so every path through
//! it runs in unit tests on fakes. What it did — each change saved and published, each
//! health change — it keeps as [`Happening`]s until its caller takes them for the history
//! ([`Controller::take_happenings`]).

mod analysis;
mod drive;
#[cfg(test)]
pub(crate) mod fakes;
mod neighbours;
pub mod ports;
mod routed;
mod status;
#[cfg(test)]
mod tests;

pub use drive::Tick;
pub use neighbours::Followed;

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    net::IpAddr,
    sync::Arc,
    time::Duration,
};

use balancer_common::{
    Backend, Rewrite, Tunnel, FORWARD_FULLNAT, FORWARD_GUE, FORWARD_IPIP, FORWARD_NAT, MAX_BACKENDS,
};

use crate::{
    clock::Clock,
    compile::{compile, Compiled},
    digest::digest,
    error::{one_line, Error},
    health::{CheckJob, HealthBoard, Serving},
    history::{Happening, Touched},
    neighbor::{NeighborError, NextHop},
    state::State,
};
use ports::{Flows, Neighbors, Plane, Store};
use routed::{routed, Destination, Placement};

/// Settings of a controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Seed of the flow hash (same on every host of a fleet).
    pub seed: u64,
    /// A tracked flow counts as active while it saw a packet within this time.
    pub flow_idle: Duration,
    /// A retired backend keeps its flows at most this long.
    pub retire_timeout: Duration,
}

/// What a controller talks to.
pub struct Ports {
    /// The data plane.
    pub plane: Box<dyn Plane>,
    /// Where backends are on the wire (shared: the executor resolves off the lock).
    pub neighbors: Arc<dyn Neighbors>,
    /// Where the desired state is kept.
    pub store: Box<dyn Store>,
    /// The time.
    pub clock: Arc<dyn Clock>,
}

/// The daemon's core.
pub struct Controller {
    settings: Settings,
    state: State,
    health: HealthBoard,
    next_drain_check_ms: u64,
    next_vip_port_check_ms: u64,
    asked: analysis::Asked,
    shares: BTreeMap<String, BTreeMap<IpAddr, f64>>,
    /// The digest of each service's tables as last written (see [`crate::digest`]).
    digests: BTreeMap<String, String>,
    /// In a fleet's leader: the other live hosts' analysis counters.
    peers: crate::fleet::report::Peers,
    plane: Box<dyn Plane>,
    neighbors: Arc<dyn Neighbors>,
    flows: Arc<dyn Flows>,
    store: Box<dyn Store>,
    clock: Arc<dyn Clock>,
    /// What it did since the last [`Controller::take_happenings`], for the history.
    happenings: Vec<Happening>,
}

/// A backend's identity in the data plane: (index, epoch).
type BackendId = (u32, u32);

impl Controller {
    /// Loads the stored state and brings the data plane in line with it. Established flows
    /// are untouched: the tables are rebuilt identically from the same state, and
    /// connection tracking lives in the data plane.
    pub fn start(ports: Ports, settings: Settings) -> Result<Self, Error> {
        let state = ports.store.load()?;
        let mut health = HealthBoard::default();
        // Backends start as they were last seen; those never seen (no record, or a record
        // that does not load) keep serving until checks say otherwise.
        health.sync(&state, ports.clock.now_ms(), Serving::All);
        match ports.store.load_health() {
            Ok(record) => health.restore(&record),
            Err(e) => tracing::warn!(
                "stored health not used, backends start up: {}",
                one_line(&e)
            ),
        }
        let flows = ports.plane.flows()?;
        let mut controller = Self {
            settings,
            state: State::default(),
            health,
            next_drain_check_ms: 0,
            next_vip_port_check_ms: 0,
            asked: analysis::Asked::new(),
            shares: BTreeMap::new(),
            digests: BTreeMap::new(),
            peers: Default::default(),
            plane: ports.plane,
            neighbors: ports.neighbors,
            flows,
            store: ports.store,
            clock: ports.clock,
            happenings: Vec::new(),
        };
        controller.reconcile(state)?;
        Ok(controller)
    }

    /// Whether start found the program already attached.
    pub fn reattached(&self) -> bool {
        self.plane.reattached()
    }

    /// The time on the controller's clock (Unix milliseconds).
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The desired state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Where backends are on the wire: for resolving them off the lock.
    pub fn neighbors(&self) -> Arc<dyn Neighbors> {
        self.neighbors.clone()
    }

    /// The flow counter, to count without the controller's lock, and the flow idle time.
    pub fn flows(&self) -> (Arc<dyn Flows>, Duration) {
        (self.flows.clone(), self.settings.flow_idle)
    }

    /// Applies `change` (given the clock's time) to a copy of the state; if it and
    /// everything it implies succeeds, persists and publishes the result. A refused change
    /// touches neither the store nor the data plane; a fault while publishing puts the old
    /// state back in both.
    ///
    /// New backends are located in the kernel's tables as they stand, without probing or
    /// waiting: a change that adds a backend without a neighbour entry yet fails with
    /// [`Error::Unlocated`], having touched nothing; the caller resolves those backends
    /// off the lock (see [`Neighbors::resolve`]) and runs the change again. Backends of
    /// tunnelled services need a route instead (none: refused), and get their outer source.
    pub fn change<T, E: Into<Error>>(
        &mut self,
        change: impl FnOnce(&mut State, u64) -> Result<T, E>,
    ) -> Result<T, Error> {
        let now_ms = self.clock.now_ms();
        let mut next = self.state.clone();
        let out = change(&mut next, now_ms).map_err(Into::into)?;
        next.validate()?;
        let mut health = self.health.clone();
        health.sync(&next, now_ms, Serving::In(&self.state));
        let hops = self.locate_new(&next)?;
        let compiled = self.compile_changed(&next, &health, false)?;
        // Read before anything is written, so that a failure here changes nothing.
        let snapshot = self.snapshot(&self.state, &next, &hops)?;
        self.store.save(&next)?;
        let previous = std::mem::take(&mut self.state);
        let published = self.publish(&previous, &next, &hops, compiled);
        self.state = previous;
        if let Err(e) = published {
            tracing::error!("publishing a change failed, putting the old state back: {e}");
            self.restore(&next, &snapshot);
            return Err(e);
        }
        self.happenings.push(Happening::Changed {
            at_ms: now_ms,
            services: touched(&self.state, &next),
        });
        self.state = next;
        self.health = health;
        Ok(out)
    }

    /// For a fleet (`daemon --store`): applies `change` to a copy of the state and checks
    /// it as [`Controller::change`] does — validation, and new backends located in the
    /// kernel's tables as they stand ([`Error::Unlocated`] when one is not yet) — but writes
    /// nothing: the caller stores the result off the lock, then [`Controller::adopt`]s it.
    pub fn prepare<T, E: Into<Error>>(
        &self,
        change: impl FnOnce(&mut State, u64) -> Result<T, E>,
    ) -> Result<State, Error> {
        let mut next = self.state.clone();
        change(&mut next, self.clock.now_ms()).map_err(Into::into)?;
        next.validate()?;
        self.locate_new(&next)?;
        Ok(next)
    }

    /// Makes `target` (a fleet's stored state) the desired state, as a change that
    /// replaces the whole state: validated, saved and published, or refused having touched
    /// nothing. The same state again changes nothing.
    pub fn adopt(&mut self, target: State) -> Result<(), Error> {
        if self.state == target {
            return Ok(());
        }
        self.change(|s, _| {
            *s = target;
            Ok::<(), Error>(())
        })
    }

    /// The digest of each service's tables as last written.
    pub fn digests(&self) -> &BTreeMap<String, String> {
        &self.digests
    }

    /// What the controller did since it was last asked — every change saved and published,
    /// every health change — for the caller to record in the history, saying who caused it.
    pub fn take_happenings(&mut self) -> Vec<Happening> {
        std::mem::take(&mut self.happenings)
    }

    /// Where the backends that `next` adds are, from the tables as they stand.
    fn locate_new(&self, next: &State) -> Result<BTreeMap<BackendId, Placement>, Error> {
        let (new, routed) = split_routed(new_backends(&self.state, next), next);
        let placed = self.place_routed(&routed);
        if let Some((_, e)) = placed.failed.into_iter().next() {
            return Err(e.into());
        }
        let mut placements = placed.found;
        let addrs = distinct(new.values());
        if addrs.is_empty() {
            return Ok(placements);
        }
        let mut located = BTreeMap::new();
        let mut unlocated = Vec::new();
        for (addr, result) in addrs.iter().zip(self.neighbors.locate(&addrs)) {
            match result {
                Ok(hop) => {
                    located.insert(*addr, hop);
                }
                Err(NeighborError::Unresolved(..)) => unlocated.push(*addr),
                Err(e) => return Err(e.into()),
            }
        }
        if !unlocated.is_empty() {
            return Err(Error::Unlocated(unlocated));
        }
        placements.extend(
            new.into_iter()
                .map(|(id, addr)| (id, Placement::Wire(located[&addr]))),
        );
        Ok(placements)
    }

    fn reconcile(&mut self, target: State) -> Result<(), Error> {
        // The backends in the tables; retired ones keep their entries as they are.
        let serving: BTreeMap<BackendId, IpAddr> = target
            .services
            .values()
            .flat_map(|s| s.backends().map(|(_, b)| ((b.index, b.epoch), b.addr)))
            .collect();
        let (serving, routed) = split_routed(serving, &target);
        let placed = self.place_routed(&routed);
        let mut hops = placed.found;
        for (&(index, epoch), Destination { addr, .. }) in &routed {
            if let Some(e) = placed.failed.get(addr) {
                // Kept as the data plane has it; written once a route appears (a change).
                if self.plane.backend(index)?.epoch != epoch {
                    tracing::warn!("backend {addr} not reachable at start: {e}");
                }
            }
        }
        let addrs = distinct(serving.values());
        let located: BTreeMap<IpAddr, Result<NextHop, NeighborError>> = addrs
            .iter()
            .copied()
            .zip(self.neighbors.resolve(&addrs))
            .collect();
        for ((index, epoch), addr) in &serving {
            match &located[addr] {
                Ok(hop) => {
                    hops.insert((*index, *epoch), Placement::Wire(*hop));
                }
                Err(e) => {
                    // Keep whatever the data plane has for it (e.g. after a restart while
                    // the backend's neighbour entry expired); the neighbour watch writes it
                    // once the kernel knows where it is.
                    let existing = self.plane.backend(*index)?;
                    if existing.epoch != *epoch {
                        tracing::warn!("backend {addr} not reachable at start: {e}");
                    }
                }
            }
        }
        let compiled = self.compile_changed(&target, &self.health, true)?;
        // Nothing is known of what the data plane holds: publish as if from an empty state.
        self.publish(&State::default(), &target, &hops, compiled)?;
        // Remove what the data plane has beyond the state (a crash between steps).
        let wanted_vips: HashSet<_> = target.services.values().map(|s| s.vip.key()).collect();
        for (vip, _) in self.plane.vips()? {
            if !wanted_vips.contains(&vip) {
                self.plane.remove_vip(&vip)?;
            }
        }
        let wanted_slots: HashSet<u32> = target.services.values().map(|s| s.slot).collect();
        for slot in self.plane.table_slots() {
            if !wanted_slots.contains(&slot) {
                self.plane.remove_tables(slot)?;
            }
        }
        let wanted: BTreeSet<BackendId> = backend_ids(&target).into_keys().collect();
        for index in 0..MAX_BACKENDS {
            let entry = self.plane.backend(index)?;
            if entry.epoch != 0 && !wanted.contains(&(index, entry.epoch)) {
                self.plane.clear_backend(index)?;
            }
        }
        self.sync_replies(&target, true)?;
        self.state = target;
        Ok(())
    }

    fn compile_changed(
        &self,
        next: &State,
        health: &HealthBoard,
        all: bool,
    ) -> Result<BTreeMap<String, Compiled>, Error> {
        next.services
            .iter()
            .filter(|(name, service)| {
                all || self.state.services.get(*name) != Some(service)
                    || health.down(name) != self.health.down(name)
            })
            .map(|(name, service)| {
                let compiled = compile(service, self.settings.seed, &health.down(name))?;
                Ok((name.clone(), compiled))
            })
            .collect()
    }

    /// Writes `next` to the data plane, coming from `previous`, in an order that never
    /// exposes a half-made change: backends before the tables that name them, tables before
    /// their VIP, and a removed backend's entry only after no table names it.
    fn publish(
        &mut self,
        previous: &State,
        next: &State,
        hops: &BTreeMap<BackendId, Placement>,
        compiled: BTreeMap<String, Compiled>,
    ) -> Result<(), Error> {
        let old_ids = backend_ids(previous);
        for (&(index, epoch), placement) in hops {
            let existing = self.plane.backend(index)?;
            let fresh = existing.epoch != epoch && !old_ids.contains_key(&(index, epoch));
            self.write_placement(index, epoch, placement, fresh)?;
        }
        self.sync_replies(next, false)?;
        self.write_services(previous, next, compiled)?;
        self.shares
            .retain(|name, _| next.services.contains_key(name));
        self.digests
            .retain(|name, _| next.services.contains_key(name));
        // An index freed and handed to a new backend in the same change already holds the
        // new backend's entry (written first): only indices nobody uses any more are cleared.
        let in_use = indices(next);
        for (index, _) in old_ids.keys() {
            if !in_use.contains(index) {
                self.plane.clear_backend(*index)?;
            }
        }
        self.sync_replies(next, true)?;
        Ok(())
    }

    /// Withdraws the VIPs of `previous` that `next` no longer has at the same address, then
    /// writes the compiled services of `next`.
    fn write_services(
        &mut self,
        previous: &State,
        next: &State,
        compiled: BTreeMap<String, Compiled>,
    ) -> Result<(), Error> {
        for (name, service) in &previous.services {
            if next.services.get(name).map(|s| s.vip) != Some(service.vip) {
                self.plane.remove_vip(&service.vip.key())?;
            }
            if !next.services.contains_key(name) {
                self.plane.remove_tables(service.slot)?;
            }
        }
        for (name, c) in compiled {
            let service = &next.services[&name];
            self.plane
                .write_service(service.slot, service.vip.key(), &c.image)?;
            self.digests.insert(name.clone(), digest(&c.image));
            self.shares.insert(name, c.shares);
        }
        Ok(())
    }

    /// The entries of the backend indices that publishing `next` over `previous` writes
    /// (new backends) or clears (removed ones), so that [`Controller::restore`] can write
    /// them back.
    fn snapshot(
        &self,
        previous: &State,
        next: &State,
        hops: &BTreeMap<BackendId, Placement>,
    ) -> Result<BTreeMap<u32, Entries>, Error> {
        let in_use = indices(next);
        let cleared = indices(previous)
            .into_iter()
            .filter(|i| !in_use.contains(i));
        let written = hops.keys().map(|(index, _)| *index);
        cleared
            .chain(written)
            .map(|index| {
                let entries = Entries {
                    backend: self.plane.backend(index)?,
                    tunnel: self.plane.tunnel(index)?,
                    rewrite: self.plane.rewrite(index)?,
                };
                Ok((index, entries))
            })
            .collect()
    }

    /// After a failed publish of `failed`: writes the current state back to the data plane
    /// (the backend entries the publish touched, every service's tables, VIPs) and to the
    /// store. Best effort: a fault that persists is logged, and the next restart reconciles.
    fn restore(&mut self, failed: &State, snapshot: &BTreeMap<u32, Entries>) {
        let mut attempt = || -> Result<(), Error> {
            for (index, entries) in snapshot {
                let backend = &entries.backend;
                if backend.epoch == 0 {
                    self.plane.clear_backend(*index)?;
                    continue;
                }
                match backend.forward {
                    FORWARD_IPIP | FORWARD_GUE => self.plane.set_tunnel(*index, &entries.tunnel)?,
                    FORWARD_NAT | FORWARD_FULLNAT => {
                        self.plane.set_rewrite(*index, &entries.rewrite)?
                    }
                    _ => {}
                }
                self.plane.set_backend(*index, backend, false)?;
            }
            let compiled = self.compile_changed(&self.state, &self.health, true)?;
            let current = self.state.clone();
            self.sync_replies(&current, false)?;
            self.write_services(failed, &current, compiled)?;
            self.sync_replies(&current, true)?;
            self.store.save(&current)?;
            Ok(())
        };
        if let Err(e) = attempt() {
            tracing::error!("putting the old state back failed too: {e}");
        }
    }

    /// Records a health-check result. A backend that goes down or comes back changes its
    /// service's tables in one atomic write, like a weight change; the store is not
    /// touched (health is observed, not desired).
    pub fn report_check(
        &mut self,
        job: &CheckJob,
        result: Result<(), String>,
    ) -> Result<(), Error> {
        let addr = job.target.ip();
        if let Err(why) = &result {
            tracing::debug!(service = job.service, %addr, "health check failed: {why}");
        }
        let now_ms = self.clock.now_ms();
        let before = self.health.down(&job.service);
        if !self
            .health
            .report(&job.service, addr, result, &job.check, now_ms)
        {
            return Ok(());
        }
        let healthy = self
            .health
            .get(&job.service, addr)
            .is_some_and(|h| h.healthy);
        tracing::info!(service = job.service, %addr, healthy, "backend health changed");
        self.happenings.push(Happening::Health {
            at_ms: now_ms,
            service: job.service.clone(),
            addr,
            healthy,
            error: self
                .health
                .get(&job.service, addr)
                .and_then(|h| h.last_error.clone()),
        });
        // Stored so that a restart starts from it; failing that costs only that.
        if let Err(e) = self.store.save_health(&self.health.record()) {
            tracing::warn!("storing backend health failed: {}", one_line(&e));
        }
        // In a fleet the fleet's view may overrule this host's result: then nothing moves.
        if self.health.down(&job.service) == before {
            return Ok(());
        }
        self.rewrite(&job.service)
    }

    /// Takes the fleet's view of its backends' health (`daemon --store`; decided by the
    /// leader from every host's checks): from now on it overrules this host's own results,
    /// and the tables of every service whose backends it moves are written again.
    pub fn overrule(
        &mut self,
        fleet: BTreeMap<String, BTreeMap<IpAddr, bool>>,
    ) -> Result<(), Error> {
        let names: Vec<String> = self.state.services.keys().cloned().collect();
        let before: BTreeMap<String, BTreeSet<IpAddr>> = names
            .iter()
            .map(|name| (name.clone(), self.health.down(name)))
            .collect();
        self.health.overrule(fleet);
        for name in names {
            let down = self.health.down(&name);
            if down != before[&name] {
                tracing::info!(
                    service = name,
                    ?down,
                    "the fleet's health view moved backends"
                );
                self.rewrite(&name)?;
            }
        }
        Ok(())
    }

    /// What this host's own health checks say of each checked backend (up: `true`).
    pub fn own_checks(&self) -> BTreeMap<String, BTreeMap<IpAddr, bool>> {
        self.health.own()
    }

    /// Compiles service `name`'s tables with the backends down now and writes them.
    fn rewrite(&mut self, name: &str) -> Result<(), Error> {
        let Some(service) = self.state.services.get(name) else {
            return Ok(());
        };
        let compiled = compile(service, self.settings.seed, &self.health.down(name))?;
        self.plane
            .write_service(service.slot, service.vip.key(), &compiled.image)?;
        self.digests
            .insert(name.to_string(), digest(&compiled.image));
        self.shares.insert(name.to_string(), compiled.shares);
        Ok(())
    }

    /// Detaches the program and removes every pin. The state file stays.
    pub fn teardown(self) -> Result<(), Error> {
        Ok(self.plane.teardown()?)
    }
}

/// Every backend the data plane holds for `state`: those in the tables and the retired.
fn backend_ids(state: &State) -> BTreeMap<BackendId, IpAddr> {
    state
        .services
        .values()
        .flat_map(|s| {
            let retired = s.retired.iter().map(|r| ((r.index, r.epoch), r.addr));
            s.backends()
                .map(|(_, b)| ((b.index, b.epoch), b.addr))
                .chain(retired)
        })
        .collect()
}

/// The services that differ between `old` and `next`, as they were and are.
fn touched(old: &State, next: &State) -> Vec<Touched> {
    let names: BTreeSet<&String> = old.services.keys().chain(next.services.keys()).collect();
    names
        .into_iter()
        .filter(|name| old.services.get(*name) != next.services.get(*name))
        .map(|name| Touched {
            name: name.clone(),
            before: old.services.get(name).cloned(),
            after: next.services.get(name).cloned(),
        })
        .collect()
}

fn indices(state: &State) -> BTreeSet<u32> {
    backend_ids(state).keys().map(|(index, _)| *index).collect()
}

fn new_backends(old: &State, next: &State) -> BTreeMap<BackendId, IpAddr> {
    let old = backend_ids(old);
    backend_ids(next)
        .into_iter()
        .filter(|(id, _)| !old.contains_key(id))
        .collect()
}

/// Splits `backends` into those reached on L2 and the tunnelled ones (with their service's
/// forwarding) of `state`.
/// The data-plane entries of one backend index, as a failed publish may have to write
/// them back.
struct Entries {
    backend: Backend,
    tunnel: Tunnel,
    rewrite: Rewrite,
}

/// Splits `backends` into those reached on L2 and the routed ones, with their service's
/// forwarding and the port they take its packets on.
fn split_routed(
    backends: BTreeMap<BackendId, IpAddr>,
    state: &State,
) -> (
    BTreeMap<BackendId, IpAddr>,
    BTreeMap<BackendId, Destination>,
) {
    let forwards = routed(state);
    let ports: BTreeMap<BackendId, u16> = state
        .services
        .values()
        .flat_map(|s| {
            let port = s.forward.backend_port(s.vip);
            let retired = s.retired.iter().map(|r| (r.index, r.epoch));
            s.backends()
                .map(|(_, b)| (b.index, b.epoch))
                .chain(retired)
                .map(move |id| (id, port))
        })
        .collect();
    let mut wire = BTreeMap::new();
    let mut routed = BTreeMap::new();
    for (id, addr) in backends {
        match (forwards.get(&id), ports.get(&id)) {
            (Some(forward), Some(port)) => {
                let forward = *forward;
                routed.insert(
                    id,
                    Destination {
                        addr,
                        forward,
                        port: *port,
                    },
                );
            }
            _ => {
                wire.insert(id, addr);
            }
        }
    }
    (wire, routed)
}

/// Each address once, in order.
fn distinct<'a>(addrs: impl Iterator<Item = &'a IpAddr>) -> Vec<IpAddr> {
    addrs
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}
