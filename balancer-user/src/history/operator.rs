//! How an operator's change reads in the history: a few words per [`Change`].

use crate::{operation::Change, release::canary::CanaryAction, state::CheckKind};

use super::summary::millis;

/// The service `change` is about; none for an apply (it may touch any).
pub fn service(change: &Change) -> Option<&str> {
    Some(match change {
        Change::AddService(s) => &s.name,
        Change::SetHealth { service, .. }
        | Change::SetForward { service, .. }
        | Change::RemoveService { service }
        | Change::AddBackend { service, .. }
        | Change::SetWeight { service, .. }
        | Change::Drain { service, .. }
        | Change::Undrain { service, .. }
        | Change::RemoveBackend { service, .. }
        | Change::Split { service, .. }
        | Change::Flip { service, .. }
        | Change::AddPin { service, .. }
        | Change::RemovePin { service, .. }
        | Change::StartCanary { service, .. }
        | Change::Canary { service, .. }
        | Change::StartRollout { service, .. }
        | Change::AbortRollout { service } => service,
        Change::Apply { .. } => return None,
    })
}

/// What `change` does, in a few words.
pub fn what(change: &Change) -> String {
    match change {
        Change::AddService(s) => format!("service added ({}, {} affinity)", s.vip, s.affinity),
        Change::SetHealth {
            health: Some(check),
            ..
        } => {
            let kind = match &check.kind {
                CheckKind::Tcp => "tcp".to_string(),
                CheckKind::Http { path } => format!("http {path}"),
            };
            format!("health checks set ({kind})")
        }
        Change::SetHealth { health: None, .. } => "health checks removed".into(),
        Change::SetForward { forward, .. } => format!("forwarding set ({forward})"),
        Change::RemoveService { .. } => "service removed".into(),
        Change::AddBackend { backend, .. } => {
            format!("backend {} added to {}", backend.addr, backend.group)
        }
        Change::SetWeight { addr, weight, .. } => format!("weight of {addr} set to {weight}"),
        Change::Drain {
            addr,
            timeout_ms,
            cut,
            ..
        } => {
            let mut what = format!("drain of {addr} started");
            if let Some(t) = timeout_ms {
                what.push_str(&format!(", timeout {}", millis(*t)));
            }
            if *cut {
                what.push_str(", cut at its end");
            }
            what
        }
        Change::Undrain { addr, .. } => format!("drain of {addr} undone"),
        Change::RemoveBackend { addr, cut, .. } => match cut {
            true => format!("backend {addr} removed, its flows cut"),
            false => format!("backend {addr} removed"),
        },
        Change::Split { shares, .. } => {
            let shares: Vec<String> = shares.iter().map(|(g, s)| format!("{g}={s}%")).collect();
            format!("split set to {}", shares.join(" "))
        }
        Change::Flip {
            to,
            drain_timeout_ms,
            cut,
            ..
        } => {
            let mut what = format!("flipped to {to}");
            if let Some(t) = drain_timeout_ms {
                what.push_str(&format!(", flip drain {}", millis(*t)));
            }
            if *cut {
                what.push_str(", old flows cut");
            }
            what
        }
        Change::AddPin { cidr, group, .. } => format!("pin {cidr} to {group} added"),
        Change::RemovePin { cidr, .. } => format!("pin {cidr} removed"),
        Change::StartCanary { plan, .. } => {
            let steps: Vec<String> = plan.steps.iter().map(|s| format!("{s}%")).collect();
            let mut what = format!(
                "canary started from {} to {}: steps {}",
                plan.from,
                plan.to,
                steps.join(",")
            );
            if plan.steps.len() > 1 {
                what.push_str(&format!(" every {}", millis(plan.interval_ms)));
            }
            what
        }
        Change::Canary { action, .. } => match action {
            CanaryAction::Pause => "canary paused",
            CanaryAction::Resume => "canary resumed",
            CanaryAction::Promote => "canary promoted",
            CanaryAction::Abort => "canary aborted",
        }
        .into(),
        Change::StartRollout { plan, .. } => {
            let pairs: Vec<String> = plan.pairs.iter().map(|(o, n)| format!("{o}={n}")).collect();
            format!("rollout of {} started: {}", plan.group, pairs.join(" "))
        }
        Change::AbortRollout { .. } => "rollout aborted".into(),
        Change::Apply { .. } => "configuration applied".into(),
    }
}
