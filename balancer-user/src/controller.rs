//! The daemon's core: owns the desired state and the data plane, applies every change as
//! validate → resolve → compile → persist → publish, and answers status queries.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::PathBuf,
    time::Duration,
};

use balancer_common::{Backend, MAX_BACKENDS};

use crate::{
    api::{BackendStatus, GroupShare, PinStatus, ServiceStatus, Status},
    compile::{compile, CompileError, Compiled},
    config::ConfigError,
    dataplane::{AttachOptions, DataPlane, DataPlaneError},
    health::{HealthBoard, ProbeJob},
    neighbor::{resolve, NeighborError, NextHop},
    server::now_ms,
    state::{self, format_basis_points, State, StateError},
};

/// Why a change or the start failed. One line each.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The change is invalid.
    #[error(transparent)]
    State(#[from] StateError),
    /// The configuration file is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A backend cannot be reached at L2.
    #[error(transparent)]
    Neighbor(#[from] NeighborError),
    /// A table could not be built.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// The kernel refused an operation.
    #[error(transparent)]
    DataPlane(#[from] DataPlaneError),
}

impl ControllerError {
    /// Whether the error is the operator's input (as opposed to a fault of the host).
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Self::State(_) | Self::Config(_) | Self::Neighbor(_))
    }
}

/// Settings of a controller.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Data-plane attachment.
    pub attach: AttachOptions,
    /// The state file.
    pub state_file: PathBuf,
    /// Seed of the flow hash (same on every host of a fleet).
    pub seed: u64,
    /// A tracked flow counts as active while it saw a packet within this time.
    pub flow_idle: Duration,
}

/// The daemon's core.
pub struct Controller {
    config: ControllerConfig,
    state: State,
    health: HealthBoard,
    next_drain_check_ms: u64,
    dataplane: DataPlane,
    shares: BTreeMap<String, BTreeMap<IpAddr, f64>>,
}

type BackendId = (u32, u32);

/// How often draining backends' active flows are counted.
const DRAIN_CHECK_MS: u64 = 1000;

impl Controller {
    /// Loads the state file, attaches (or re-attaches) the data plane and brings it in line
    /// with the state. Established flows are untouched: the tables are rebuilt identically
    /// from the same state, and connection tracking lives in pinned maps.
    pub fn start(config: ControllerConfig) -> Result<Self, ControllerError> {
        let state = state::load(&config.state_file)?;
        let dataplane = DataPlane::attach(&config.attach)?;
        let mut health = HealthBoard::default();
        // Backends that were serving before a restart keep serving until checks say
        // otherwise.
        health.sync(&state, now_ms(), true);
        let mut controller = Self {
            config,
            state: State::default(),
            health,
            next_drain_check_ms: 0,
            dataplane,
            shares: BTreeMap::new(),
        };
        controller.reconcile(state)?;
        Ok(controller)
    }

    /// Whether start found the program already attached.
    pub fn reattached(&self) -> bool {
        self.dataplane.reattached()
    }

    /// The desired state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Applies `change` to a copy of the state; if it and everything it implies succeeds,
    /// persists the result and publishes it. On any error nothing is changed.
    pub fn change<T, E: Into<ControllerError>>(
        &mut self,
        change: impl FnOnce(&mut State) -> Result<T, E>,
    ) -> Result<T, ControllerError> {
        let mut next = self.state.clone();
        let out = change(&mut next).map_err(Into::into)?;
        next.validate()?;
        let mut health = self.health.clone();
        health.sync(&next, now_ms(), false);
        let added = new_backends(&self.state, &next);
        let hops = added
            .iter()
            .map(|(id, addr)| Ok((*id, resolve(*addr)?)))
            .collect::<Result<BTreeMap<_, _>, NeighborError>>()?;
        let compiled = self.compile_changed(&next, &health, false)?;
        state::save(&self.config.state_file, &next)?;
        self.publish(&next, &hops, compiled)?;
        self.state = next;
        self.health = health;
        Ok(out)
    }

    fn reconcile(&mut self, target: State) -> Result<(), ControllerError> {
        let mut hops = BTreeMap::new();
        for service in target.services.values() {
            for (_, b) in service.backends() {
                match resolve(b.addr) {
                    Ok(hop) => {
                        hops.insert((b.index, b.epoch), hop);
                    }
                    Err(e) => {
                        // Keep whatever the data plane has for it (e.g. after a restart
                        // while the backend's neighbour entry expired).
                        let existing = self.dataplane.backend(b.index)?;
                        if existing.epoch != b.epoch {
                            tracing::warn!("backend {} not reachable at start: {e}", b.addr);
                        }
                    }
                }
            }
        }
        let compiled = self.compile_changed(&target, &self.health, true)?;
        self.publish(&target, &hops, compiled)?;
        // Remove what the data plane has beyond the state (a crash between steps).
        let wanted_vips: std::collections::HashSet<_> =
            target.services.values().map(|s| s.vip.key()).collect();
        for (vip, _) in self.dataplane.vips()? {
            if !wanted_vips.contains(&vip) {
                self.dataplane.remove_vip(&vip)?;
            }
        }
        let wanted: BTreeSet<BackendId> = backend_ids(&target).into_keys().collect();
        for index in 0..MAX_BACKENDS {
            let entry = self.dataplane.backend(index)?;
            if entry.epoch != 0 && !wanted.contains(&(index, entry.epoch)) {
                self.dataplane.clear_backend(index)?;
            }
        }
        self.state = target;
        Ok(())
    }

    fn compile_changed(
        &self,
        next: &State,
        health: &HealthBoard,
        all: bool,
    ) -> Result<BTreeMap<String, Compiled>, ControllerError> {
        next.services
            .iter()
            .filter(|(name, service)| {
                all || self.state.services.get(*name) != Some(service)
                    || health.down(name) != self.health.down(name)
            })
            .map(|(name, service)| {
                let compiled = compile(service, self.config.seed, &health.down(name))?;
                Ok((name.clone(), compiled))
            })
            .collect()
    }

    /// Writes a new state to the data plane in an order that never exposes a half-made
    /// change: backends before the tables that name them, tables before their VIP, and a
    /// removed backend's entry only after no table names it.
    fn publish(
        &mut self,
        next: &State,
        hops: &BTreeMap<BackendId, NextHop>,
        compiled: BTreeMap<String, Compiled>,
    ) -> Result<(), ControllerError> {
        let old_ids = backend_ids(&self.state);
        for (&(index, epoch), hop) in hops {
            let backend = Backend {
                dst_mac: hop.dst_mac,
                src_mac: hop.src_mac,
                ifindex: hop.ifindex,
                epoch,
                reserved: 0,
            };
            let existing = self.dataplane.backend(index)?;
            let fresh = existing.epoch != epoch && !old_ids.contains_key(&(index, epoch));
            self.dataplane.set_backend(index, &backend, fresh)?;
        }
        for (name, service) in &self.state.services {
            if next.services.get(name).map(|s| s.vip) != Some(service.vip) {
                self.dataplane.remove_vip(&service.vip.key())?;
            }
        }
        for (name, c) in compiled {
            let service = &next.services[&name];
            self.dataplane
                .write_service(service.slot, service.vip.key(), &c.image)?;
            self.shares.insert(name, c.shares);
        }
        self.shares
            .retain(|name, _| next.services.contains_key(name));
        let new_ids = backend_ids(next);
        // An index freed and handed to a new backend in the same change already holds the
        // new backend's entry (written first): only indices nobody uses any more are cleared.
        let in_use: BTreeSet<u32> = new_ids.keys().map(|(index, _)| *index).collect();
        for (index, _) in old_ids.keys() {
            if !in_use.contains(index) {
                self.dataplane.clear_backend(*index)?;
            }
        }
        Ok(())
    }

    /// Takes the canary steps that are due (a no-op, no write, when none is) and returns
    /// the health checks that are due.
    pub fn tick(&mut self, now_ms: u64) -> Result<Vec<ProbeJob>, ControllerError> {
        if self.state.canary_due(now_ms) {
            self.change(|s| s.advance_canaries(now_ms))?;
        }
        self.auto_rollback(now_ms)?;
        self.step_operations(now_ms)?;
        self.end_flip_drains(now_ms)?;
        Ok(self.health.due(&self.state, now_ms))
    }

    /// Ends the flip drains that are due: the old groups' tracked flows are forgotten.
    fn end_flip_drains(&mut self, now_ms: u64) -> Result<(), ControllerError> {
        for (name, ids) in self.state.flip_drains_due(now_ms) {
            let forgotten = self.dataplane.forget_flows(&ids.into_iter().collect())?;
            tracing::info!(
                service = name,
                forgotten,
                "flip drain timeout: old flows forgotten"
            );
            self.change(|s| s.end_flip_drain(&name))?;
        }
        Ok(())
    }

    /// Moves rollouts forward and ends finished drains (active flows are counted at most
    /// once a second: it walks connection tracking).
    fn step_operations(&mut self, now_ms: u64) -> Result<(), ControllerError> {
        // Ticks come every 100 ms: copy the state only when there is something to step.
        if !self.state.rollout_running() && !self.state.draining() {
            return Ok(());
        }
        let mut next = self.state.clone();
        let health = &self.health;
        next.step_rollouts(now_ms, |service, addr| {
            health.get(service, addr).is_some_and(|h| h.healthy)
        })?;
        if next.draining() && now_ms >= self.next_drain_check_ms {
            self.next_drain_check_ms = now_ms + DRAIN_CHECK_MS;
            let counts = self.dataplane.active_flows(self.config.flow_idle)?;
            next.check_drains(now_ms, |index, epoch| {
                counts.get(&(index, epoch)).copied().unwrap_or(0)
            });
        }
        if next != self.state {
            self.change(move |s| {
                *s = next;
                Ok::<(), StateError>(())
            })?;
        }
        Ok(())
    }

    /// Rolls back every canary whose new group has too many backends failing their checks.
    fn auto_rollback(&mut self, now_ms: u64) -> Result<(), ControllerError> {
        for (name, group, threshold) in self.state.rollback_watches() {
            let Ok(service) = self.state.service(&name) else {
                continue;
            };
            let Some(g) = service.group_index(&group) else {
                continue;
            };
            let members: Vec<IpAddr> = service.groups[g].backends.iter().map(|b| b.addr).collect();
            let down = self.health.down(&name);
            let failing = members.iter().filter(|a| down.contains(a)).count();
            if members.is_empty() || failing * 10_000 < threshold as usize * members.len() {
                continue;
            }
            let why = format!(
                "{failing} of {} backends of {group} fail their health checks (threshold {}%)",
                members.len(),
                format_basis_points(threshold)
            );
            tracing::warn!(service = name, "canary rolled back: {why}");
            self.change(|s| s.roll_back_canary(&name, why, now_ms))?;
        }
        Ok(())
    }

    /// Records a health-check result. A backend that goes down or comes back changes its
    /// service's tables in one atomic write, like a weight change; the state file is not
    /// touched (health is observed, not desired).
    pub fn report_probe(
        &mut self,
        job: &ProbeJob,
        result: Result<(), String>,
        now_ms: u64,
    ) -> Result<(), ControllerError> {
        let addr = job.target.ip();
        if let Err(why) = &result {
            tracing::debug!(service = job.service, %addr, "health check failed: {why}");
        }
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
        let Some(service) = self.state.services.get(&job.service) else {
            return Ok(());
        };
        let compiled = compile(service, self.config.seed, &self.health.down(&job.service))?;
        self.dataplane
            .write_service(service.slot, service.vip.key(), &compiled.image)?;
        self.shares.insert(job.service.clone(), compiled.shares);
        Ok(())
    }

    /// Status of one service or all.
    pub fn status(&self, only: Option<&str>) -> Result<Status, ControllerError> {
        if let Some(name) = only {
            self.state.service(name)?;
        }
        let flows = self.dataplane.active_flows(self.config.flow_idle)?;
        let mut services = Vec::new();
        for (name, service) in &self.state.services {
            if only.is_some_and(|o| o != name) {
                continue;
            }
            let shares = service.shares()?;
            let split = service
                .groups
                .iter()
                .zip(&shares)
                .map(|(g, s)| GroupShare {
                    group: g.name.clone(),
                    percent: format_basis_points(*s),
                })
                .collect();
            let mut backends = Vec::new();
            for (g, b) in service.backends() {
                let counters = self.dataplane.backend_counters(b.index)?;
                let share = self
                    .shares
                    .get(name)
                    .and_then(|s| s.get(&b.addr))
                    .copied()
                    .unwrap_or(0.0);
                let health = self.health.get(name, b.addr);
                backends.push(BackendStatus {
                    drain: b.drain,
                    health: health.map(|h| if h.healthy { "up" } else { "down" }.to_string()),
                    health_changed_at_ms: health.and_then(|h| h.last_change_ms),
                    health_error: health.and_then(|h| h.last_error.clone()),
                    addr: b.addr,
                    group: service.groups[g].name.clone(),
                    weight: b.weight,
                    effective_share: (share * 10_000.0).round() / 100.0,
                    new_flows: counters.new_flows,
                    packets: counters.packets,
                    bytes: counters.bytes,
                    active_flows: flows.get(&(b.index, b.epoch)).copied().unwrap_or(0),
                });
            }
            services.push(ServiceStatus {
                name: name.clone(),
                vip: service.vip,
                affinity: service.affinity,
                table_size: service.table_size,
                split,
                backends,
                canary: service.canary.clone(),
                rollout: service.rollout.clone(),
                flip_drain: service.flip_drain.clone(),
                pins: service
                    .pins
                    .iter()
                    .map(|p| PinStatus {
                        cidr: p.cidr.to_string(),
                        group: p.group.clone(),
                    })
                    .collect(),
            });
        }
        Ok(Status {
            services,
            counters: self.dataplane.global_counters()?,
        })
    }

    /// Detaches the program and removes every pin. The state file stays.
    pub fn teardown(self) -> Result<(), ControllerError> {
        Ok(self.dataplane.teardown()?)
    }
}

fn backend_ids(state: &State) -> BTreeMap<BackendId, IpAddr> {
    state
        .services
        .values()
        .flat_map(|s| s.backends().map(|(_, b)| ((b.index, b.epoch), b.addr)))
        .collect()
}

fn new_backends(old: &State, next: &State) -> BTreeMap<BackendId, IpAddr> {
    let old = backend_ids(old);
    backend_ids(next)
        .into_iter()
        .filter(|(id, _)| !old.contains_key(id))
        .collect()
}
