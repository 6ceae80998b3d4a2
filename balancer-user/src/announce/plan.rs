//! What the announcement table must hold, and the changes that make it so. Pure.

use std::{collections::BTreeSet, net::IpAddr};

/// The VIP addresses to announce: every one of `vips`, or none when the host is `out`
/// (left the fleet, or torn down).
pub fn wanted(vips: &BTreeSet<IpAddr>, out: bool) -> BTreeSet<IpAddr> {
    match out {
        true => BTreeSet::new(),
        false => vips.clone(),
    }
}

/// The routes to add and to remove.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Wanted, not held.
    pub add: Vec<IpAddr>,
    /// Held, not wanted.
    pub remove: Vec<IpAddr>,
}

impl Plan {
    /// The changes from `held` (the table's routes of our protocol) to `wanted`.
    pub fn between(held: &BTreeSet<IpAddr>, wanted: &BTreeSet<IpAddr>) -> Self {
        Self {
            add: wanted.difference(held).copied().collect(),
            remove: held.difference(wanted).copied().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(addrs: &[&str]) -> BTreeSet<IpAddr> {
        addrs.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn the_plan_adds_the_missing_and_removes_the_stale() {
        let held = set(&["198.18.0.10", "2001:db8::10"]);
        let wanted = wanted(&set(&["198.18.0.10", "198.18.0.11"]), false);
        let plan = Plan::between(&held, &wanted);
        assert_eq!(plan.add, vec!["198.18.0.11".parse::<IpAddr>().unwrap()]);
        assert_eq!(plan.remove, vec!["2001:db8::10".parse::<IpAddr>().unwrap()]);
        assert_eq!(Plan::between(&wanted, &wanted), Plan::default());
    }

    #[test]
    fn a_host_that_is_out_withdraws_everything() {
        let held = set(&["198.18.0.10", "2001:db8::10"]);
        let plan = Plan::between(&held, &wanted(&held, true));
        assert!(plan.add.is_empty());
        assert_eq!(plan.remove.len(), 2);
    }
}
