//! What the live view shows of a frame, as text cells: per service a heading, its
//! releases (canary, rollout, flip drain, each with its last decision) and one row per
//! group and per backend. The terminal screen (`screen`) and the plain fallback
//! ([`View::plain`]) both draw it.

use std::fmt::Write as _;

use super::{frame::Frame, rates::Rates};
use crate::{
    api::{BackendStatus, Health, ServiceStatus},
    release::{canary::Canary, rollout::Rollout, Decision},
};

/// Column headings of the rows.
pub const COLUMNS: [&str; 12] = [
    "GROUP / BACKEND",
    "WEIGHT",
    "SHARE%",
    "HEALTH",
    "ACTIVE",
    "NEW/s",
    "PKT/s",
    "BYTES/s",
    "FIN/s",
    "RST/s",
    "SYN_RTX/s",
    "UNANS/s",
];

/// Everything one refresh shows.
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    /// When the answer came, RFC 3339.
    pub time: String,
    /// Why the last refresh failed, if it did (the view shows the frame before it).
    pub problem: Option<String>,
    /// Per service.
    pub services: Vec<ServiceView>,
}

/// One service.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceView {
    /// Name, VIP and split.
    pub heading: String,
    /// One line per release state or decision.
    pub releases: Vec<String>,
    /// Groups, each followed by its backends, then retired backends.
    pub rows: Vec<Row>,
}

/// What a row stands for (the screen styles them apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowKind {
    /// A group: the sums of its backends.
    Group,
    /// A backend that serves (or has no checks).
    Backend,
    /// A backend that fails its health checks.
    Down,
    /// A retired backend: out of the tables, its flows still reaching it.
    Retired,
}

/// One row: a cell per [`COLUMNS`] entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// What it stands for.
    pub kind: RowKind,
    /// The cells.
    pub cells: Vec<String>,
}

impl View {
    /// The view of `frame`.
    pub fn of(frame: &Frame) -> Self {
        let services = frame
            .status
            .services
            .iter()
            .map(|service| ServiceView::of(service, frame))
            .collect();
        Self {
            time: rfc3339(frame.at_ms),
            problem: None,
            services,
        }
    }

    /// The view as plain text: a time line, per service its heading, releases and a table
    /// with aligned columns, and a blank line.
    pub fn plain(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.time);
        if let Some(problem) = &self.problem {
            let _ = writeln!(out, "daemon: {problem}");
        }
        for service in &self.services {
            let _ = writeln!(out, "{}", service.heading);
            for line in &service.releases {
                let _ = writeln!(out, "  {line}");
            }
            let header: Vec<String> = COLUMNS.iter().map(|c| c.to_string()).collect();
            let rows: Vec<&Vec<String>> = std::iter::once(&header)
                .chain(service.rows.iter().map(|r| &r.cells))
                .collect();
            let widths = widths(&rows);
            for cells in rows {
                let mut line = String::from(" ");
                for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
                    match i {
                        0 => {
                            let _ = write!(line, " {cell:<width$}");
                        }
                        _ => {
                            let _ = write!(line, " {cell:>width$}");
                        }
                    }
                }
                let _ = writeln!(out, "{}", line.trim_end());
            }
        }
        out.push('\n');
        out
    }
}

/// The width of each column of `rows` (in characters).
pub fn widths(rows: &[&Vec<String>]) -> Vec<usize> {
    let mut widths = vec![0; COLUMNS.len()];
    for cells in rows {
        for (width, cell) in widths.iter_mut().zip(cells.iter()) {
            *width = (*width).max(cell.chars().count());
        }
    }
    widths
}

impl ServiceView {
    fn of(service: &ServiceStatus, frame: &Frame) -> Self {
        let split: Vec<String> = service
            .split
            .iter()
            .map(|g| format!("{}={}%", g.group, g.percent))
            .collect();
        let heading = format!(
            "service {}  {}  split {}",
            service.name,
            service.vip,
            if split.is_empty() {
                "-".to_string()
            } else {
                split.join(" ")
            }
        );
        let mut releases = Vec::new();
        if let Some(c) = &service.canary {
            releases.push(canary(c, frame.at_ms));
            releases.extend(c.decisions.last().map(last_decision));
        }
        if let Some(r) = &service.rollout {
            releases.push(rollout(r));
            releases.extend(r.decisions.last().map(last_decision));
        }
        if let Some(d) = &service.flip_drain {
            releases.push(format!(
                "flip drain of {}: {}{}",
                d.groups.join(", "),
                left(d.deadline_ms, frame.at_ms),
                if d.cut { ", then cut" } else { "" }
            ));
        }
        let rates = frame.rates.iter().find(|r| r.service == service.name);
        let unknown = Rates::default();
        let mut rows = Vec::new();
        for g in &service.split {
            let members: Vec<&BackendStatus> = service
                .backends
                .iter()
                .filter(|b| b.group == g.group)
                .collect();
            let checked: Vec<Health> = members.iter().filter_map(|b| b.health).collect();
            let health = match checked.is_empty() {
                true => "-".to_string(),
                false => {
                    let up = checked.iter().filter(|h| **h == Health::Up).count();
                    format!("{up}/{} up", checked.len())
                }
            };
            let active = members.iter().map(|b| b.active_flows).sum::<u64>();
            let group_rates = rates.and_then(|r| r.group(&g.group)).unwrap_or(&unknown);
            rows.push(Row {
                kind: RowKind::Group,
                cells: cells(
                    [
                        g.group.clone(),
                        String::new(),
                        g.percent.to_string(),
                        health,
                    ],
                    active,
                    group_rates,
                ),
            });
            for b in members {
                let name = match &b.drain {
                    Some(d) if d.running() => format!("  {} (draining)", b.addr),
                    Some(_) => format!("  {} (drained)", b.addr),
                    None => format!("  {}", b.addr),
                };
                let backend_rates = rates.and_then(|r| r.backend(b.addr)).unwrap_or(&unknown);
                rows.push(Row {
                    kind: match b.health {
                        Some(Health::Down) => RowKind::Down,
                        _ => RowKind::Backend,
                    },
                    cells: cells(
                        [
                            name,
                            b.weight.to_string(),
                            format!("{:.2}", b.effective_share),
                            b.health.map_or("-".to_string(), |h| h.to_string()),
                        ],
                        b.active_flows,
                        backend_rates,
                    ),
                });
            }
        }
        for r in &service.retired {
            rows.push(Row {
                kind: RowKind::Retired,
                cells: cells(
                    [
                        format!("  {} (retired, {})", r.addr, r.group),
                        "-".into(),
                        "-".into(),
                        r.health.map_or("-".to_string(), |h| h.to_string()),
                    ],
                    r.active_flows,
                    &unknown,
                ),
            });
        }
        Self {
            heading,
            releases,
            rows,
        }
    }
}

/// A row's cells: the four leading ones, the active flows, then the rates.
fn cells(leading: [String; 4], active: u64, rates: &Rates) -> Vec<String> {
    let mut cells = leading.to_vec();
    cells.push(active.to_string());
    cells.extend(
        [
            rates.new_flows,
            rates.packets,
            rates.bytes,
            rates.fin_closes,
            rates.resets,
            rates.syn_retransmits,
            rates.unanswered_flows,
        ]
        .map(rate),
    );
    cells
}

/// A rate with one decimal and an SI suffix above a thousand; `-` when unknown.
pub fn rate(value: Option<f64>) -> String {
    let Some(v) = value else {
        return "-".to_string();
    };
    match v {
        v if v < 1e3 => format!("{v:.1}"),
        v if v < 1e6 => format!("{:.1}k", v / 1e3),
        v if v < 1e9 => format!("{:.1}M", v / 1e6),
        v => format!("{:.1}G", v / 1e9),
    }
}

/// A canary's state in one line.
fn canary(c: &Canary, now_ms: u64) -> String {
    let state = match (&c.outcome, c.next_step_at_ms, c.paused_remaining_ms) {
        (Some(outcome), _, _) => format!("{outcome:?}").to_lowercase(),
        (None, _, Some(left)) => format!("paused, {} left in the step", seconds(left)),
        (None, Some(at), _) => format!("next step {}", left(at, now_ms)),
        (None, None, None) => "holding at the last step".to_string(),
    };
    format!(
        "canary {} -> {}: step {}/{} ({}%), {state}",
        c.from,
        c.to,
        c.step + 1,
        c.steps.len(),
        c.steps[c.step]
    )
}

/// A rollout's state in one line.
fn rollout(r: &Rollout) -> String {
    let state = match r.outcome {
        Some(outcome) => format!("{outcome:?}").to_lowercase(),
        None => format!("{:?}", r.phase).to_lowercase(),
    };
    let (old, new) = r.pairs[r.current];
    format!(
        "rollout of {}: pair {}/{} ({old} -> {new}), {state}",
        r.group,
        r.current + 1,
        r.pairs.len()
    )
}

fn last_decision(d: &Decision) -> String {
    format!("last decision {}: {}", clock(d.at_ms), d.what)
}

/// "in 12s" until `at_ms` from `now_ms`, or "due" once it passed.
fn left(at_ms: u64, now_ms: u64) -> String {
    match at_ms.checked_sub(now_ms) {
        Some(ms) if ms > 0 => format!("in {}", seconds(ms)),
        _ => "due".to_string(),
    }
}

/// Milliseconds as whole seconds, rounded up ("12s").
fn seconds(ms: u64) -> String {
    format!("{}s", ms.div_ceil(1000))
}

/// Unix milliseconds as an RFC 3339 time to the second.
fn rfc3339(unix_ms: u64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms),
    )
    .to_string()
}

/// Unix milliseconds as the time of day, "HH:MM:SS" (UTC).
fn clock(unix_ms: u64) -> String {
    let full = rfc3339(unix_ms);
    full.get(11..19).unwrap_or(&full).to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::{
        api::RetiredStatus,
        release::canary::Outcome,
        watch::{
            frame::Sampler,
            rates::tests::{backend, status},
        },
    };

    /// 2026-01-01T00:00:00Z.
    pub(crate) const NOW_MS: u64 = 1_767_225_600_000;

    /// Two frames one second apart of service `web`: blue 198.18.0.101 (up) and
    /// 198.18.0.102 (down), green 198.18.0.103 draining, a running canary and a retired
    /// backend; returns the second.
    pub(crate) fn frame() -> Frame {
        let mut sampler = Sampler::default();
        let start = Instant::now();
        let answer = |count: u64| {
            let mut s = status(vec![
                backend("198.18.0.101", "blue", count),
                backend("198.18.0.102", "blue", 0),
                backend("198.18.0.103", "green", count * 2),
            ]);
            let web = &mut s.services[0];
            web.backends[0].health = Some(Health::Up);
            web.backends[1].health = Some(Health::Down);
            web.backends[2].drain = Some(crate::release::drain::Drain::begin(0, None, false, 100));
            web.canary = Some(
                serde_json::from_value(serde_json::json!({
                    "from": "blue",
                    "to": "green",
                    "steps": [1000, 2500, 10_000],
                    "interval_ms": 60_000,
                    "step": 1,
                    "next_step_at_ms": NOW_MS + 42_000,
                    "paused_remaining_ms": null,
                    "outcome": null,
                    "decisions": [
                        {"at_ms": NOW_MS - 78_000, "what": "started; step 1/3: 10.00% to green"},
                        {"at_ms": NOW_MS - 18_000, "what": "interval elapsed; step 2/3: 25.00% to green"},
                    ],
                }))
                .unwrap(),
            );
            web.retired = vec![RetiredStatus {
                addr: "198.18.0.99".parse().unwrap(),
                group: "blue".into(),
                since_ms: NOW_MS - 5000,
                active_flows: 3,
                health: None,
            }];
            s
        };
        sampler.frame(answer(100), start, NOW_MS - 1000);
        sampler.frame(answer(400), start + Duration::from_secs(1), NOW_MS)
    }

    #[test]
    fn a_service_shows_its_split_canary_last_decision_and_rows_with_rates() {
        let view = View::of(&frame());
        assert_eq!(view.time, "2026-01-01T00:00:00Z");
        let web = &view.services[0];
        assert_eq!(
            web.heading,
            "service web  198.18.0.10:80/tcp  split blue=75.00% green=25.00%"
        );
        assert_eq!(
            web.releases,
            [
                "canary blue -> green: step 2/3 (25.00%), next step in 42s",
                "last decision 23:59:42: interval elapsed; step 2/3: 25.00% to green",
            ]
        );
        let names: Vec<&str> = web.rows.iter().map(|r| r.cells[0].as_str()).collect();
        assert_eq!(
            names,
            [
                "blue",
                "  198.18.0.101",
                "  198.18.0.102",
                "green",
                "  198.18.0.103 (draining)",
                "  198.18.0.99 (retired, blue)",
            ]
        );
        // blue 198.18.0.101: 300 new flows, 3000 packets, 300 kB in one second.
        assert_eq!(
            web.rows[1].cells,
            [
                "  198.18.0.101",
                "100",
                "50.00",
                "up",
                "400",
                "300.0",
                "3.0k",
                "300.0k",
                "300.0",
                "300.0",
                "300.0",
                "300.0"
            ]
        );
        assert_eq!(web.rows[1].kind, RowKind::Backend);
        assert_eq!(web.rows[2].kind, RowKind::Down);
        assert_eq!(
            &web.rows[0].cells[..6],
            ["blue", "", "75.00", "1/2 up", "400", "300.0"]
        );
        assert_eq!(&web.rows[3].cells[3..6], ["-", "800", "600.0"]);
        assert_eq!(web.rows[5].kind, RowKind::Retired);
        assert_eq!(&web.rows[5].cells[3..6], ["-", "3", "-"]);
    }

    #[test]
    fn a_finished_canary_shows_its_outcome() {
        let mut frame = frame();
        let canary = frame.status.services[0].canary.as_mut().unwrap();
        canary.outcome = Some(Outcome::RolledBack);
        canary.next_step_at_ms = None;
        canary.decisions.push(Decision {
            at_ms: NOW_MS,
            what: "rolled back: 2 of 2 backends of green fail their health checks".into(),
        });
        let view = View::of(&frame);
        assert_eq!(
            view.services[0].releases,
            [
                "canary blue -> green: step 2/3 (25.00%), rolledback",
                "last decision 00:00:00: rolled back: 2 of 2 backends of green fail their health checks",
            ]
        );
    }

    #[test]
    fn rates_read_with_one_decimal_and_a_suffix() {
        assert_eq!(rate(None), "-");
        assert_eq!(rate(Some(0.0)), "0.0");
        assert_eq!(rate(Some(999.94)), "999.9");
        assert_eq!(rate(Some(12_345.0)), "12.3k");
        assert_eq!(rate(Some(2_500_000.0)), "2.5M");
        assert_eq!(rate(Some(7.0e9)), "7.0G");
    }

    #[test]
    fn the_plain_text_aligns_columns_under_their_headings() {
        let text = View::of(&frame()).plain();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "2026-01-01T00:00:00Z");
        assert_eq!(
            lines[1],
            "service web  198.18.0.10:80/tcp  split blue=75.00% green=25.00%"
        );
        assert!(lines[2].starts_with("  canary blue -> green"), "{text}");
        let header = lines[4];
        assert!(header.starts_with("  GROUP / BACKEND"), "{header}");
        let row = lines[6];
        assert!(row.starts_with("    198.18.0.101 "), "{row}");
        // Numbers end under the end of their heading.
        let end_of = |line: &str, word: &str| line.find(word).unwrap() + word.len();
        assert_eq!(end_of(header, "NEW/s"), end_of(row, "300.0"));
        assert_eq!(end_of(header, "BYTES/s"), end_of(row, "300.0k"));
        assert!(text.ends_with("\n\n"));
    }
}
