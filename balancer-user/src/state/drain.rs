//! Draining a backend: no new flows, established ones kept until they end or a timeout.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{State, StateError};

/// A drain of one backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    /// When it started (Unix milliseconds).
    pub since_ms: u64,
    /// When it ends at the latest; none: when the flows end.
    pub deadline_ms: Option<u64>,
    /// When and how it ended; none while flows remain.
    pub ended: Option<DrainEnd>,
}

/// The end of a drain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainEnd {
    /// Unix milliseconds.
    pub at_ms: u64,
    /// Active flows left when it ended: 0, or more at a timeout.
    pub flows_left: u64,
}

impl State {
    /// Starts draining a backend: weight 0 (no new flows), established flows kept.
    pub fn start_drain(
        &mut self,
        service: &str,
        addr: IpAddr,
        timeout_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<(), StateError> {
        let backend = self
            .service_mut(service)?
            .backend_mut(addr)
            .ok_or_else(|| StateError::UnknownBackend(addr, service.to_string()))?;
        backend.weight = 0;
        backend.drain = Some(Drain {
            since_ms: now_ms,
            deadline_ms: timeout_ms.map(|t| now_ms + t),
            ended: None,
        });
        Ok(())
    }

    /// Whether some drain is still running.
    pub fn draining(&self) -> bool {
        self.services.values().any(|s| {
            s.backends()
                .any(|(_, b)| b.drain.is_some_and(|d| d.ended.is_none()))
        })
    }

    /// Ends the drains whose backend has no active flow left (`active(index, epoch)`), or
    /// whose deadline passed.
    pub fn check_drains(&mut self, now_ms: u64, active: impl Fn(u32, u32) -> u64) {
        for service in self.services.values_mut() {
            for group in &mut service.groups {
                for backend in &mut group.backends {
                    let Some(drain) = &mut backend.drain else {
                        continue;
                    };
                    if drain.ended.is_some() {
                        continue;
                    }
                    let flows = active(backend.index, backend.epoch);
                    if flows == 0 || drain.deadline_ms.is_some_and(|d| d <= now_ms) {
                        drain.ended = Some(DrainEnd {
                            at_ms: now_ms,
                            flows_left: flows,
                        });
                    }
                }
            }
        }
    }
}
