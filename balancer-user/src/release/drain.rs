//! Draining a backend: no new flows, established ones kept until they end or a timeout.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::state::{State, StateError};

/// A drain of one backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    /// When it started (Unix milliseconds).
    pub since_ms: u64,
    /// When it ends at the latest; none: when the flows end.
    pub deadline_ms: Option<u64>,
    /// When and how it ended; none while flows remain.
    pub ended: Option<DrainEnd>,
    /// Whether flows left at its end are re-balanced (their clients get a reset) instead of
    /// kept.
    #[serde(default)]
    pub cut: bool,
    /// The weight the drain replaced, which `backend undrain` restores (none in drains of
    /// state files written before it was kept).
    #[serde(default)]
    pub weight_before: Option<u16>,
}

/// The end of a drain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainEnd {
    /// Unix milliseconds.
    pub at_ms: u64,
    /// Active flows left when it ended: 0, or more at a timeout.
    pub flows_left: u64,
}

impl Drain {
    /// A drain starting at `now_ms` of a backend of weight `weight_before`, waiting at most
    /// `timeout_ms` for the flows to end; `cut`: the flows left at its end are re-balanced.
    pub fn begin(now_ms: u64, timeout_ms: Option<u64>, cut: bool, weight_before: u16) -> Self {
        Self {
            since_ms: now_ms,
            deadline_ms: timeout_ms.map(|t| now_ms.saturating_add(t)),
            ended: None,
            cut,
            weight_before: Some(weight_before),
        }
    }

    /// Whether it still waits for flows.
    pub fn running(&self) -> bool {
        self.ended.is_none()
    }

    /// Ends the drain at `now_ms` when the backend has no active flow left or the deadline
    /// passed; returns whether it ended now.
    pub fn step(&mut self, now_ms: u64, active_flows: u64) -> bool {
        if !self.running() {
            return false;
        }
        if active_flows > 0 && self.deadline_ms.is_none_or(|d| d > now_ms) {
            return false;
        }
        self.ended = Some(DrainEnd {
            at_ms: now_ms,
            flows_left: active_flows,
        });
        true
    }
}

/// Starts draining a backend of `service`: weight 0 (no new flows), established flows kept
/// (with `cut`, those left at the drain's end are re-balanced).
pub fn start(
    state: &mut State,
    service: &str,
    addr: IpAddr,
    timeout_ms: Option<u64>,
    cut: bool,
    now_ms: u64,
) -> Result<(), StateError> {
    let timeout_ms = crate::duration::check_optional("the drain timeout", timeout_ms)?;
    let backend = state
        .service_mut(service)?
        .backend_mut(addr)
        .ok_or_else(|| StateError::UnknownBackend(addr, service.to_string()))?;
    // Draining a drained backend keeps the weight the first drain replaced.
    let weight_before = match &backend.drain {
        Some(Drain {
            weight_before: Some(before),
            ..
        }) => *before,
        _ => backend.weight,
    };
    backend.weight = 0;
    backend.drain = Some(Drain::begin(now_ms, timeout_ms, cut, weight_before));
    Ok(())
}

/// Ends the drain of a backend of `service`, running or ended: it gets back the weight the
/// drain replaced. Refused when it is not drained, or its drain (from an older state file)
/// did not keep that weight.
pub fn undrain(state: &mut State, service: &str, addr: IpAddr) -> Result<(), StateError> {
    let backend = state
        .service_mut(service)?
        .backend_mut(addr)
        .ok_or_else(|| StateError::UnknownBackend(addr, service.to_string()))?;
    let Some(drain) = &backend.drain else {
        return Err(StateError::NotDrained(addr, service.to_string()));
    };
    let Some(weight) = drain.weight_before else {
        return Err(StateError::NoWeightBefore(addr, service.to_string()));
    };
    backend.weight = weight;
    backend.drain = None;
    Ok(())
}

/// Whether some drain is still running.
pub fn any_running(state: &State) -> bool {
    state.services.values().any(|s| {
        s.backends()
            .any(|(_, b)| b.drain.as_ref().is_some_and(Drain::running))
    })
}

/// Steps every running drain; `active(index, epoch)` counts a backend's active flows.
/// Returns the (index, epoch) of the backends whose cut drain ended now with flows left:
/// those flows are to be re-balanced.
pub fn check(state: &mut State, now_ms: u64, active: impl Fn(u32, u32) -> u64) -> Vec<(u32, u32)> {
    let mut cut = Vec::new();
    for service in state.services.values_mut() {
        for backend in service.groups.iter_mut().flat_map(|g| &mut g.backends) {
            let (index, epoch) = (backend.index, backend.epoch);
            let Some(drain) = &mut backend.drain else {
                continue;
            };
            let ended = drain.running() && drain.step(now_ms, active(index, epoch));
            if ended && drain.cut && drain.ended.is_some_and(|e| e.flows_left > 0) {
                cut.push((index, epoch));
            }
        }
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_when_the_flows_end_or_at_the_deadline() {
        let mut waiting = Drain::begin(100, None, false, 100);
        assert!(!waiting.step(10_000, 3), "no deadline: waits for the flows");
        assert!(waiting.step(10_100, 0));
        assert_eq!(
            waiting.ended,
            Some(DrainEnd {
                at_ms: 10_100,
                flows_left: 0
            })
        );
        assert!(!waiting.step(10_200, 0), "ends once");

        let mut bounded = Drain::begin(100, Some(1000), false, 100);
        assert!(!bounded.step(1099, 5));
        assert!(bounded.step(1100, 5));
        assert_eq!(
            bounded.ended,
            Some(DrainEnd {
                at_ms: 1100,
                flows_left: 5
            })
        );
    }

    #[test]
    fn undrain_restores_the_weight_the_first_drain_replaced() {
        let mut s = crate::state::tests::sample();
        let addr = crate::state::tests::ip("198.18.0.102");
        let weight = |s: &State| {
            let web = s.service("web").unwrap();
            let b = web.backends().find(|(_, b)| b.addr == addr).unwrap().1;
            (b.weight, b.drain.is_some())
        };
        assert_eq!(weight(&s), (50, false));
        let err = undrain(&mut s, "web", addr).unwrap_err();
        assert_eq!(
            err.to_string(),
            "backend 198.18.0.102 of service \"web\" is not drained"
        );
        start(&mut s, "web", addr, None, false, 0).unwrap();
        // A second drain (say, with a timeout) keeps the weight of before the first.
        start(&mut s, "web", addr, Some(1000), false, 10).unwrap();
        check(&mut s, 2000, |_, _| 0);
        assert_eq!(weight(&s), (0, true), "ended, still drained");
        undrain(&mut s, "web", addr).unwrap();
        assert_eq!(weight(&s), (50, false));
        // A drain from an older state file did not keep the weight: refused, unchanged.
        start(&mut s, "web", addr, None, false, 20).unwrap();
        let web = s.service_mut("web").unwrap();
        web.backend_mut(addr)
            .unwrap()
            .drain
            .as_mut()
            .unwrap()
            .weight_before = None;
        let before = s.clone();
        assert!(matches!(
            undrain(&mut s, "web", addr),
            Err(StateError::NoWeightBefore(..))
        ));
        assert_eq!(s, before);
    }

    #[test]
    fn a_cut_drain_names_its_backend_when_it_ends_with_flows_left() {
        let mut s = crate::state::tests::sample();
        let addr = crate::state::tests::ip("198.18.0.101");
        start(&mut s, "web", addr, Some(1000), true, 0).unwrap();
        let (index, epoch) = s
            .service("web")
            .unwrap()
            .backends()
            .find(|(_, b)| b.addr == addr)
            .map(|(_, b)| (b.index, b.epoch))
            .unwrap();
        assert!(check(&mut s, 999, |_, _| 3).is_empty(), "not yet");
        assert_eq!(check(&mut s, 1000, |_, _| 3), vec![(index, epoch)]);
        assert!(check(&mut s, 2000, |_, _| 3).is_empty(), "ends once");
        // A cut drain whose flows ended has nothing to cut; an uncut one never cuts.
        let mut idle = crate::state::tests::sample();
        start(&mut idle, "web", addr, Some(1000), true, 0).unwrap();
        assert!(check(&mut idle, 10, |_, _| 0).is_empty());
        let mut kept = crate::state::tests::sample();
        start(&mut kept, "web", addr, Some(1000), false, 0).unwrap();
        assert!(check(&mut kept, 1000, |_, _| 3).is_empty());
    }

    #[test]
    fn a_huge_timeout_does_not_wrap_into_the_past() {
        let mut drain = Drain::begin(100, Some(u64::MAX), false, 100);
        assert_eq!(drain.deadline_ms, Some(u64::MAX));
        assert!(!drain.step(200, 1));
    }
}
