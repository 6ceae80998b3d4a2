//! Blue-green flip: every new flow goes to one group from the next packet on, in one
//! atomic split change; established flows stay on their backends. Flipping back is the
//! instant rollback. With a drain timeout, flows still on the previous groups are kept only
//! that long.

use serde::{Deserialize, Serialize};

use crate::{
    basis_points::BasisPoints,
    state::{State, StateError},
};

/// The end of a flip's drain: at `deadline_ms`, tracked flows on the backends of `groups`
/// are forgotten, so their next packets are balanced like new flows (onto the live group).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlipDrain {
    /// Groups that had new flows before the flip.
    pub groups: Vec<String>,
    /// Unix milliseconds.
    pub deadline_ms: u64,
}

impl FlipDrain {
    /// Whether the deadline has come at `now_ms`.
    pub fn due(&self, now_ms: u64) -> bool {
        self.deadline_ms <= now_ms
    }
}

/// Flips `service` to `group`. Flipping to the group that already has 100% is refused, so
/// a mistyped rollback is noticed.
pub fn flip(
    state: &mut State,
    service: &str,
    group: &str,
    drain_timeout_ms: Option<u64>,
    now_ms: u64,
) -> Result<(), StateError> {
    let drain_timeout_ms =
        crate::duration::check_optional("the flip's drain timeout", drain_timeout_ms)?;
    let svc = state.service(service)?;
    let g = svc
        .group_index(group)
        .ok_or_else(|| StateError::UnknownGroup(group.to_string(), service.to_string()))?;
    let shares = svc.shares()?;
    if shares[g] == BasisPoints::ALL {
        return Err(StateError::AlreadyLive(
            group.to_string(),
            service.to_string(),
        ));
    }
    let previous: Vec<String> = svc
        .groups
        .iter()
        .zip(&shares)
        .filter(|(other, share)| **share > BasisPoints::ZERO && other.name != group)
        .map(|(other, _)| other.name.clone())
        .collect();
    state.set_split(service, &[(group.to_string(), BasisPoints::ALL)])?;
    state.service_mut(service)?.flip_drain = drain_timeout_ms.map(|t| FlipDrain {
        groups: previous,
        deadline_ms: now_ms.saturating_add(t),
    });
    Ok(())
}

/// Services whose flip drain is due at `now_ms`, with the (index, epoch) of the backends
/// whose flows are to be forgotten.
pub fn due(state: &State, now_ms: u64) -> Vec<(String, Vec<(u32, u32)>)> {
    state
        .services
        .iter()
        .filter_map(|(name, s)| {
            let drain = s.flip_drain.as_ref().filter(|d| d.due(now_ms))?;
            let ids = s
                .backends()
                .filter(|(g, _)| drain.groups.contains(&s.groups[*g].name))
                .map(|(_, b)| (b.index, b.epoch))
                .collect();
            Some((name.clone(), ids))
        })
        .collect()
}

/// Marks the flip drain of `service` as done.
pub fn end(state: &mut State, service: &str) -> Result<(), StateError> {
    state.service_mut(service)?.flip_drain = None;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::{sample, shares_of};

    #[test]
    fn flip_with_drain_timeout_names_the_old_groups_backends() {
        let mut s = sample();
        flip(&mut s, "web", "green", Some(1000), 0).unwrap();
        assert_eq!(shares_of(&s), vec![0, 10_000]);
        assert!(due(&s, 999).is_empty());
        let blue: Vec<(u32, u32)> = s.service("web").unwrap().groups[0]
            .backends
            .iter()
            .map(|b| (b.index, b.epoch))
            .collect();
        assert_eq!(due(&s, 1000), vec![("web".to_string(), blue)]);
        end(&mut s, "web").unwrap();
        assert!(due(&s, 5000).is_empty());
        let err = flip(&mut s, "web", "green", None, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "group \"green\" already takes 100% of new flows of service \"web\""
        );
        let err = flip(&mut s, "web", "purple", None, 0).unwrap_err();
        assert_eq!(err.to_string(), "no group \"purple\" in service \"web\"");
    }

    #[test]
    fn flip_without_timeout_keeps_old_flows_until_they_end() {
        let mut s = sample();
        flip(&mut s, "web", "green", None, 0).unwrap();
        assert_eq!(s.service("web").unwrap().flip_drain, None);
        assert!(due(&s, u64::MAX).is_empty());
    }
}
