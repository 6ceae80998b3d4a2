//! What each host publishes for the leader under `PREFIX/checks/NAME` (every second, under
//! its record's lease): what its own health checks say, and the analysis counters of its
//! own share of the traffic, so that the leader judges canary and rollout windows on the
//! whole fleet's traffic ([`Peers`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use serde::{Deserialize, Serialize};

use super::ruling::Checks;
use crate::release::analysis::Sample;

/// One host's report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// The host's name.
    pub host: String,
    /// When its daemon started (Unix milliseconds): its counters count from then.
    pub started_ms: u64,
    /// What its own health checks say.
    pub checks: Checks,
    /// The analysis counters of the backends of services whose canary or rollout is
    /// analysed: by service, then backend address.
    pub counters: BTreeMap<String, BTreeMap<IpAddr, Counted>>,
}

/// One backend's counters on one host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counted {
    /// The backend's epoch they count for (another epoch is another backend).
    pub epoch: u32,
    /// Its counters so far.
    pub sample: Sample,
}

/// The report's document.
pub fn encode(report: &Report) -> Vec<u8> {
    serde_json::to_vec(report).expect("a report serialises")
}

/// The reports of every host whose stored document reads (one that does not is skipped,
/// and logged: it does not stop the others' from counting).
pub fn decode(documents: &[Vec<u8>]) -> Vec<Report> {
    documents
        .iter()
        .filter_map(|document| match serde_json::from_slice(document) {
            Ok(report) => Some(report),
            Err(e) => {
                tracing::warn!("a host's report is not one, not counted: {e}");
                None
            }
        })
        .collect()
}

/// The other live hosts' counters, summed, as the leader adds them to its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peers {
    /// Who counted: each host and when its daemon started. A window counts only while
    /// they stay the same (a host that joins, leaves or restarts starts windows again).
    pub counted_by: BTreeSet<(String, u64)>,
    /// By service, then backend address: the sum of the other hosts' counters.
    pub counters: BTreeMap<String, BTreeMap<IpAddr, Counted>>,
}

impl Peers {
    /// The counters of `reports` other than `own` host's, summed per backend and epoch
    /// (a host still on another epoch of a backend is not counted for it).
    pub fn of(reports: &[Report], own: &str) -> Self {
        let mut peers = Peers::default();
        for report in reports.iter().filter(|r| r.host != own) {
            peers
                .counted_by
                .insert((report.host.clone(), report.started_ms));
            for (service, backends) in &report.counters {
                let summed = peers.counters.entry(service.clone()).or_default();
                for (addr, counted) in backends {
                    let sum = summed.entry(*addr).or_insert(Counted {
                        epoch: counted.epoch,
                        sample: Sample::default(),
                    });
                    if sum.epoch == counted.epoch {
                        sum.sample.add(&counted.sample);
                    }
                }
            }
        }
        peers
    }

    /// The other hosts' counters of backend `addr` of `service` at `epoch`, if any.
    pub fn get(&self, service: &str, addr: IpAddr, epoch: u32) -> Option<&Sample> {
        self.counters
            .get(service)?
            .get(&addr)
            .filter(|c| c.epoch == epoch)
            .map(|c| &c.sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(host: &str, started_ms: u64, epoch: u32, new_flows: u64) -> Report {
        let counted = Counted {
            epoch,
            sample: Sample {
                new_flows,
                ..Sample::default()
            },
        };
        Report {
            host: host.into(),
            started_ms,
            checks: Checks::new(),
            counters: [(
                "web".to_string(),
                [("198.18.0.101".parse().unwrap(), counted)].into(),
            )]
            .into(),
        }
    }

    #[test]
    fn the_other_hosts_counters_are_summed_per_backend_and_epoch() {
        let addr: IpAddr = "198.18.0.101".parse().unwrap();
        let reports = [
            report("lb-0", 10, 1, 100),
            report("lb-1", 20, 1, 30),
            report("lb-2", 30, 1, 5),
        ];
        let peers = Peers::of(&reports, "lb-0");
        assert_eq!(peers.get("web", addr, 1).map(|s| s.new_flows), Some(35));
        assert_eq!(peers.get("web", addr, 2), None, "another epoch");
        assert_eq!(peers.get("dns", addr, 1), None);
        assert_eq!(
            peers.counted_by,
            [("lb-1".to_string(), 20), ("lb-2".to_string(), 30)].into()
        );
        // A host still on the backend's former epoch is not counted for it.
        let mixed = Peers::of(
            &[report("lb-1", 20, 1, 30), report("lb-2", 30, 2, 5)],
            "lb-0",
        );
        assert_eq!(mixed.get("web", addr, 1).map(|s| s.new_flows), Some(30));
        // Documents round-trip; one that does not read is skipped.
        let documents = [encode(&reports[1]), b"{}".to_vec()];
        assert_eq!(decode(&documents), vec![reports[1].clone()]);
    }
}
