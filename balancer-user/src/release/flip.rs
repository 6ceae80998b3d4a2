//! Blue-green flip: every new flow goes to one group from the next packet on, in one
//! atomic split change; established flows stay on their backends. Flipping back is the
//! instant rollback. A flip drain watches the previous groups' flows for the drain timeout;
//! only a cut one re-balances them at its end (their clients get a reset).

use serde::{Deserialize, Serialize};

use crate::{
    basis_points::BasisPoints,
    state::{State, StateError},
};

/// A flip's drain: until `deadline_ms`, the flows still on the backends of `groups` are
/// watched; at the deadline a `cut` drain forgets them, so their next packets are balanced
/// like new flows (onto the live group), and one that is not cut just ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlipDrain {
    /// Groups that had new flows before the flip.
    pub groups: Vec<String>,
    /// Unix milliseconds.
    pub deadline_ms: u64,
    /// Whether the flows are re-balanced at the deadline.
    #[serde(default)]
    pub cut: bool,
}

impl FlipDrain {
    /// Whether the deadline has come at `now_ms`.
    pub fn due(&self, now_ms: u64) -> bool {
        self.deadline_ms <= now_ms
    }
}

/// Flips `service` to `group`, with a flip drain when there is a drain timeout or a cut (a
/// cut without a timeout is due at once). Flipping to the group that already has 100% is
/// refused, so a mistyped rollback is noticed.
pub fn flip(
    state: &mut State,
    service: &str,
    group: &str,
    drain_timeout_ms: Option<u64>,
    cut: bool,
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
    let timeout_ms = drain_timeout_ms.or(cut.then_some(0));
    state.service_mut(service)?.flip_drain = timeout_ms.map(|t| FlipDrain {
        groups: previous,
        deadline_ms: now_ms.saturating_add(t),
        cut,
    });
    Ok(())
}

/// A flip drain whose deadline has come.
#[derive(Debug, PartialEq, Eq)]
pub struct Due {
    /// The service.
    pub service: String,
    /// Whether its flows are to be forgotten.
    pub cut: bool,
    /// The (index, epoch) of the previous groups' backends.
    pub backends: Vec<(u32, u32)>,
}

/// The flip drains due at `now_ms`.
pub fn due(state: &State, now_ms: u64) -> Vec<Due> {
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
            Some(Due {
                service: name.clone(),
                cut: drain.cut,
                backends: ids,
            })
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
        flip(&mut s, "web", "green", Some(1000), true, 0).unwrap();
        assert_eq!(shares_of(&s), vec![0, 10_000]);
        assert!(due(&s, 999).is_empty());
        let blue: Vec<(u32, u32)> = s.service("web").unwrap().groups[0]
            .backends
            .iter()
            .map(|b| (b.index, b.epoch))
            .collect();
        assert_eq!(
            due(&s, 1000),
            vec![Due {
                service: "web".to_string(),
                cut: true,
                backends: blue
            }]
        );
        end(&mut s, "web").unwrap();
        assert!(due(&s, 5000).is_empty());
        let err = flip(&mut s, "web", "green", None, false, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "group \"green\" already takes 100% of new flows of service \"web\""
        );
        let err = flip(&mut s, "web", "purple", None, false, 0).unwrap_err();
        assert_eq!(err.to_string(), "no group \"purple\" in service \"web\"");
    }

    #[test]
    fn flip_without_timeout_keeps_old_flows_until_they_end() {
        let mut s = sample();
        flip(&mut s, "web", "green", None, false, 0).unwrap();
        assert_eq!(s.service("web").unwrap().flip_drain, None);
        assert!(due(&s, u64::MAX).is_empty());
    }
}
