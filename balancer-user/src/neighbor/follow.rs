//! Following the kernel's tables: what a sighting of a backend means for the next hop the
//! data plane has for it, and which sightings are news. Pure.

use std::{collections::HashMap, net::IpAddr};

use super::NextHop;

/// What the kernel says about a backend's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sighting {
    /// Its neighbour entry on `ifindex` holds `mac`.
    Neighbour {
        /// The interface of the entry.
        ifindex: u32,
        /// The backend's MAC.
        mac: [u8; 6],
    },
    /// Its neighbour entry on `ifindex` failed: it does not answer ARP/ND.
    Failed {
        /// The interface of the entry.
        ifindex: u32,
    },
    /// Route, interface and neighbour entry together: where it is now.
    Located(NextHop),
}

/// What to do with a backend's data-plane entry after a sighting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It is right as it is.
    Keep,
    /// Write this next hop (same index, same epoch: its flows stay).
    Rewrite(NextHop),
    /// It stopped answering: keep its last MAC, say so.
    Unreachable,
    /// The sighting is on another interface than the entry's, or the backend has no entry
    /// yet: only a full location (route first) can tell.
    Relocate,
}

/// What `sighting` means for a backend whose data-plane entry is `current` (`None`: it has
/// no entry of its own yet).
pub fn outcome(current: Option<&NextHop>, sighting: &Sighting) -> Outcome {
    match (current, sighting) {
        (Some(hop), Sighting::Located(located)) if hop == located => Outcome::Keep,
        (_, Sighting::Located(located)) => Outcome::Rewrite(*located),
        (_, Sighting::Failed { .. }) => Outcome::Unreachable,
        (Some(hop), Sighting::Neighbour { ifindex, mac }) if hop.ifindex == *ifindex => {
            if hop.dst_mac == *mac {
                Outcome::Keep
            } else {
                Outcome::Rewrite(NextHop {
                    dst_mac: *mac,
                    ..*hop
                })
            }
        }
        (_, Sighting::Neighbour { .. }) => Outcome::Relocate,
    }
}

/// The last neighbour sighting of each address: the kernel notifies every state change of
/// an entry (reachable, stale, delay, probe), and only a change of MAC, interface or
/// answering is news. Full locations are always news.
#[derive(Debug, Default)]
pub struct Seen(HashMap<IpAddr, Sighting>);

impl Seen {
    /// Whether `sighting` of `addr` says something the previous one did not; remembers it.
    pub fn is_news(&mut self, addr: IpAddr, sighting: &Sighting) -> bool {
        if matches!(sighting, Sighting::Located(_)) {
            return true;
        }
        self.0.insert(addr, *sighting) != Some(*sighting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOP: NextHop = NextHop {
        ifindex: 2,
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 1, 1],
    };
    const NEW_MAC: [u8; 6] = [2, 0, 0, 0, 0xb0, 1];

    #[test]
    fn a_new_mac_on_the_same_interface_rewrites_only_the_destination() {
        let sighting = Sighting::Neighbour {
            ifindex: 2,
            mac: NEW_MAC,
        };
        assert_eq!(
            outcome(Some(&HOP), &sighting),
            Outcome::Rewrite(NextHop {
                dst_mac: NEW_MAC,
                ..HOP
            })
        );
        let same = Sighting::Neighbour {
            ifindex: 2,
            mac: HOP.dst_mac,
        };
        assert_eq!(outcome(Some(&HOP), &same), Outcome::Keep);
    }

    #[test]
    fn another_interface_or_no_entry_needs_a_full_location() {
        let elsewhere = Sighting::Neighbour {
            ifindex: 7,
            mac: NEW_MAC,
        };
        assert_eq!(outcome(Some(&HOP), &elsewhere), Outcome::Relocate);
        assert_eq!(outcome(None, &elsewhere), Outcome::Relocate);
    }

    #[test]
    fn a_failed_neighbour_keeps_its_last_mac() {
        let failed = Sighting::Failed { ifindex: 2 };
        assert_eq!(outcome(Some(&HOP), &failed), Outcome::Unreachable);
    }

    #[test]
    fn a_full_location_is_taken_as_it_is() {
        let moved = NextHop {
            ifindex: 9,
            src_mac: [2, 0, 0, 0, 0, 9],
            dst_mac: NEW_MAC,
        };
        let located = Sighting::Located(moved);
        assert_eq!(outcome(Some(&HOP), &located), Outcome::Rewrite(moved));
        assert_eq!(outcome(None, &located), Outcome::Rewrite(moved));
        assert_eq!(outcome(Some(&HOP), &Sighting::Located(HOP)), Outcome::Keep);
    }

    #[test]
    fn only_changes_are_news() {
        let addr: IpAddr = "198.18.0.101".parse().unwrap();
        let other: IpAddr = "198.18.0.102".parse().unwrap();
        let mut seen = Seen::default();
        let at = |mac| Sighting::Neighbour { ifindex: 2, mac };
        assert!(seen.is_news(addr, &at(HOP.dst_mac)));
        assert!(!seen.is_news(addr, &at(HOP.dst_mac)));
        assert!(seen.is_news(other, &at(HOP.dst_mac)));
        assert!(seen.is_news(addr, &Sighting::Failed { ifindex: 2 }));
        assert!(!seen.is_news(addr, &Sighting::Failed { ifindex: 2 }));
        assert!(seen.is_news(addr, &at(HOP.dst_mac)));
        assert!(seen.is_news(addr, &at(NEW_MAC)));
        assert!(seen.is_news(addr, &Sighting::Located(HOP)));
        assert!(seen.is_news(addr, &Sighting::Located(HOP)));
    }
}
