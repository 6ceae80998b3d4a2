//! Driving the release strategies on the controller's clock: canary steps and automatic
//! rollbacks, rollout phases, drain ends, and flip drain deadlines. Each tick writes only
//! when a strategy wants a change.

use std::net::IpAddr;

use super::Controller;
use crate::{
    error::Error,
    health::CheckJob,
    release::{canary, drain, flip, rollout},
    state::{State, StateError},
};

/// How often draining backends' active flows are counted (it walks connection tracking).
const DRAIN_CHECK_MS: u64 = 1000;

/// How often the ports of former VIPs are checked for active flows (it walks connection
/// tracking while such a port lingers in the data plane's pre-filter).
const VIP_PORT_CHECK_MS: u64 = 10_000;

impl Controller {
    /// Takes the steps that are due (a no-op, no write, when none is) and returns the
    /// health checks that are due.
    pub fn tick(&mut self) -> Result<Vec<CheckJob>, Error> {
        let now_ms = self.clock.now_ms();
        if canary::any_due(&self.state, now_ms) {
            self.change(canary::step_due)?;
        }
        self.auto_rollback()?;
        self.step_operations(now_ms)?;
        self.end_flip_drains(now_ms)?;
        self.close_idle_vip_ports(now_ms)?;
        Ok(self.health.due(&self.state, now_ms))
    }

    /// Every [`VIP_PORT_CHECK_MS`], lets the data plane take the ports of former VIPs
    /// without active flows out of its pre-filter.
    fn close_idle_vip_ports(&mut self, now_ms: u64) -> Result<(), Error> {
        if now_ms < self.next_vip_port_check_ms {
            return Ok(());
        }
        self.next_vip_port_check_ms = now_ms + VIP_PORT_CHECK_MS;
        for (port, proto) in self.plane.close_idle_vip_ports(self.settings.flow_idle)? {
            tracing::info!(
                port,
                proto,
                "former VIP port without flows: no longer tracked"
            );
        }
        Ok(())
    }

    /// Ends the flip drains that are due; a cut one forgets the old groups' tracked flows.
    fn end_flip_drains(&mut self, now_ms: u64) -> Result<(), Error> {
        for flip::Due {
            service: name,
            cut,
            backends,
        } in flip::due(&self.state, now_ms)
        {
            if cut {
                let forgotten = self.plane.forget_flows(&backends.into_iter().collect())?;
                tracing::info!(
                    service = name,
                    forgotten,
                    "flip drain cut: old flows forgotten"
                );
            } else {
                tracing::info!(
                    service = name,
                    "flip drain over: old flows kept until they end"
                );
            }
            self.change(|s, _| flip::end(s, &name))?;
        }
        Ok(())
    }

    /// Moves rollouts forward, ends finished drains and retirements that are over (active
    /// flows are counted at most once a second).
    fn step_operations(&mut self, now_ms: u64) -> Result<(), Error> {
        let retiring = |s: &State| s.services.values().any(|s| !s.retired.is_empty());
        // Ticks come every 100 ms: copy the state only when there is something to step.
        if !rollout::any_running(&self.state)
            && !drain::any_running(&self.state)
            && !retiring(&self.state)
        {
            return Ok(());
        }
        let mut next = self.state.clone();
        let health = &self.health;
        rollout::step_all(&mut next, now_ms, |service: &str, addr: IpAddr| {
            health.get(service, addr).is_some_and(|h| h.healthy)
        })?;
        if (drain::any_running(&next) || retiring(&next)) && now_ms >= self.next_drain_check_ms {
            self.next_drain_check_ms = now_ms + DRAIN_CHECK_MS;
            let counts = self.plane.active_flows(self.settings.flow_idle)?;
            let active = |index, epoch| counts.get(&(index, epoch)).copied().unwrap_or(0);
            drain::check(&mut next, now_ms, active);
            let timeout_ms =
                u64::try_from(self.settings.retire_timeout.as_millis()).unwrap_or(u64::MAX);
            let dead = |service: &str, addr| health.get(service, addr).is_some_and(|h| !h.healthy);
            for (service, addr, why) in next.end_retirements(now_ms, timeout_ms, active, dead) {
                tracing::info!(service, %addr, ?why, "retired backend gone");
            }
        }
        if next != self.state {
            self.change(move |s, _| {
                *s = next;
                Ok::<(), StateError>(())
            })?;
        }
        Ok(())
    }

    /// Rolls back every canary whose new group has too many backends failing their checks.
    fn auto_rollback(&mut self) -> Result<(), Error> {
        let mut verdicts = Vec::new();
        for (name, service) in &self.state.services {
            let Some(canary) = &service.canary else {
                continue;
            };
            let Some(g) = service.group_index(&canary.to) else {
                continue;
            };
            let down = self.health.down(name);
            let members = &service.groups[g].backends;
            let failing = members.iter().filter(|b| down.contains(&b.addr)).count();
            if let Some(why) = canary.rollback_reason(members.len(), failing) {
                verdicts.push((name.clone(), why));
            }
        }
        for (name, why) in verdicts {
            tracing::warn!(service = name, "canary rolled back: {why}");
            self.change(|s, now_ms| canary::roll_back(s, &name, why, now_ms))?;
        }
        Ok(())
    }
}
