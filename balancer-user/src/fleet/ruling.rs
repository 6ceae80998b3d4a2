//! The fleet's view of its backends' health, decided once for the fleet: every host keeps
//! checking its backends and publishes what its own checks say (`PREFIX/checks/NAME`); the
//! leader decides each backend from the reports of the live hosts ([`decide`]) and stores
//! the result (`PREFIX/health`); every host compiles its tables from it, so the tables are
//! the same everywhere.
//!
//! The rule, for each backend that at least one live host checks: down for the fleet when
//! more than half of the hosts that report it see it down, up when more than half see it
//! up; a tie keeps the current view (a backend not in the view yet stays out of it: each
//! host then goes by its own checks, as a backend new to a host starts). A backend that no
//! live host checks any more leaves the view.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use serde::{Deserialize, Serialize};

use super::FleetError;

/// What one host's own checks say: by service, each checked backend up (`true`) or down.
pub type Checks = BTreeMap<String, BTreeMap<IpAddr, bool>>;

/// The fleet's view of its backends' health: by service, each backend up (`true`) or down.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ruling {
    /// By service name, then backend address.
    pub services: Checks,
}

impl Ruling {
    /// The fleet's view of one backend, if it has one.
    pub fn get(&self, service: &str, addr: IpAddr) -> Option<bool> {
        self.services.get(service)?.get(&addr).copied()
    }
}

/// The fleet's view from the live hosts' `reports`, given the `current` one (see the
/// module's rule).
pub fn decide(current: &Ruling, reports: &[Checks]) -> Ruling {
    let checked: BTreeSet<(&String, &IpAddr)> = reports
        .iter()
        .flat_map(|checks| {
            checks
                .iter()
                .flat_map(|(service, backends)| backends.keys().map(move |addr| (service, addr)))
        })
        .collect();
    let mut next = Ruling::default();
    for (service, addr) in checked {
        let seen: Vec<bool> = reports
            .iter()
            .filter_map(|checks| checks.get(service)?.get(addr).copied())
            .collect();
        let down = seen.iter().filter(|up| !**up).count();
        let up = seen.len() - down;
        let verdict = match (2 * down > seen.len(), 2 * up > seen.len()) {
            (true, _) => Some(false),
            (_, true) => Some(true),
            _ => current.get(service, *addr),
        };
        if let Some(verdict) = verdict {
            next.services
                .entry(service.clone())
                .or_default()
                .insert(*addr, verdict);
        }
    }
    next
}

/// The document of a host's checks, or of the fleet's view.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("health serialises")
}

/// The fleet's view a stored document holds; one that does not read is one line of error.
pub fn decode(document: &[u8]) -> Result<Ruling, FleetError> {
    serde_json::from_slice(document).map_err(|e| FleetError::Unusable {
        revision: 0,
        why: format!("the fleet's health view is not one: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: &str = "198.18.0.102";

    /// One host's report on backend `B` of `web`: up, down, or not checked (none).
    fn host(seen: Option<bool>) -> Checks {
        let mut checks = Checks::new();
        if let Some(up) = seen {
            checks
                .entry("web".into())
                .or_default()
                .insert(B.parse().unwrap(), up);
        }
        checks
    }

    fn view(of_b: Option<bool>) -> Ruling {
        Ruling {
            services: host(of_b),
        }
    }

    #[test]
    fn a_backend_is_down_for_the_fleet_when_most_hosts_that_check_it_see_it_down() {
        let (up, down, none) = (Some(true), Some(false), None);
        // (current view of B, the hosts' reports, the view decided)
        type Case<'a> = (Option<bool>, &'a [Option<bool>], Option<bool>);
        let cases: &[Case] = &[
            (up, &[down, up, up], up),
            (up, &[down, down, up], down),
            (up, &[down, down, down], down),
            (down, &[up, up, down], up),
            (down, &[up, down, down], down),
            // One host down of two live ones: a tie keeps the current view.
            (up, &[down, up], up),
            (down, &[down, up], down),
            (none, &[down, up], none),
            // A host that does not check it is not counted.
            (up, &[down, down, none], down),
            (down, &[up, none, none], up),
            (none, &[down], down),
            // No live host checks it any more: it leaves the view.
            (down, &[none, none], none),
            (up, &[], none),
        ];
        for (current, reports, wanted) in cases {
            let reports: Vec<Checks> = reports.iter().map(|seen| host(*seen)).collect();
            let decided = decide(&view(*current), &reports);
            assert_eq!(
                decided,
                view(*wanted),
                "current {current:?}, reports {reports:?}"
            );
        }
    }

    #[test]
    fn each_backend_is_decided_on_its_own_and_the_view_round_trips() {
        let (a, b): (IpAddr, IpAddr) = ("198.18.0.101".parse().unwrap(), B.parse().unwrap());
        let report =
            |a_up, b_up| -> Checks { [("web".to_string(), [(a, a_up), (b, b_up)].into())].into() };
        let decided = decide(
            &Ruling::default(),
            &[
                report(true, false),
                report(false, false),
                report(true, true),
            ],
        );
        assert_eq!(decided.get("web", a), Some(true));
        assert_eq!(decided.get("web", b), Some(false));
        assert_eq!(decided.get("dns", a), None);
        assert_eq!(decode(&encode(&decided)).unwrap(), decided);
        let err = crate::error::one_line(&decode(b"{\"x\":1}").unwrap_err());
        assert!(err.contains("the fleet's health view is not one"), "{err}");
        assert_eq!(err.lines().count(), 1);
    }
}
