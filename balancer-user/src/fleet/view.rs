//! `balancer fleet status` as text: one line per host — its revision, one digest over all
//! its tables, how many services, when it was last seen, `(left)` after `fleet leave` —
//! and whether the hosts agree.

use std::{collections::BTreeMap, fmt::Write as _};

use sha2::{Digest as _, Sha256};

use crate::api::{FleetHost, FleetStatus};

/// The text of `status`.
pub fn render(status: &FleetStatus) -> String {
    let mut out = String::new();
    let leader = status.leader.as_deref().unwrap_or("none yet");
    let _ = writeln!(
        out,
        "store {}  revision {}  leader: {leader}",
        status.store, status.revision
    );
    let _ = writeln!(
        out,
        "{:<24} {:>9} {:<14} {:>8}  LAST SEEN",
        "HOST", "REVISION", "TABLES", "SERVICES"
    );
    for host in &status.hosts {
        let age = status.now_ms.saturating_sub(host.seen_ms);
        let _ = writeln!(
            out,
            "{:<24} {:>9} {:<14} {:>8}  {:.1} s ago{}",
            host.host,
            host.revision,
            tables(&host.digests),
            host.digests.len(),
            age as f64 / 1000.0,
            // `fleet leave`: the host announces no VIP.
            if host.left { "  (left)" } else { "" }
        );
    }
    let _ = writeln!(out, "{}", agreement(&status.hosts));
    out
}

/// One digest over a host's services and their tables' digests (12 hex digits): equal on
/// two hosts exactly when every service's tables are.
fn tables(digests: &BTreeMap<String, String>) -> String {
    let mut hash = Sha256::new();
    for (name, digest) in digests {
        hash.update(name.as_bytes());
        hash.update([0]);
        hash.update(digest.as_bytes());
        hash.update([0]);
    }
    hash.finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether every host is at one revision with the same tables.
fn agreement(hosts: &[FleetHost]) -> String {
    let Some(first) = hosts.first() else {
        return "no host registered".into();
    };
    let same = hosts
        .iter()
        .all(|h| h.revision == first.revision && h.digests == first.digests);
    match same {
        true => format!(
            "{} host(s) at revision {} with the same tables",
            hosts.len(),
            first.revision
        ),
        false => "the hosts differ (a change in flight, or a host that cannot follow: see its log)"
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, revision: i64, digest: &str) -> FleetHost {
        FleetHost {
            host: name.into(),
            revision,
            digests: [("web".to_string(), digest.to_string())].into(),
            seen_ms: 9_500,
            left: false,
            sync: None,
        }
    }

    fn status(hosts: Vec<FleetHost>) -> FleetStatus {
        FleetStatus {
            store: "etcd://198.18.0.1:2379/lb".into(),
            revision: 7,
            leader: None,
            now_ms: 10_000,
            hosts,
        }
    }

    #[test]
    fn hosts_that_agree_say_so_and_each_has_its_line() {
        let text = render(&status(vec![
            host("lb-1", 7, "sha256:aa"),
            host("lb-2", 7, "sha256:aa"),
        ]));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert_eq!(
            lines[0],
            "store etcd://198.18.0.1:2379/lb  revision 7  leader: none yet"
        );
        assert!(
            lines[2].starts_with("lb-1 ") && lines[2].ends_with("1  0.5 s ago"),
            "{text}"
        );
        let digest = |line: &str| line.split_whitespace().nth(2).unwrap().to_string();
        assert_eq!(digest(lines[2]), digest(lines[3]));
        assert_eq!(digest(lines[2]).len(), 12);
        assert_eq!(lines[4], "2 host(s) at revision 7 with the same tables");
    }

    #[test]
    fn hosts_that_differ_in_revision_or_tables_are_shown_differing() {
        for other in [host("lb-2", 6, "sha256:aa"), host("lb-2", 7, "sha256:bb")] {
            let text = render(&status(vec![host("lb-1", 7, "sha256:aa"), other.clone()]));
            assert!(text.ends_with("see its log)\n"), "{text}");
            let lines: Vec<&str> = text.lines().collect();
            let digest = |line: &str| line.split_whitespace().nth(2).unwrap().to_string();
            assert_eq!(
                digest(lines[2]) == digest(lines[3]),
                other.digests == host("lb-1", 7, "sha256:aa").digests
            );
        }
        assert!(render(&status(vec![])).ends_with("no host registered\n"));
    }

    #[test]
    fn a_host_that_left_says_so_on_its_line() {
        let mut away = host("lb-2", 7, "sha256:aa");
        away.left = true;
        let text = render(&status(vec![host("lb-1", 7, "sha256:aa"), away]));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[2].ends_with("s ago"), "{text}");
        assert!(lines[3].ends_with("s ago  (left)"), "{text}");
    }
}
