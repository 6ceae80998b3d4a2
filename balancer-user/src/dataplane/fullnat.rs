//! Full NAT's per-flow state as the daemon sees it: the flows' translations (`TRANSLATIONS`:
//! client-side key → pool address and port, backend) and the pool ports in use
//! (`ALLOCATIONS`: pool address and port, backend endpoint → client-side key). The program
//! writes both when a flow begins; [`Pool::sweep`] frees them when it has ended, through a
//! handle of its own (no lock of the controller's is held while it walks them).

use std::{collections::HashSet, path::Path, time::Duration};

use aya::maps::{HashMap, MapData};
use balancer_common::{Allocation, FlowKey, Translation, PROTO_UDP};

use super::{map_err, missing, stats::monotonic_ns, DataPlaneError};

/// After the client's FIN or RST, how long without a packet from the client before a
/// flow's pool port is freed: the last ACKs and retransmits of a closing connection.
pub const CLOSED_LINGER: Duration = Duration::from_secs(10);
/// How long an open TCP flow may be silent (no packet from its client) before its pool
/// port is freed: IPVS's default for established connections.
pub const TCP_IDLE: Duration = Duration::from_secs(900);

/// When a flow's translation has ended: the sweep's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ending {
    /// How long an open UDP flow may be silent (the daemon's `--flow-idle`).
    pub udp_idle: Duration,
}

impl Ending {
    /// Whether the translation of a flow of `proto` has ended at `now` (ns, CLOCK_MONOTONIC).
    pub fn ended(&self, translation: &Translation, proto: u8, now: u64) -> bool {
        let last = translation.seen_ns.max(translation.closed_ns);
        let window = if translation.closed_ns != 0 {
            CLOSED_LINGER
        } else if proto == PROTO_UDP {
            self.udp_idle
        } else {
            TCP_IDLE
        };
        now.saturating_sub(last) > window.as_nanos() as u64
    }
}

/// What one sweep found and did (or, summed, what sweeps did since the daemon started).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Swept {
    /// Translations left in place (flows not ended).
    pub active: u64,
    /// Translations freed by this sweep, with their pool ports.
    pub released: u64,
    /// Pool ports freed that no translation named (a flow balanced again to another
    /// backend, or an allocation that lost a race on another CPU).
    pub orphans: u64,
}

impl Swept {
    /// Adds a later sweep: its active translations replace these, its frees add up.
    pub fn then(self, later: Swept) -> Swept {
        Swept {
            active: later.active,
            released: self.released + later.released,
            orphans: self.orphans + later.orphans,
        }
    }
}

/// A handle of its own on the full-NAT maps.
pub struct Pool {
    translations: HashMap<MapData, FlowKey, Translation>,
    allocations: HashMap<MapData, Allocation, FlowKey>,
    /// Allocations no translation named at the previous sweep: freed if still so now (one
    /// sweep apart, never one the program is between its two insertions for).
    suspects: HashSet<Allocation>,
}

impl Pool {
    /// Opens the pinned full-NAT maps in the maps directory `maps`.
    pub fn open(maps: &Path) -> Result<Self, DataPlaneError> {
        let open = |name: &str| -> Result<MapData, DataPlaneError> {
            let pin = maps.join(name);
            MapData::from_pin(&pin).map_err(|source| DataPlaneError::Map {
                context: format!("open {}", pin.display()),
                source,
            })
        };
        Ok(Self {
            translations: HashMap::try_from(aya::maps::Map::HashMap(open("TRANSLATIONS")?))
                .map_err(map_err("open pinned TRANSLATIONS"))?,
            allocations: HashMap::try_from(aya::maps::Map::HashMap(open("ALLOCATIONS")?))
                .map_err(map_err("open pinned ALLOCATIONS"))?,
            suspects: HashSet::new(),
        })
    }

    /// Every flow's translation.
    pub fn translations(&self) -> Result<Vec<(FlowKey, Translation)>, DataPlaneError> {
        listed(self.translations.iter(), "list TRANSLATIONS")
    }

    /// Every pool port in use, with the client-side key of its flow.
    pub fn allocations(&self) -> Result<Vec<(Allocation, FlowKey)>, DataPlaneError> {
        listed(self.allocations.iter(), "list ALLOCATIONS")
    }

    /// Frees the translations (and pool ports) of the flows that have ended by `ending`,
    /// then the pool ports no translation names (seen so at two sweeps in a row).
    pub fn sweep(&mut self, ending: Ending) -> Result<Swept, DataPlaneError> {
        self.sweep_at(ending, monotonic_ns())
    }

    /// [`Pool::sweep`] as if it were `now` (ns, CLOCK_MONOTONIC).
    pub fn sweep_at(&mut self, ending: Ending, now: u64) -> Result<Swept, DataPlaneError> {
        let mut swept = Swept::default();
        let mut named = HashSet::new();
        for (key, translation) in self.translations()? {
            let allocation = translation.allocation(&key);
            if !ending.ended(&translation, key.proto, now) {
                swept.active += 1;
                named.insert(allocation);
                continue;
            }
            // Read again: a packet since the walk keeps the flow.
            match self.translations.get(&key, 0) {
                Ok(again) if again == translation => {}
                Ok(_) => {
                    swept.active += 1;
                    named.insert(allocation);
                    continue;
                }
                Err(e) if missing(&e) => continue,
                Err(e) => return Err(map_err("read TRANSLATIONS")(e)),
            }
            self.remove_allocation(&allocation)?;
            match self.translations.remove(&key) {
                Err(e) if !missing(&e) => return Err(map_err("remove from TRANSLATIONS")(e)),
                _ => swept.released += 1,
            }
        }
        let mut suspects = HashSet::new();
        for (allocation, _) in self.allocations()? {
            if named.contains(&allocation) {
                continue;
            }
            if self.suspects.contains(&allocation) {
                self.remove_allocation(&allocation)?;
                swept.orphans += 1;
            } else {
                suspects.insert(allocation);
            }
        }
        self.suspects = suspects;
        Ok(swept)
    }

    fn remove_allocation(&mut self, allocation: &Allocation) -> Result<(), DataPlaneError> {
        match self.allocations.remove(allocation) {
            Err(e) if !missing(&e) => Err(map_err("remove from ALLOCATIONS")(e)),
            _ => Ok(()),
        }
    }
}

/// The entries of a map walk, skipping those removed while it walked.
fn listed<K, V>(
    entries: impl Iterator<Item = Result<(K, V), aya::maps::MapError>>,
    context: &'static str,
) -> Result<Vec<(K, V)>, DataPlaneError> {
    let mut out = Vec::new();
    for entry in entries {
        match entry {
            Ok(pair) => out.push(pair),
            Err(aya::maps::MapError::KeyNotFound) => continue,
            Err(e) => return Err(map_err(context)(e)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use balancer_common::PROTO_TCP;

    const S: u64 = 1_000_000_000;

    fn translation(seen: u64, closed: u64) -> Translation {
        Translation {
            seen_ns: seen * S,
            closed_ns: closed * S,
            ..Translation::default()
        }
    }

    #[test]
    fn a_flow_ends_by_its_close_or_its_silence() {
        let ending = Ending {
            udp_idle: Duration::from_secs(120),
        };
        let ended = |t: Translation, proto, now: u64| ending.ended(&t, proto, now * S);
        // Closed: 10 s after the later of the close and the client's last packet.
        assert!(!ended(translation(100, 100), PROTO_TCP, 110));
        assert!(ended(translation(100, 100), PROTO_TCP, 111));
        assert!(!ended(translation(105, 100), PROTO_TCP, 111));
        // Open UDP: the daemon's idle time.
        assert!(!ended(translation(100, 0), PROTO_UDP, 220));
        assert!(ended(translation(100, 0), PROTO_UDP, 221));
        // Open TCP: 15 minutes.
        assert!(!ended(translation(100, 0), PROTO_TCP, 1000));
        assert!(ended(translation(100, 0), PROTO_TCP, 1001));
        // A clock read before the last packet (another CPU's) is no silence.
        assert!(!ended(translation(100, 0), PROTO_TCP, 50));
    }
}
