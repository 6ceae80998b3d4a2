//! The health of every checked backend, as a rise/fall state machine per backend.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use serde::{Deserialize, Serialize};

use super::{HealthRecord, Observed};
use crate::state::{HealthCheck, State};

/// One backend's health.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendHealth {
    /// Whether it may get new flows.
    pub healthy: bool,
    /// Consecutive results against the current state (passes while down, failures while up).
    pub streak: u32,
    /// When `healthy` last changed (Unix milliseconds); none since the daemon started.
    pub last_change_ms: Option<u64>,
    /// The last failure, if the last check failed.
    pub last_error: Option<String>,
    next_check_ms: u64,
    in_flight: bool,
}

/// A check to run now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckJob {
    /// Service of the backend.
    pub service: String,
    /// Backend address and service port.
    pub target: SocketAddr,
    /// What to check.
    pub check: HealthCheck,
}

/// Health of every backend of every service that has health checks.
#[derive(Clone, Debug, Default)]
pub struct HealthBoard {
    entries: BTreeMap<(String, IpAddr), BackendHealth>,
    /// In a fleet, the fleet's view of its backends (decided by the leader from every
    /// host's checks), which overrules this host's own results where it has a backend.
    fleet: BTreeMap<String, BTreeMap<IpAddr, bool>>,
}

/// Which backends that are new to the board were serving already: they start up (checks
/// take them out if they fail); the others start down until `rise` checks pass.
#[derive(Clone, Copy, Debug)]
pub enum Serving<'a> {
    /// Every one (a daemon start: they were serving before the restart).
    All,
    /// Those in the tables of this state (a change: checks turned on for a service that was
    /// serving must not take its backends out until they pass).
    In(&'a State),
}

impl Serving<'_> {
    fn includes(&self, service: &str, addr: IpAddr) -> bool {
        match self {
            Serving::All => true,
            Serving::In(state) => state
                .services
                .get(service)
                .is_some_and(|s| s.backends().any(|(_, b)| b.addr == addr)),
        }
    }
}

impl HealthBoard {
    /// Brings the board in line with `state`: entries of backends that are gone, or whose
    /// service has no checks, are dropped; new entries start up for backends that were
    /// `serving`, down until `rise` checks pass for the others (backends being added).
    pub fn sync(&mut self, state: &State, now_ms: u64, serving: Serving<'_>) {
        let mut wanted = BTreeSet::new();
        for (name, service) in &state.services {
            if service.health.is_none() {
                continue;
            }
            // Retired backends are checked too: one that fails is dead, and its flows are
            // better re-balanced.
            let retired = service.retired.iter().map(|r| r.addr);
            for addr in service.backends().map(|(_, b)| b.addr).chain(retired) {
                let key = (name.clone(), addr);
                wanted.insert(key.clone());
                let healthy = serving.includes(name, addr);
                self.entries.entry(key).or_insert(BackendHealth {
                    healthy,
                    streak: 0,
                    last_change_ms: None,
                    last_error: None,
                    next_check_ms: now_ms,
                    in_flight: false,
                });
            }
        }
        self.entries.retain(|key, _| wanted.contains(key));
    }

    /// The checks due at `now_ms`; each is marked in flight until its result is reported.
    pub fn due(&mut self, state: &State, now_ms: u64) -> Vec<CheckJob> {
        let mut jobs = Vec::new();
        for ((name, addr), health) in &mut self.entries {
            let Some(service) = state.services.get(name) else {
                continue;
            };
            let Some(check) = &service.health else {
                continue;
            };
            if health.in_flight || health.next_check_ms > now_ms {
                continue;
            }
            health.in_flight = true;
            health.next_check_ms = now_ms + check.interval_ms;
            jobs.push(CheckJob {
                service: name.clone(),
                target: service.endpoint(*addr).addr,
                check: check.clone(),
            });
        }
        jobs
    }

    /// Records a check result; returns whether the backend changed state.
    pub fn report(
        &mut self,
        service: &str,
        addr: IpAddr,
        result: Result<(), String>,
        check: &HealthCheck,
        now_ms: u64,
    ) -> bool {
        let Some(health) = self.entries.get_mut(&(service.to_string(), addr)) else {
            return false;
        };
        health.in_flight = false;
        let passed = result.is_ok();
        health.last_error = result.err();
        if passed == health.healthy {
            health.streak = 0;
            return false;
        }
        health.streak += 1;
        let needed = if health.healthy {
            check.fall
        } else {
            check.rise
        };
        if health.streak < needed {
            return false;
        }
        health.healthy = passed;
        health.streak = 0;
        health.last_change_ms = Some(now_ms);
        true
    }

    /// Backends of `service` that must not get new flows: down in the fleet's view, or by
    /// this host's own checks where the fleet's view does not have them.
    pub fn down(&self, service: &str) -> BTreeSet<IpAddr> {
        self.entries
            .iter()
            .filter(|((name, addr), h)| name == service && !self.counted(name, *addr, h))
            .map(|((_, addr), _)| *addr)
            .collect()
    }

    /// Whether a checked backend may get new flows (as [`HealthBoard::down`] decides).
    pub fn healthy(&self, service: &str, addr: IpAddr) -> Option<bool> {
        let health = self.entries.get(&(service.to_string(), addr))?;
        Some(self.counted(service, addr, health))
    }

    /// The fleet's view of a backend where it has one, this host's own otherwise.
    fn counted(&self, service: &str, addr: IpAddr, health: &BackendHealth) -> bool {
        self.fleet
            .get(service)
            .and_then(|s| s.get(&addr))
            .copied()
            .unwrap_or(health.healthy)
    }

    /// Takes the fleet's view of its backends' health, which from now on overrules this
    /// host's own results for the backends it has.
    pub fn overrule(&mut self, fleet: BTreeMap<String, BTreeMap<IpAddr, bool>>) {
        self.fleet = fleet;
    }

    /// What this host's own checks say of each checked backend (up: `true`).
    pub fn own(&self) -> BTreeMap<String, BTreeMap<IpAddr, bool>> {
        let mut own: BTreeMap<String, BTreeMap<IpAddr, bool>> = BTreeMap::new();
        for ((service, addr), health) in &self.entries {
            own.entry(service.clone())
                .or_default()
                .insert(*addr, health.healthy);
        }
        own
    }

    /// What is to be stored of the board: each backend's health, since when and why.
    pub fn record(&self) -> HealthRecord {
        let mut record = HealthRecord::default();
        for ((service, addr), health) in &self.entries {
            record.services.entry(service.clone()).or_default().insert(
                *addr,
                Observed {
                    healthy: health.healthy,
                    since_ms: health.last_change_ms,
                    error: health.last_error.clone(),
                },
            );
        }
        record
    }

    /// Takes the stored health of the backends the board has (after a restart); backends
    /// the record lacks keep what they have.
    pub fn restore(&mut self, record: &HealthRecord) {
        for ((service, addr), health) in &mut self.entries {
            let Some(observed) = record.services.get(service).and_then(|s| s.get(addr)) else {
                continue;
            };
            health.healthy = observed.healthy;
            health.last_change_ms = observed.since_ms;
            health.last_error = observed.error.clone();
            health.streak = 0;
        }
    }

    /// The health of one backend, if its service is checked.
    pub fn get(&self, service: &str, addr: IpAddr) -> Option<&BackendHealth> {
        self.entries.get(&(service.to_string(), addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Affinity, CheckKind};

    fn checked_state() -> State {
        let mut s = State::default();
        s.add_service(
            "web",
            "198.19.0.1:80/tcp".parse().unwrap(),
            Affinity::Connection,
            None,
        )
        .unwrap();
        s.add_backend("web", "198.18.0.101".parse().unwrap(), "blue", 100)
            .unwrap();
        s.set_health("web", Some(check())).unwrap();
        s
    }

    fn check() -> HealthCheck {
        HealthCheck {
            kind: CheckKind::Tcp,
            interval_ms: 1000,
            timeout_ms: 500,
            rise: 2,
            fall: 3,
        }
    }

    #[test]
    fn new_backends_rise_after_passes_and_fall_after_failures() {
        let s = checked_state();
        let addr: IpAddr = "198.18.0.101".parse().unwrap();
        let mut board = HealthBoard::default();
        board.sync(&s, 0, Serving::In(&State::default()));
        assert!(board.down("web").contains(&addr), "new backends start down");
        assert_eq!(board.due(&s, 0).len(), 1);
        assert!(board.due(&s, 0).is_empty(), "in flight: not due again");
        assert!(!board.report("web", addr, Ok(()), &check(), 10));
        assert!(board.report("web", addr, Ok(()), &check(), 20), "rise = 2");
        assert!(board.down("web").is_empty());
        for t in 0..2 {
            assert!(!board.report("web", addr, Err("refused".into()), &check(), 30 + t));
        }
        // A pass resets the streak.
        assert!(!board.report("web", addr, Ok(()), &check(), 40));
        for t in 0..2 {
            assert!(!board.report("web", addr, Err("refused".into()), &check(), 50 + t));
        }
        assert!(
            board.report("web", addr, Err("refused".into()), &check(), 60),
            "fall = 3"
        );
        let health = board.get("web", addr).unwrap();
        assert!(!health.healthy);
        assert_eq!(health.last_change_ms, Some(60));
        assert_eq!(health.last_error.as_deref(), Some("refused"));
    }

    #[test]
    fn a_record_restores_each_backends_health_and_skips_what_the_board_lacks() {
        let s = checked_state();
        let addr: IpAddr = "198.18.0.101".parse().unwrap();
        let mut before = HealthBoard::default();
        before.sync(&s, 0, Serving::In(&State::default()));
        let mut record = before.record();
        assert_eq!(
            record.services["web"][&addr],
            Observed {
                healthy: false,
                since_ms: None,
                error: None
            }
        );
        let web = record.services.get_mut("web").unwrap();
        web.get_mut(&addr).unwrap().since_ms = Some(42);
        record.services.entry("gone".into()).or_default().insert(
            addr,
            Observed {
                healthy: true,
                since_ms: None,
                error: None,
            },
        );
        // A restarted board assumes up, then takes the record.
        let mut after = HealthBoard::default();
        after.sync(&s, 100, Serving::All);
        after.restore(&record);
        let health = after.get("web", addr).unwrap();
        assert_eq!((health.healthy, health.last_change_ms), (false, Some(42)));
        assert!(after.get("gone", addr).is_none());
    }

    #[test]
    fn the_fleets_view_overrules_own_results_for_the_backends_it_has() {
        let mut s = checked_state();
        let (a, b): (IpAddr, IpAddr) = (
            "198.18.0.101".parse().unwrap(),
            "198.18.0.109".parse().unwrap(),
        );
        s.add_backend("web", b, "blue", 100).unwrap();
        let mut board = HealthBoard::default();
        board.sync(&s, 0, Serving::All);
        for _ in 0..3 {
            board.report("web", a, Err("refused".into()), &check(), 10);
        }
        assert_eq!(board.down("web"), [a].into());
        // The fleet keeps a up and takes b out; unknown services and backends are ignored.
        board.overrule(
            [
                ("web".to_string(), [(a, true), (b, false)].into()),
                ("dns".to_string(), [(a, false)].into()),
            ]
            .into(),
        );
        assert_eq!(board.down("web"), [b].into());
        assert_eq!(board.healthy("web", a), Some(true));
        assert_eq!(board.healthy("dns", a), None);
        assert_eq!(
            board.own(),
            [("web".to_string(), [(a, false), (b, true)].into())].into(),
            "own results are kept and published as they are"
        );
        // A backend the fleet's view lacks goes by the host's own result.
        board.overrule([("web".to_string(), [(b, false)].into())].into());
        assert_eq!(board.down("web"), [a, b].into());
        board.overrule(BTreeMap::new());
        assert_eq!(board.down("web"), [a].into());
    }

    #[test]
    fn restart_assumes_up_and_unchecked_services_have_no_entries() {
        let mut s = checked_state();
        let mut board = HealthBoard::default();
        board.sync(&s, 0, Serving::All);
        assert!(board.down("web").is_empty());
        s.set_health("web", None).unwrap();
        board.sync(&s, 0, Serving::In(&State::default()));
        assert!(board.get("web", "198.18.0.101".parse().unwrap()).is_none());
    }

    #[test]
    fn checks_turned_on_for_a_serving_service_keep_its_backends_up() {
        let mut before = checked_state();
        before.set_health("web", None).unwrap();
        let mut board = HealthBoard::default();
        board.sync(&before, 0, Serving::In(&before));
        let mut after = checked_state();
        let added: IpAddr = "198.18.0.109".parse().unwrap();
        after.add_backend("web", added, "blue", 100).unwrap();
        board.sync(&after, 0, Serving::In(&before));
        assert_eq!(
            board.down("web").into_iter().collect::<Vec<_>>(),
            [added],
            "only the backend added with the change starts down"
        );
    }
}
