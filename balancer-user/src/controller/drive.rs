//! Driving the release strategies on the controller's clock: canary steps and automatic
//! rollbacks, rollout phases, drain ends, and flip drain deadlines. Each tick writes only
//! when a strategy wants a change.

use std::net::IpAddr;

use super::Controller;
use crate::{
    dataplane::FlowCounts,
    error::Error,
    health::CheckJob,
    release::{analysis::Question, canary, drain, flip, rollout},
    state::{State, StateError},
};

/// Whether some service has retired backends.
fn retiring(state: &State) -> bool {
    state.services.values().any(|s| !s.retired.is_empty())
}

/// How often draining backends' active flows are counted (it walks connection tracking).
const DRAIN_CHECK_MS: u64 = 1000;

/// What a tick leaves to its caller.
#[derive(Debug, Default)]
pub struct Tick {
    /// The health checks that are due.
    pub checks: Vec<CheckJob>,
    /// Backends that a due step adds and the kernel does not locate yet: the step waits
    /// for a later tick, once they are resolved off the lock.
    pub locate: Vec<IpAddr>,
    /// Questions of canary analyses for external gates, to be asked off the lock and
    /// answered through [`Controller::answer`].
    pub questions: Vec<Question>,
}

/// How often the ports of former VIPs are checked for active flows (it walks connection
/// tracking while such a port lingers in the data plane's pre-filter).
const VIP_PORT_CHECK_MS: u64 = 10_000;

impl Controller {
    /// Takes the steps that are due (a no-op, no write, when none is) and returns the
    /// health checks that are due, counting the active flows itself when drains or retired
    /// backends need them (the executor counts off the lock: [`Controller::tick_counted`]).
    pub fn tick(&mut self) -> Result<Tick, Error> {
        let flows = match self.counting_due() {
            true => Some(self.flows.count(self.settings.flow_idle)?),
            false => None,
        };
        self.tick_counted(flows, Some(&FlowCounts::new()), true)
    }

    /// Whether the next tick wants the active flows counted (for drains and retired
    /// backends, at most once a second).
    pub fn counting_due(&self) -> bool {
        self.clock.now_ms() >= self.next_drain_check_ms
            && (drain::any_running(&self.state) || retiring(&self.state))
    }

    /// Like [`Controller::tick`], with the active flows counted by the caller when
    /// [`Controller::counting_due`] said so, and the unanswered flows when
    /// [`Controller::sampling_due`] said so; without them, drains, retirements and analysis
    /// windows wait for a tick that has them. Only a daemon that `drives` (alone, or the
    /// fleet's leader) takes the release strategies' steps; every one runs its health
    /// checks and its own upkeep of the data plane.
    pub fn tick_counted(
        &mut self,
        flows: Option<FlowCounts>,
        unanswered: Option<&FlowCounts>,
        drives: bool,
    ) -> Result<Tick, Error> {
        let now_ms = self.clock.now_ms();
        let mut locate = Vec::new();
        if drives {
            self.drive(now_ms, flows, unanswered, &mut locate)?;
        }
        deferred(self.close_idle_vip_ports(now_ms), &mut locate)?;
        Ok(Tick {
            checks: self.health.due(&self.state, now_ms),
            locate,
            questions: self.new_questions(),
        })
    }

    /// The release strategies' steps that are due: analyses, canary steps and automatic
    /// rollbacks, rollouts, drains and retirements, flip drain ends.
    fn drive(
        &mut self,
        now_ms: u64,
        flows: Option<FlowCounts>,
        unanswered: Option<&FlowCounts>,
        locate: &mut Vec<IpAddr>,
    ) -> Result<(), Error> {
        deferred(self.analyse(now_ms, unanswered), locate)?;
        if canary::any_due(&self.state, now_ms) {
            deferred(self.change(canary::step_due), locate)?;
        }
        deferred(self.auto_rollback(), locate)?;
        deferred(self.step_operations(now_ms, flows.as_ref()), locate)?;
        deferred(self.end_flip_drains(now_ms), locate)
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
    fn step_operations(&mut self, now_ms: u64, flows: Option<&FlowCounts>) -> Result<(), Error> {
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
            health.healthy(service, addr).unwrap_or(false)
        })?;
        let counting =
            (drain::any_running(&next) || retiring(&next)) && now_ms >= self.next_drain_check_ms;
        if let Some(counts) = flows.filter(|_| counting) {
            self.next_drain_check_ms = now_ms + DRAIN_CHECK_MS;
            let active = |index, epoch| counts.get(&(index, epoch)).copied().unwrap_or(0);
            let cut = drain::check(&mut next, now_ms, active);
            if !cut.is_empty() {
                let forgotten = self.plane.forget_flows(&cut.into_iter().collect())?;
                tracing::info!(forgotten, "cut drains ended: their flows are re-balanced");
            }
            let timeout_ms =
                u64::try_from(self.settings.retire_timeout.as_millis()).unwrap_or(u64::MAX);
            let dead = |service: &str, addr| health.healthy(service, addr) == Some(false);
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

/// A step that waits for backends to be located is not an error: it is taken later.
fn deferred(result: Result<(), Error>, locate: &mut Vec<IpAddr>) -> Result<(), Error> {
    match result {
        Err(Error::Unlocated(addrs)) => {
            locate.extend(addrs);
            Ok(())
        }
        other => other,
    }
}
