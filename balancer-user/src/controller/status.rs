//! Answering `status`: the desired state joined with what the data plane counts.

use super::Controller;
use crate::{
    api::{
        Answers, BackendStatus, GroupShare, Health, PinStatus, RetiredStatus, ServiceStatus, Status,
    },
    dataplane::FlowCounts,
    error::Error,
    state::Mode,
};

impl Controller {
    /// Status of one service or all, counting the active flows first (a walk of connection
    /// tracking: the executor counts off the lock and calls [`Controller::status_counted`]),
    /// without unanswered flows (the executor counts those over time).
    pub fn status(&self, only: Option<&str>) -> Result<Status, Error> {
        let flows = self.flows.count(self.settings.flow_idle)?;
        self.status_counted(only, &flows, &FlowCounts::new())
    }

    /// Status of one service or all, with the active and the unanswered flows (per index
    /// and epoch) counted by the caller.
    pub fn status_counted(
        &self,
        only: Option<&str>,
        flows: &FlowCounts,
        unanswered: &FlowCounts,
    ) -> Result<Status, Error> {
        if let Some(name) = only {
            self.state.service(name)?;
        }
        let mut services = Vec::new();
        for (name, service) in &self.state.services {
            if only.is_some_and(|o| o != name) {
                continue;
            }
            let split = service
                .groups
                .iter()
                .zip(service.shares()?)
                .map(|(g, percent)| GroupShare {
                    group: g.name.clone(),
                    percent,
                })
                .collect();
            let mut backends = Vec::new();
            for (g, b) in service.backends() {
                let counters = self.plane.backend_counters(b.index)?;
                let share = self
                    .shares
                    .get(name)
                    .and_then(|s| s.get(&b.addr))
                    .copied()
                    .unwrap_or(0.0);
                let health = self.health.get(name, b.addr);
                let answers = match service.forward.mode {
                    Mode::Nat | Mode::Fullnat => {
                        Some(Answers::from_stats(&self.plane.reply_counters(b.index)?))
                    }
                    _ => None,
                };
                backends.push(BackendStatus {
                    answers,
                    drain: b.drain,
                    health: self.health.healthy(name, b.addr).map(Health::of),
                    own_health: health
                        .filter(|h| Some(h.healthy) != self.health.healthy(name, b.addr))
                        .map(|h| Health::of(h.healthy)),
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
                    fin_closes: counters.fin_closes,
                    resets: counters.resets,
                    syn_retransmits: counters.syn_retransmits,
                    unanswered_flows: unanswered.get(&(b.index, b.epoch)).copied().unwrap_or(0),
                });
            }
            services.push(ServiceStatus {
                digest: self.digests.get(name).cloned().unwrap_or_default(),
                name: name.clone(),
                vip: service.vip,
                affinity: service.affinity,
                table_size: service.table_size,
                forward: service.forward,
                split,
                backends,
                canary: service.canary.clone(),
                rollout: service.rollout.clone(),
                flip_drain: service.flip_drain.clone(),
                retired: service
                    .retired
                    .iter()
                    .map(|r| RetiredStatus {
                        addr: r.addr,
                        group: r.group.clone(),
                        since_ms: r.since_ms,
                        active_flows: flows.get(&(r.index, r.epoch)).copied().unwrap_or(0),
                        health: self.health.get(name, r.addr).map(|h| match h.healthy {
                            true => Health::Up,
                            false => Health::Down,
                        }),
                    })
                    .collect(),
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
            counters: self.plane.global_counters()?,
            translations: Default::default(),
            memory: self.plane.memory()?,
            announcement: None,
            sync: None,
        })
    }
}
