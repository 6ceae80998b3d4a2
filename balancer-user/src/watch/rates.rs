//! Rates per second from two successive `status` answers: the difference of each
//! backend's counters over the time between them. A counter that went backwards (the
//! daemon restarted and counts afresh) gives no rate for that interval, never a negative
//! one.

use std::{net::IpAddr, time::Duration};

use serde::Serialize;

use crate::api::{BackendStatus, ServiceStatus, Status};

/// Per-second rates of one backend's (or group's) counters over one interval; `None`:
/// not measurable in it (the first answer, a counter that went backwards).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Rates {
    /// New flows per second.
    pub new_flows: Option<f64>,
    /// Packets per second.
    pub packets: Option<f64>,
    /// Bytes per second.
    pub bytes: Option<f64>,
    /// Flows closed by the client's FIN per second.
    pub fin_closes: Option<f64>,
    /// Flows reset by the client per second.
    pub resets: Option<f64>,
    /// SYN retransmits per second.
    pub syn_retransmits: Option<f64>,
    /// Unanswered flows per second.
    pub unanswered_flows: Option<f64>,
}

/// The counters of a backend that rates are taken of, in the order of [`Rates`]' fields.
fn counters(b: &BackendStatus) -> [u64; 7] {
    [
        b.new_flows,
        b.packets,
        b.bytes,
        b.fin_closes,
        b.resets,
        b.syn_retransmits,
        b.unanswered_flows,
    ]
}

impl Rates {
    fn from_array(values: [Option<f64>; 7]) -> Self {
        let [new_flows, packets, bytes, fin_closes, resets, syn_retransmits, unanswered_flows] =
            values;
        Self {
            new_flows,
            packets,
            bytes,
            fin_closes,
            resets,
            syn_retransmits,
            unanswered_flows,
        }
    }

    fn to_array(self) -> [Option<f64>; 7] {
        [
            self.new_flows,
            self.packets,
            self.bytes,
            self.fin_closes,
            self.resets,
            self.syn_retransmits,
            self.unanswered_flows,
        ]
    }

    /// The rates of a backend whose counters were `before` and are `after`, `elapsed`
    /// apart.
    fn between(before: [u64; 7], after: [u64; 7], elapsed: Duration) -> Self {
        let seconds = elapsed.as_secs_f64();
        let mut rates = [None; 7];
        for (rate, (b, a)) in rates.iter_mut().zip(before.into_iter().zip(after)) {
            *rate = a
                .checked_sub(b)
                .filter(|_| seconds > 0.0)
                .map(|d| d as f64 / seconds);
        }
        Self::from_array(rates)
    }

    /// The sum of `members`' rates; a rate is unknown when one member's is.
    fn sum<'a>(members: impl IntoIterator<Item = &'a Rates>) -> Self {
        let mut total = [Some(0.0); 7];
        for member in members {
            for (sum, rate) in total.iter_mut().zip(member.to_array()) {
                *sum = sum.zip(rate).map(|(s, r)| s + r);
            }
        }
        Self::from_array(total)
    }
}

/// One backend's rates.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BackendRates {
    /// Address.
    pub addr: IpAddr,
    /// Group.
    pub group: String,
    /// Its rates.
    #[serde(flatten)]
    pub rates: Rates,
}

/// One group's rates: the sum of its backends'.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GroupRates {
    /// Group name.
    pub group: String,
    /// Its rates.
    #[serde(flatten)]
    pub rates: Rates,
}

/// One service's rates, per group and per backend, in the order of its status.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceRates {
    /// Service name.
    pub service: String,
    /// Per group, in split order.
    pub groups: Vec<GroupRates>,
    /// Per backend, in status order.
    pub backends: Vec<BackendRates>,
}

impl ServiceRates {
    /// The rates of backend `addr`.
    pub fn backend(&self, addr: IpAddr) -> Option<&Rates> {
        self.backends
            .iter()
            .find(|b| b.addr == addr)
            .map(|b| &b.rates)
    }

    /// The rates of group `group`.
    pub fn group(&self, group: &str) -> Option<&Rates> {
        self.groups
            .iter()
            .find(|g| g.group == group)
            .map(|g| &g.rates)
    }
}

/// The rates of every backend and group of `after`, from `before` (the previous answer,
/// `elapsed` earlier; none: no rates yet). A backend that `before` does not have was added
/// since: it counts from 0.
pub fn rates(before: Option<&Status>, after: &Status, elapsed: Duration) -> Vec<ServiceRates> {
    after
        .services
        .iter()
        .map(|service| {
            let previous = before.map(|b| b.services.iter().find(|s| s.name == service.name));
            service_rates(previous, service, elapsed)
        })
        .collect()
}

/// `previous`: none when there is no earlier answer; `Some(None)` when it did not have
/// the service.
fn service_rates(
    previous: Option<Option<&ServiceStatus>>,
    service: &ServiceStatus,
    elapsed: Duration,
) -> ServiceRates {
    let backends: Vec<BackendRates> = service
        .backends
        .iter()
        .map(|b| {
            let rates = match previous {
                None => Rates::default(),
                Some(previous) => {
                    let before = previous
                        .and_then(|p| {
                            p.backends
                                .iter()
                                .find(|o| o.addr == b.addr && o.group == b.group)
                        })
                        .map_or([0; 7], counters);
                    Rates::between(before, counters(b), elapsed)
                }
            };
            BackendRates {
                addr: b.addr,
                group: b.group.clone(),
                rates,
            }
        })
        .collect();
    let groups = service
        .split
        .iter()
        .map(|g| GroupRates {
            group: g.group.clone(),
            rates: Rates::sum(
                backends
                    .iter()
                    .filter(|b| b.group == g.group)
                    .map(|b| &b.rates),
            ),
        })
        .collect();
    ServiceRates {
        service: service.name.clone(),
        groups,
        backends,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A backend of `group` whose counters are all `count` (packets ten times, bytes a
    /// thousand times), as the API gives it.
    pub(crate) fn backend(addr: &str, group: &str, count: u64) -> BackendStatus {
        serde_json::from_value(serde_json::json!({
            "addr": addr,
            "group": group,
            "weight": 100,
            "effective_share": 50.0,
            "new_flows": count,
            "packets": count * 10,
            "bytes": count * 1000,
            "active_flows": count,
            "fin_closes": count,
            "resets": count,
            "syn_retransmits": count,
            "unanswered_flows": count,
            "health": null,
            "health_changed_at_ms": null,
            "health_error": null,
            "drain": null,
        }))
        .unwrap()
    }

    /// Service `web` (blue 75%, green 25%) with `backends`, as the API gives it.
    pub(crate) fn status(backends: Vec<BackendStatus>) -> Status {
        let mut status: Status = serde_json::from_value(serde_json::json!({
            "services": [{
                "name": "web",
                "vip": "198.18.0.10:80/tcp",
                "affinity": "connection",
                "table_size": 65537,
                "split": [
                    {"group": "blue", "percent": "75"},
                    {"group": "green", "percent": "25"},
                ],
                "backends": [],
                "pins": [],
                "canary": null,
                "rollout": null,
                "flip_drain": null,
            }],
            "counters": {"passed": 0, "dropped": 0, "malformed": 0, "unbalanceable": 0},
        }))
        .unwrap();
        status.services[0].backends = backends;
        status
    }

    const BLUE: &str = "198.18.0.101";
    const GREEN: &str = "198.18.0.103";

    #[test]
    fn rates_are_the_difference_over_the_elapsed_time_and_groups_sum_their_backends() {
        let before = status(vec![
            backend(BLUE, "blue", 100),
            backend("198.18.0.102", "blue", 10),
        ]);
        let after = status(vec![
            backend(BLUE, "blue", 300),
            backend("198.18.0.102", "blue", 20),
        ]);
        let rates = rates(Some(&before), &after, Duration::from_secs(2));
        let blue = rates[0].backend(BLUE.parse().unwrap()).unwrap();
        assert_eq!(blue.new_flows, Some(100.0));
        assert_eq!(blue.packets, Some(1000.0));
        assert_eq!(blue.bytes, Some(100_000.0));
        assert_eq!(blue.unanswered_flows, Some(100.0));
        let group = rates[0].group("blue").unwrap();
        assert_eq!(group.new_flows, Some(105.0));
        assert_eq!(group.bytes, Some(105_000.0));
        // A group without backends has nothing going on.
        assert_eq!(rates[0].group("green").unwrap().new_flows, Some(0.0));
    }

    #[test]
    fn the_first_answer_has_no_rates() {
        let after = status(vec![backend(BLUE, "blue", 300)]);
        let rates = rates(None, &after, Duration::from_secs(1));
        assert_eq!(
            rates[0].backend(BLUE.parse().unwrap()),
            Some(&Rates::default())
        );
        assert_eq!(rates[0].group("blue").unwrap().packets, None);
    }

    #[test]
    fn a_counter_that_went_backwards_has_no_rate_and_its_group_neither() {
        let before = status(vec![backend(BLUE, "blue", 300), backend(GREEN, "green", 5)]);
        let mut restarted = backend(BLUE, "blue", 400);
        // The daemon restarted: its unanswered flows count from 0 again.
        restarted.unanswered_flows = 2;
        let after = status(vec![restarted, backend(GREEN, "green", 6)]);
        let rates = rates(Some(&before), &after, Duration::from_secs(1));
        let blue = rates[0].backend(BLUE.parse().unwrap()).unwrap();
        assert_eq!(blue.unanswered_flows, None);
        assert_eq!(blue.new_flows, Some(100.0));
        assert_eq!(rates[0].group("blue").unwrap().unanswered_flows, None);
        assert_eq!(rates[0].group("blue").unwrap().new_flows, Some(100.0));
        assert_eq!(rates[0].group("green").unwrap().unanswered_flows, Some(1.0));
    }

    #[test]
    fn a_backend_added_since_counts_from_zero_and_no_time_gives_no_rate() {
        let before = status(vec![backend(BLUE, "blue", 300)]);
        let after = status(vec![backend(BLUE, "blue", 300), backend(GREEN, "green", 4)]);
        let rates_now = rates(Some(&before), &after, Duration::from_millis(500));
        let green = rates_now[0].backend(GREEN.parse().unwrap()).unwrap();
        assert_eq!(green.new_flows, Some(8.0));
        let same_instant = rates(Some(&before), &after, Duration::ZERO);
        let blue = same_instant[0].backend(BLUE.parse().unwrap()).unwrap();
        assert_eq!(blue.new_flows, None);
    }

    #[test]
    fn rates_serialize_flat_with_null_for_unknown() {
        let after = status(vec![backend(BLUE, "blue", 1)]);
        let rates = rates(None, &after, Duration::from_secs(1));
        let json = serde_json::to_value(&rates[0].backends[0]).unwrap();
        assert_eq!(json["addr"], BLUE);
        assert_eq!(json["group"], "blue");
        assert!(json["new_flows"].is_null());
    }
}
