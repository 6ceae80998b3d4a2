//! The key layout under the fleet's prefix.
//!
//! - `PREFIX/state`: the whole desired state, one JSON document (the state file's format).
//!   One key, so that one compare-and-swap on its mod revision covers everything a change
//!   touches (a change may touch many services, and backend indices and slots are
//!   allocated across services), and one revision names the whole state.
//! - `PREFIX/hosts/NAME`: one record per daemon (its revision, its tables' digests, when it
//!   was last seen), attached to the daemon's lease, so a dead daemon's record goes away.

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
