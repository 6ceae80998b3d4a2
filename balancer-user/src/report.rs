//! Human-readable renderings of API answers.

use std::{fmt::Write as _, net::IpAddr};

use crate::{
    api::{Announcement, Status},
    history::Event,
    release::analysis::{Analysis, Stage},
    state::Mode,
};

/// The line of `status` that says what the host announces over BGP.
fn announcement(a: &Announcement) -> String {
    let vips: Vec<String> = a.vips.iter().map(IpAddr::to_string).collect();
    match (a.left, vips.is_empty()) {
        (true, _) => format!(
            "left the fleet: no VIP announced (routing table {}); `balancer fleet join` announces again",
            a.table
        ),
        (false, true) => format!("announced over BGP (routing table {}): none", a.table),
        (false, false) => format!(
            "announced over BGP (routing table {}): {}",
            a.table,
            vips.join(" ")
        ),
    }
}

/// `balancer status` as text.
pub fn status(status: &Status) -> String {
    let mut out = String::new();
    for s in &status.services {
        let split: Vec<String> = s
            .split
            .iter()
            .map(|g| format!("{}={}%", g.group, g.percent))
            .collect();
        let _ = writeln!(
            out,
            "service {}  {}  affinity={}{}  split: {}",
            s.name,
            s.vip,
            s.affinity,
            // Routed services say how; direct server return is the default.
            if s.forward.mode.routed() {
                format!("  forward: {}", s.forward)
            } else {
                String::new()
            },
            if split.is_empty() {
                "-".to_string()
            } else {
                split.join(" ")
            }
        );
        if !s.digest.is_empty() {
            // Hosts of a fleet compare this line: equal tables, equal digests.
            let _ = writeln!(out, "  tables {}", s.digest);
        }
        let _ = writeln!(
            out,
            "  {:<40} {:<12} {:>6} {:>7} {:>10} {:>12} {:>14} {:>8} {:>8} {:>8} {:>8} {:>10}  HEALTH",
            "BACKEND",
            "GROUP",
            "WEIGHT",
            "SHARE%",
            "NEW_FLOWS",
            "PACKETS",
            "BYTES",
            "ACTIVE",
            "FIN",
            "RST",
            "SYN_RTX",
            "UNANSWERED"
        );
        for b in &s.backends {
            let health = match (&b.health, b.health_changed_at_ms) {
                (None, _) => "-".to_string(),
                (Some(h), None) => h.to_string(),
                (Some(h), Some(at)) => format!("{h} since {}", time(at)),
            };
            let _ = writeln!(
                out,
                "  {:<40} {:<12} {:>6} {:>7.2} {:>10} {:>12} {:>14} {:>8} {:>8} {:>8} {:>8} {:>10}  {}",
                b.addr.to_string(),
                b.group,
                b.weight,
                b.effective_share,
                b.new_flows,
                b.packets,
                b.bytes,
                b.active_flows,
                b.fin_closes,
                b.resets,
                b.syn_retransmits,
                b.unanswered_flows,
                health
            );
            if let Some(a) = &b.answers {
                let mean = a
                    .handshake_mean()
                    .map_or("-".to_string(), |s| format!("{:.2}ms", s * 1000.0));
                let _ = writeln!(
                    out,
                    "    answers: {} packets, {} bytes, {} resets, {} handshakes, mean {mean}",
                    a.packets, a.bytes, a.resets, a.handshakes
                );
            }
        }
        for r in &s.retired {
            let since = time(r.since_ms);
            let health = r.health.map_or("-".to_string(), |h| h.to_string());
            let _ = writeln!(
                out,
                "  {:<40} {:<12} retired since {since}, {} active flows, health {health}",
                r.addr.to_string(),
                r.group,
                r.active_flows,
            );
        }
    }
    for s in &status.services {
        if let Some(c) = &s.canary {
            let state = match (&c.outcome, c.next_step_at_ms, c.paused_remaining_ms) {
                (Some(outcome), _, _) => format!("{outcome:?}").to_lowercase(),
                (None, _, Some(left)) => format!("paused, {}s left in the step", left / 1000),
                (None, Some(at), _) => format!("next step at {}", time(at)),
                (None, None, None) => "holding at the last step".to_string(),
            };
            let _ = writeln!(
                out,
                "canary {}: {} -> {}, step {}/{} ({}%), {}",
                s.name,
                c.from,
                c.to,
                c.step + 1,
                c.steps.len(),
                c.steps[c.step],
                state
            );
            if let Some(a) = c.analysis.as_ref().filter(|_| c.running()) {
                let _ = writeln!(out, "  analysis: {}", analysis(a));
            }
            if let Some(j) = c.analysis.as_ref().and_then(|a| a.last.as_ref()) {
                let _ = writeln!(out, "  last window ({:?}): {}", j.verdict, j.why);
            }
            if let Some(last) = c.decisions.last() {
                let _ = writeln!(out, "  last decision: {}", last.what);
            }
        }
    }
    for s in &status.services {
        if let Some(r) = &s.rollout {
            out.push_str(&rollout(&s.name, r));
        }
    }
    let pins = pins(status);
    if !pins.is_empty() {
        let _ = write!(out, "pins:\n{pins}");
    }
    let c = &status.counters;
    let _ = writeln!(
        out,
        "packets: passed={} dropped={} malformed={} unbalanceable={} martian={}",
        c.passed, c.dropped, c.malformed, c.unbalanceable, c.martian
    );
    if status.services.iter().any(|s| s.forward.mode.tunnelled()) {
        let t = &c.tunnel;
        let _ = writeln!(
            out,
            "tunnel packets: unresolved={} unroutable={} failed={} too_big={}",
            t.unresolved, t.unroutable, t.failed, t.too_big
        );
    }
    if status.services.iter().any(|s| s.forward.mode.translated()) {
        let n = &c.nat;
        let _ = writeln!(
            out,
            "nat packets: replies={} errors={} unresolved={} unroutable={} failed={} exhausted={} \
             too_big={}",
            n.replies, n.errors, n.unresolved, n.unroutable, n.failed, n.exhausted, n.too_big
        );
    }
    if status
        .services
        .iter()
        .any(|s| s.forward.mode == Mode::Fullnat)
    {
        let t = status.translations;
        let _ = writeln!(
            out,
            "fullnat pool ports: in use={} freed={}",
            t.active,
            t.released + t.orphans
        );
    }
    if let Some(a) = &status.announcement {
        let _ = writeln!(out, "{}", announcement(a));
    }
    if let Some(s) = &status.sync {
        let _ = writeln!(
            out,
            "flow sync on {} with {} peers: recorded={} sent={} datagrams ({} bytes) \
             unsent={} received={} inserted={} kept={} dropped={} overflows={}",
            s.listen,
            s.peers,
            s.recorded,
            s.datagrams,
            s.bytes,
            s.unsent,
            s.received,
            s.inserted,
            s.kept,
            s.dropped,
            s.overflows
        );
    }
    let m = &status.memory;
    let largest = m
        .maps
        .first()
        .map(|map| format!("  largest: {} {}", map.name, mib(map.bytes)))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "data plane memory: {} (tables of {} services: {}){largest}",
        mib(m.total_bytes),
        m.tables,
        mib(m.tables_bytes),
    );
    out
}

/// `bytes` in MiB, one decimal.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// `balancer service list` as text.
pub fn service_list(status: &Status) -> String {
    let mut out = String::new();
    for s in &status.services {
        let _ = writeln!(out, "{}\t{}\t{}", s.name, s.vip, s.affinity);
    }
    out
}

/// `balancer pin list` as text: service, prefix, group.
pub fn pins(status: &Status) -> String {
    let mut out = String::new();
    for s in &status.services {
        for p in &s.pins {
            let _ = writeln!(out, "{}\t{}\t{}", s.name, p.cidr, p.group);
        }
    }
    out
}

/// A rollout as text: where it is and what it decided.
pub fn rollout(service: &str, r: &crate::release::rollout::Rollout) -> String {
    let mut out = String::new();
    let state = match r.outcome {
        Some(outcome) => format!("{outcome:?}").to_lowercase(),
        None => format!("{:?}", r.phase).to_lowercase(),
    };
    let (old, new) = r.pairs[r.current];
    let _ = writeln!(
        out,
        "rollout {service}: group {}, pair {}/{} ({old} -> {new}), {state}",
        r.group,
        r.current + 1,
        r.pairs.len()
    );
    for d in &r.decisions {
        let _ = writeln!(out, "  {}", d.what);
    }
    out
}

/// An event of the history as one line: time, who, service, what, and what it changed.
pub fn event(e: &Event) -> String {
    let service = e.service.as_deref().unwrap_or("-");
    let mut line = format!(
        "{}  {}  {service}  {}",
        humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(e.at_ms)
        ),
        e.who,
        e.what
    );
    if e.before.is_some() || e.after.is_some() {
        let side = |s: &Option<String>| s.clone().unwrap_or_else(|| "none".into());
        let _ = write!(line, "  ({} -> {})", side(&e.before), side(&e.after));
    }
    line.push('\n');
    line
}

/// `balancer decap --status` as text: one line of counters.
pub fn decap(iface: &str, c: &crate::decap::Counters) -> String {
    format!(
        "decapsulator on {iface}: {} decapsulated, {} refused, {} malformed, {} passed\n",
        c.decapsulated, c.refused, c.malformed, c.passed
    )
}

/// Unix milliseconds as an RFC 3339 time to the second.
fn time(unix_ms: u64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms),
    )
    .to_string()
}

/// Where a canary's analysis stands, in a few words.
fn analysis(a: &Analysis) -> String {
    let stage = match &a.stage {
        Stage::Warming { until_ms } => format!("warming up until {}", time(*until_ms)),
        Stage::Measuring { since_ms, .. } => format!(
            "window ends at {}",
            time(since_ms.saturating_add(a.plan.window_ms))
        ),
        Stage::Asking { .. } => "asking the Prometheus gates".to_string(),
    };
    let passed = match a.passed {
        true => "a window passed in this step",
        false => "no window passed in this step yet",
    };
    format!(
        "{stage}; {passed}; {} of {} windows without a verdict",
        a.inconclusive, a.plan.max_inconclusive
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        dataplane::{GlobalCounters, MapMemory, Memory},
        history::Who,
    };

    #[test]
    fn status_ends_with_the_data_planes_memory() {
        let maps = vec![MapMemory {
            name: "CONNTRACK".into(),
            bytes: 3 * 1024 * 1024,
        }];
        let text = status(&Status {
            services: Vec::new(),
            counters: GlobalCounters::default(),
            memory: Memory::new(maps, [512 * 1024, 512 * 1024].into_iter()),
            translations: Default::default(),
            announcement: None,
            sync: None,
        });
        assert!(
            text.ends_with(
                "data plane memory: 4.0 MiB (tables of 2 services: 1.0 MiB)  \
                 largest: CONNTRACK 3.0 MiB\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn status_shows_the_flow_sync_in_one_line_when_on() {
        let mut shown = Status {
            services: Vec::new(),
            counters: GlobalCounters::default(),
            memory: Memory::default(),
            translations: Default::default(),
            announcement: None,
            sync: None,
        };
        assert!(!status(&shown).contains("flow sync"));
        shown.sync = Some(Box::new(crate::api::SyncStatus {
            listen: "198.18.1.1:7070".parse().unwrap(),
            peers: 2,
            recorded: 10,
            datagrams: 8,
            bytes: 448,
            unsent: 0,
            received: 12,
            inserted: 11,
            kept: 1,
            dropped: 3,
            overflows: 0,
        }));
        let text = status(&shown);
        let line = text.lines().find(|l| l.starts_with("flow sync")).unwrap();
        assert_eq!(
            line,
            "flow sync on 198.18.1.1:7070 with 2 peers: recorded=10 sent=8 datagrams (448 \
             bytes) unsent=0 received=12 inserted=11 kept=1 dropped=3 overflows=0"
        );
    }

    #[test]
    fn an_event_is_one_line_of_time_who_service_what_and_its_change() {
        let mut e = Event {
            seq: 3,
            at_ms: 1_700_000_000_123,
            service: Some("web".into()),
            what: "flipped to green".into(),
            before: Some("split: blue=100.00% green=0.00%".into()),
            after: Some("split: blue=0.00% green=100.00%".into()),
            who: Who::Uid(0),
        };
        assert_eq!(
            event(&e),
            "2023-11-14T22:13:20.123Z  uid 0  web  flipped to green  \
             (split: blue=100.00% green=0.00% -> split: blue=0.00% green=100.00%)\n"
        );
        e.before = None;
        assert!(event(&e).ends_with("(none -> split: blue=0.00% green=100.00%)\n"));
        (e.service, e.after, e.who) = (None, None, Who::Daemon);
        e.what = "daemon started: data plane attached".into();
        assert_eq!(
            event(&e),
            "2023-11-14T22:13:20.123Z  daemon  -  daemon started: data plane attached\n"
        );
    }

    #[test]
    fn status_says_what_the_host_announces_and_when_it_left() {
        let mut a = Announcement {
            table: 100,
            left: false,
            vips: vec![
                "198.18.0.10".parse().unwrap(),
                "2001:db8::10".parse().unwrap(),
            ],
        };
        assert_eq!(
            announcement(&a),
            "announced over BGP (routing table 100): 198.18.0.10 2001:db8::10"
        );
        a.left = true;
        a.vips.clear();
        assert!(announcement(&a).starts_with("left the fleet: no VIP announced"));
    }
}
