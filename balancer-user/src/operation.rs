//! Every operation the daemon takes, as one type shared by the CLI, the client and the
//! server. The CLI builds an [`Operation`], the client sends it ([`wire`]), the server
//! decodes the same type and runs it; a [`Change`] applies itself to the desired state.
//!
//! Adding an operation touches the CLI syntax, this enum (with its route in [`wire`]) and
//! the state change it makes.

pub mod wire;

use std::net::IpAddr;

use ipnet::IpNet;

use crate::{
    api::{AddBackend, AddService},
    basis_points::BasisPoints,
    config::Config,
    error::Refused,
    history::Query,
    release::{
        canary::{self, CanaryAction, CanaryPlan},
        drain, flip,
        rollout::{self, RolloutPlan},
    },
    state::{Forward, HealthCheck, Service, State},
};

/// One request to the daemon.
#[derive(Clone, Debug, PartialEq)]
pub enum Operation {
    /// Status of one service or all.
    Status {
        /// Only this service.
        service: Option<String>,
    },
    /// The desired state as TOML.
    Export,
    /// The hosts of the daemon's fleet (`balancer fleet status`).
    Fleet,
    /// This host withdraws its VIPs' announcements for maintenance (`balancer fleet leave`).
    Leave,
    /// This host announces its VIPs again (`balancer fleet join`).
    Join,
    /// Detach the data plane and stop the daemon.
    Teardown,
    /// Events of the history.
    Events(Query),
    /// A change of the desired state.
    Change(Change),
}

/// A change of the desired state.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Add a service (with its health checks).
    AddService(AddService),
    /// Set or remove a service's health checks.
    SetHealth {
        /// Service.
        service: String,
        /// The checks; none stops checking.
        health: Option<HealthCheck>,
    },
    /// Set how packets reach a service's backends (only while it has none).
    SetForward {
        /// Service.
        service: String,
        /// The forwarding.
        forward: Forward,
    },
    /// Remove a service.
    RemoveService {
        /// Service.
        service: String,
    },
    /// Add a backend.
    AddBackend {
        /// Service.
        service: String,
        /// The backend.
        backend: AddBackend,
    },
    /// Change a backend's weight.
    SetWeight {
        /// Service.
        service: String,
        /// Backend.
        addr: IpAddr,
        /// New weight.
        weight: u16,
    },
    /// Drain a backend.
    Drain {
        /// Service.
        service: String,
        /// Backend.
        addr: IpAddr,
        /// Stop waiting for its flows after this long, milliseconds.
        timeout_ms: Option<u64>,
        /// Re-balance the flows left at the drain's end.
        cut: bool,
    },
    /// End a backend's drain: it gets back the weight the drain replaced.
    Undrain {
        /// Service.
        service: String,
        /// Backend.
        addr: IpAddr,
    },
    /// Remove a backend: it retires (its flows still reach it), or with `cut` its flows
    /// are re-balanced now.
    RemoveBackend {
        /// Service.
        service: String,
        /// Backend.
        addr: IpAddr,
        /// Re-balance its flows now.
        cut: bool,
    },
    /// Set the split.
    Split {
        /// Service.
        service: String,
        /// Group shares; unnamed groups get 0.
        shares: Vec<(String, BasisPoints)>,
    },
    /// Blue-green flip.
    Flip {
        /// Service.
        service: String,
        /// The group that takes every new flow.
        to: String,
        /// Watch the old groups' flows this long, milliseconds.
        drain_timeout_ms: Option<u64>,
        /// Re-balance the old groups' flows at the drain timeout (at once without one).
        cut: bool,
    },
    /// Pin a client prefix to a group.
    AddPin {
        /// Service.
        service: String,
        /// Client prefix.
        cidr: IpNet,
        /// Group.
        group: String,
    },
    /// Remove a client pin.
    RemovePin {
        /// Service.
        service: String,
        /// Client prefix.
        cidr: IpNet,
    },
    /// Start a canary.
    StartCanary {
        /// Service.
        service: String,
        /// The plan.
        plan: CanaryPlan,
    },
    /// Pause, resume, promote or abort a canary.
    Canary {
        /// Service.
        service: String,
        /// What to do.
        action: CanaryAction,
    },
    /// Start a rolling replacement.
    StartRollout {
        /// Service.
        service: String,
        /// The plan.
        plan: RolloutPlan,
    },
    /// Abort a rolling replacement.
    AbortRollout {
        /// Service.
        service: String,
    },
    /// Make the desired state what a TOML configuration says.
    Apply {
        /// The configuration text.
        toml: String,
    },
}

impl Change {
    /// Applies the change to `state` at `now_ms`; on error `state` is to be discarded.
    pub fn apply(&self, state: &mut State, now_ms: u64) -> Result<(), Refused> {
        match self {
            Change::AddService(s) => {
                state.add_service(&s.name, s.vip, s.affinity, s.table_size)?;
                state.set_health(&s.name, s.health.clone())?;
                state.set_forward(&s.name, s.forward)?;
            }
            Change::SetForward { service, forward } => state.set_forward(service, *forward)?,
            Change::SetHealth { service, health } => state.set_health(service, health.clone())?,
            Change::RemoveService { service } => {
                state.remove_service(service)?;
            }
            Change::AddBackend { service, backend } => {
                let weight = backend.weight.unwrap_or(crate::state::DEFAULT_WEIGHT);
                state.add_backend(service, backend.addr, &backend.group, weight)?
            }
            Change::SetWeight {
                service,
                addr,
                weight,
            } => state.set_weight(service, *addr, *weight)?,
            Change::Drain {
                service,
                addr,
                timeout_ms,
                cut,
            } => drain::start(state, service, *addr, *timeout_ms, *cut, now_ms)?,
            Change::Undrain { service, addr } => drain::undrain(state, service, *addr)?,
            Change::RemoveBackend { service, addr, cut } => {
                state.remove_backend(service, *addr, *cut, now_ms)?
            }
            Change::Split { service, shares } => {
                canary::override_by(state, service, "the operator's split", now_ms)?;
                state.set_split(service, shares)?
            }
            Change::Flip {
                service,
                to,
                drain_timeout_ms,
                cut,
            } => {
                let what = format!("the operator's flip to {to}");
                canary::override_by(state, service, &what, now_ms)?;
                flip::flip(state, service, to, *drain_timeout_ms, *cut, now_ms)?
            }
            Change::AddPin {
                service,
                cidr,
                group,
            } => state.add_pin(service, *cidr, group)?,
            Change::RemovePin { service, cidr } => state.remove_pin(service, *cidr)?,
            Change::StartCanary { service, plan } => {
                canary::start(state, service, plan.clone(), now_ms)?
            }
            Change::Canary { service, action } => canary::act(state, service, *action, now_ms)?,
            Change::StartRollout { service, plan } => {
                rollout::start(state, service, plan.clone(), now_ms)?
            }
            Change::AbortRollout { service } => rollout::abort(state, service, now_ms)?,
            Change::Apply { toml } => {
                let before = state.clone();
                Config::parse(toml)?.apply_to(state, now_ms)?;
                override_changed_splits(&before, state, now_ms)?;
            }
        }
        Ok(())
    }
}

/// The groups of `service` that hold a share of new flows, with their shares.
fn held_shares(service: &Service) -> Result<Vec<(String, BasisPoints)>, Refused> {
    Ok(service
        .groups
        .iter()
        .zip(service.shares()?)
        .filter(|(_, share)| *share > BasisPoints::ZERO)
        .map(|(group, share)| (group.name.clone(), share))
        .collect())
}

/// Ends the running canaries of services whose split an apply changed (from `before` to
/// `state`): the file's split is the operator's.
fn override_changed_splits(before: &State, state: &mut State, now_ms: u64) -> Result<(), Refused> {
    let mut changed = Vec::new();
    for (name, service) in &state.services {
        if let Some(old) = before.services.get(name) {
            if held_shares(old)? != held_shares(service)? {
                changed.push(name.clone());
            }
        }
    }
    for name in changed {
        canary::override_by(state, &name, "the operator's apply", now_ms)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
