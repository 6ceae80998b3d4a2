//! The key layout under the fleet's prefix.
//!
//! - `PREFIX/state`: the whole desired state, one JSON document (the state file's format).
//!   One key, so that one compare-and-swap on its mod revision covers everything a change
//!   touches (a change may touch many services, and backend indices and slots are
//!   allocated across services), and one revision names the whole state.
//! - `PREFIX/hosts/NAME`: one record per daemon (its revision, its tables' digests, when it
//!   was last seen), attached to the daemon's lease, so a dead daemon's record goes away.
//! - `PREFIX/leader`: the name of the daemon that drives the fleet's timed work, created
//!   only where absent and attached to that daemon's leader lease (`--leader-ttl`); its
//!   create revision is the leader's term, which fences the leader's writes.
//! - `PREFIX/checks/NAME`: what host NAME's own health checks say, under its record's lease.
//! - `PREFIX/health`: the fleet's view of every checked backend, decided by the leader from
//!   the hosts' checks (apart from the state, so that it never collides with the operators'
//!   compare-and-swap on `PREFIX/state`).

/// The keys of one fleet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The keys under `prefix` (as [`super::url::StoreUrl::prefix`]: `/`-led, no trailing `/`).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    /// The desired state's key.
    pub fn state(&self) -> String {
        format!("{}/state", self.prefix)
    }

    /// The prefix of every host's record.
    pub fn hosts(&self) -> String {
        format!("{}/hosts/", self.prefix)
    }

    /// The record of host `name`.
    pub fn host(&self, name: &str) -> String {
        format!("{}{name}", self.hosts())
    }

    /// The leader's key.
    pub fn leader(&self) -> String {
        format!("{}/leader", self.prefix)
    }

    /// The prefix of every host's checks.
    pub fn checks(&self) -> String {
        format!("{}/checks/", self.prefix)
    }

    /// The checks of host `name`.
    pub fn check(&self, name: &str) -> String {
        format!("{}{name}", self.checks())
    }

    /// The fleet's view of its backends' health.
    pub fn health(&self) -> String {
        format!("{}/health", self.prefix)
    }
}

/// Whether `name` may name a host (`--host-name`): letters, digits, `.`, `-`, `_`, 1 to 64
/// of them, so that a host's key stays one segment under [`Keys::hosts`].
pub fn valid_host(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_under_its_fleets_prefix_and_no_other_fleets() {
        let lb = Keys::new("/lb");
        let lb2 = Keys::new("/lb2/");
        assert_eq!(lb.state(), "/lb/state");
        assert_eq!(lb.host("lb-1"), "/lb/hosts/lb-1");
        assert_eq!(lb2.state(), "/lb2/state");
        assert!(lb.host("a").starts_with(&lb.hosts()));
        assert!(!lb2.host("a").starts_with(&lb.hosts()));
        assert!(!lb.state().starts_with(&lb.hosts()));
        assert!(!lb2.state().starts_with(&lb.state()));
        assert_eq!(lb.leader(), "/lb/leader");
        assert_eq!(lb.health(), "/lb/health");
        assert_eq!(lb.check("lb-1"), "/lb/checks/lb-1");
        assert!(!lb.leader().starts_with(&lb.hosts()) && !lb.health().starts_with(&lb.checks()));
    }

    #[test]
    fn a_host_name_is_one_plain_segment() {
        for good in ["lb-1", "lb1.dc2.example", "LB_3", &"a".repeat(64)] {
            assert!(valid_host(good), "{good}");
        }
        for bad in ["", "a/b", "..x/", "a b", "é", &"a".repeat(65)] {
            assert!(!valid_host(bad), "{bad}");
        }
    }
}
