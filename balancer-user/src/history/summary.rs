//! The before/after summary of a change to a service: the service seen as facets (its VIP,
//! health checks, split, canary, rollout, flip drain, each pin and each backend) written as
//! short text, and of those only the ones that differ, at most [`MAX_FACETS`] a side.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use crate::{
    release::{canary::Canary, rollout::Rollout},
    state::{HealthCheck, Service},
};

/// Facets listed in one side of a summary; the rest are counted.
pub const MAX_FACETS: usize = 6;

/// A facet's name, ordered as summaries list them: the service's settings and split first,
/// then its releases, pins and backends.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Facet {
    Vip,
    Health,
    Split,
    Canary,
    Rollout,
    FlipDrain,
    Pin(String),
    Backend(std::net::IpAddr),
}

impl std::fmt::Display for Facet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Facet::Vip => f.write_str("vip"),
            Facet::Health => f.write_str("health"),
            Facet::Split => f.write_str("split"),
            Facet::Canary => f.write_str("canary"),
            Facet::Rollout => f.write_str("rollout"),
            Facet::FlipDrain => f.write_str("flip drain"),
            Facet::Pin(cidr) => write!(f, "pin {cidr}"),
            Facet::Backend(addr) => write!(f, "backend {addr}"),
        }
    }
}

/// What `before` and `after` (none: the service is absent) differ in, each side as
/// `facet: value; ...` (`facet: none` for one the other side has alone); none for a side
/// without the service, and none at all when nothing differs.
pub fn diff(before: Option<&Service>, after: Option<&Service>) -> (Option<String>, Option<String>) {
    let (old, new) = (before.map(facets), after.map(facets));
    let empty = BTreeMap::new();
    let (o, n) = (
        old.as_ref().unwrap_or(&empty),
        new.as_ref().unwrap_or(&empty),
    );
    let mut changed: Vec<&Facet> = o
        .keys()
        .chain(n.keys())
        .filter(|k| o.get(k) != n.get(k))
        .collect();
    changed.sort();
    changed.dedup();
    if changed.is_empty() {
        return (None, None);
    }
    let side = |values: &BTreeMap<Facet, String>| {
        let mut text = String::new();
        for facet in changed.iter().take(MAX_FACETS) {
            if !text.is_empty() {
                text.push_str("; ");
            }
            let value = values.get(facet).map_or("none", String::as_str);
            let _ = write!(text, "{facet}: {value}");
        }
        if changed.len() > MAX_FACETS {
            let _ = write!(text, "; and {} more", changed.len() - MAX_FACETS);
        }
        text
    };
    (old.as_ref().map(side), new.as_ref().map(side))
}

/// Every facet of `service` with its value.
fn facets(service: &Service) -> BTreeMap<Facet, String> {
    let mut facets = BTreeMap::new();
    facets.insert(
        Facet::Vip,
        format!("{}, {} affinity", service.vip, service.affinity),
    );
    if let Some(check) = &service.health {
        facets.insert(Facet::Health, health(check));
    }
    facets.insert(Facet::Split, split(service));
    if let Some(canary) = &service.canary {
        facets.insert(Facet::Canary, canary_text(canary));
    }
    if let Some(rollout) = &service.rollout {
        facets.insert(Facet::Rollout, rollout_text(rollout));
    }
    if let Some(drain) = &service.flip_drain {
        let mut text = format!(
            "{} until {}",
            drain.groups.join(","),
            time(drain.deadline_ms)
        );
        if drain.cut {
            text.push_str(", cut");
        }
        facets.insert(Facet::FlipDrain, text);
    }
    for pin in &service.pins {
        facets.insert(Facet::Pin(pin.cidr.to_string()), pin.group.clone());
    }
    for (g, b) in service.backends() {
        let mut text = format!("{} weight {}", service.groups[g].name, b.weight);
        match b.drain.map(|d| d.ended) {
            Some(None) => text.push_str(", draining"),
            Some(Some(end)) => {
                let _ = write!(text, ", drained ({} flows left)", end.flows_left);
            }
            None => {}
        }
        facets.insert(Facet::Backend(b.addr), text);
    }
    for r in &service.retired {
        facets.insert(Facet::Backend(r.addr), format!("retired from {}", r.group));
    }
    facets
}

fn health(check: &HealthCheck) -> String {
    format!(
        "{} every {}, timeout {}, rise {}, fall {}",
        check.kind,
        millis(check.interval_ms),
        millis(check.timeout_ms),
        check.rise,
        check.fall
    )
}

/// The split as `group=percent%` in group order; a service without groups has none.
fn split(service: &Service) -> String {
    match service.shares() {
        Ok(shares) if !shares.is_empty() => service
            .groups
            .iter()
            .zip(shares)
            .map(|(g, share)| format!("{}={share}%", g.name))
            .collect::<Vec<_>>()
            .join(" "),
        Ok(_) => "none".into(),
        Err(e) => format!("unreadable ({e})"),
    }
}

fn canary_text(c: &Canary) -> String {
    let state = match (c.outcome, c.paused_remaining_ms) {
        (Some(outcome), _) => format!("{outcome:?}").to_lowercase(),
        (None, Some(_)) => "paused".into(),
        (None, None) => "running".into(),
    };
    format!(
        "{} -> {} step {}/{} ({}%), {state}",
        c.from,
        c.to,
        c.step + 1,
        c.steps.len(),
        c.steps[c.step]
    )
}

fn rollout_text(r: &Rollout) -> String {
    let state = match r.outcome {
        Some(outcome) => format!("{outcome:?}").to_lowercase(),
        None => format!("{:?}", r.phase).to_lowercase(),
    };
    format!(
        "{} pair {}/{}, {state}",
        r.group,
        r.current + 1,
        r.pairs.len()
    )
}

/// Milliseconds as a duration (`2s`, `1m 30s`).
pub fn millis(ms: u64) -> String {
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

/// Unix milliseconds as an RFC 3339 time to the second.
fn time(unix_ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(unix_ms))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        release::{drain, flip},
        state::tests::{ip, sample},
    };

    fn web(state: &crate::state::State) -> &Service {
        state.service("web").unwrap()
    }

    #[test]
    fn only_what_changed_is_summarised_on_each_side() {
        let before = sample();
        let mut after = before.clone();
        after.set_weight("web", ip("198.18.0.101"), 7).unwrap();
        assert_eq!(
            diff(Some(web(&before)), Some(web(&after))),
            (
                Some("backend 198.18.0.101: blue weight 100".into()),
                Some("backend 198.18.0.101: blue weight 7".into())
            )
        );
        assert_eq!(diff(Some(web(&before)), Some(web(&before))), (None, None));

        let mut flipped = before.clone();
        flip::flip(&mut flipped, "web", "green", Some(5000), true, 0).unwrap();
        assert_eq!(
            diff(Some(web(&before)), Some(web(&flipped))),
            (
                Some("split: blue=75.00% green=25.00%; flip drain: none".into()),
                Some(
                    "split: blue=0.00% green=100.00%; flip drain: blue until \
                     1970-01-01T00:00:05Z, cut"
                        .into()
                )
            )
        );

        let mut drained = before.clone();
        drain::start(&mut drained, "web", ip("198.18.0.102"), None, false, 0).unwrap();
        let (_, after) = diff(Some(web(&before)), Some(web(&drained)));
        assert_eq!(
            after.as_deref(),
            Some("backend 198.18.0.102: blue weight 0, draining")
        );
        drain::check(&mut drained, 10, |_, _| 0);
        let (_, after) = diff(Some(web(&before)), Some(web(&drained)));
        assert_eq!(
            after.as_deref(),
            Some("backend 198.18.0.102: blue weight 0, drained (0 flows left)")
        );
    }

    #[test]
    fn a_side_without_the_service_is_none_and_long_sides_are_cut_short() {
        let state = sample();
        let (before, after) = diff(None, Some(web(&state)));
        assert_eq!(before, None);
        let after = after.unwrap();
        assert!(
            after.starts_with("vip: 198.19.0.1:80/tcp, client affinity; split: "),
            "{after}"
        );
        let (before, after) = diff(Some(web(&state)), None);
        assert_eq!(after, None);
        assert!(before
            .unwrap()
            .contains("backend 198.18.0.101: blue weight 100"));

        let mut many = state.clone();
        for i in 0..20 {
            many.add_backend("web", ip(&format!("198.18.1.{i}")), "blue", 100)
                .unwrap();
        }
        let (before, after) = diff(Some(web(&state)), Some(web(&many)));
        let (before, after) = (before.unwrap(), after.unwrap());
        assert_eq!(
            before,
            "backend 198.18.1.0: none; backend 198.18.1.1: none; backend 198.18.1.2: none; \
             backend 198.18.1.3: none; backend 198.18.1.4: none; backend 198.18.1.5: none; \
             and 14 more"
        );
        assert!(after.ends_with("; and 14 more"), "{after}");
        assert!(
            after.starts_with("backend 198.18.1.0: blue weight 100; backend 198.18.1.1: "),
            "{after}"
        );
    }
}
