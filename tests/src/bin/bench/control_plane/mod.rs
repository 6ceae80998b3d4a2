//! Section 1c: the control plane. How soon a CLI weight change or flip reaches the first
//! new flow after the CLI returns, what the CLI call costs, how long replacing a
//! service's whole image in the maps takes, what a scrape of the metrics costs, and what
//! a live view (`status --watch`) costs the daemon.

mod live;
mod probe;
mod scrape;
mod swap;
mod watch;

use std::time::Duration;

use anyhow::Result;

use crate::{
    report::{Bar, Chart, Report},
    stats::Spread,
    Plan,
};
use live::Sample;

/// The target for a change to be effective after the CLI returns (p99).
const TARGET: Duration = Duration::from_millis(1);

/// Service sizes of the table-swap rows.
const SWAP_BACKENDS: [u32; 3] = [10, 100, 1000];

/// Service size of the metrics scrape.
const SCRAPE_BACKENDS: usize = 1000;

/// Service size of the live view's CPU row.
const WATCH_BACKENDS: usize = 1000;

/// Measures and reports the section.
pub fn run(report: &mut Report, plan: &Plan) -> Result<()> {
    let samples = live::measure(plan.control_changes)?;
    let swaps = SWAP_BACKENDS
        .iter()
        .map(|&n| swap::measure(n, plan.rounds.max(10)))
        .collect::<Result<Vec<_>>>()?;
    let scrapes = scrape::measure(SCRAPE_BACKENDS, plan.rounds.max(10) * 5)?;
    let watching = watch::measure(WATCH_BACKENDS, plan.watch_window, plan.watch_rounds)?;

    report.line("## Control plane\n");
    report.line(
        "The real daemon in a namespace lab, driven by the real CLI. Service `cp` has backend \
         0 alone in group `a` (100 % of the split) and backend 1 alone in group `b`. A weight \
         change sets backend 0's weight to 0 (group `a` cannot serve, its share falls to `b`) \
         or back to 100; a flip moves the split to the other group. Either way every new flow \
         changes backend. Each change is timed from spawning the CLI to its exit; then new \
         flows are probed until one reaches the new backend. A probe is one \
         BPF_PROG_TEST_RUN of a SYN from an unused source, run by a second copy of the XDP \
         program loaded over the daemon's pinned maps, so it reads exactly the live tables; \
         the frame's destination MAC names the backend. \"Effective\" is measured to the end \
         of the first probe that saw the change: an upper bound, one probe coarse.\n",
    );
    let rows = [("weight change", &samples.weight), ("flip", &samples.flip)];
    report.table(
        &[
            "change",
            "changes",
            "CLI wall time p50 / p99 / max (ms)",
            "CLI return → effective p50 / p99 / max (µs)",
            "effective at the first probe",
            "not effective within 1 s",
        ],
        &rows
            .iter()
            .map(|(name, samples)| latency_row(name, samples))
            .collect::<Vec<_>>(),
    );
    let probe_us = Spread::of(
        [&samples.weight, &samples.flip]
            .into_iter()
            .flatten()
            .map(|s| s.probe.as_secs_f64() * 1e6)
            .collect(),
    );
    report.line(format!(
        "A probe made between changes takes {probe_us} µs; the first probe after the CLI \
         returns is slower (this process has just woken up), and that is most of the \
         \"effective\" figure. The daemon answers the CLI only after the maps are written, so \
         a change is expected to be seen by the first probe.\n"
    ));
    for (name, samples) in rows {
        report.line(target_line(name, samples));
    }
    report.line("");
    for (name, samples) in rows {
        check(report, name, samples);
    }
    report.chart(Chart {
        file: "control-plane-effective.png".into(),
        title: "CLI return → first new flow on the new backend".into(),
        unit: "µs".into(),
        bars: rows
            .iter()
            .filter_map(|(name, samples)| {
                let effective = effective_us(samples);
                (!effective.is_empty()).then(|| Bar {
                    label: name.to_string(),
                    value: Spread::of(effective),
                })
            })
            .collect(),
    });
    report.chart(Chart {
        file: "control-plane-cli.png".into(),
        title: "CLI wall time (spawn to exit) of one change".into(),
        unit: "ms".into(),
        bars: rows
            .iter()
            .map(|(name, samples)| Bar {
                label: name.to_string(),
                value: Spread::of(cli_ms(samples)),
            })
            .collect(),
    });

    report.line("### Full table swap\n");
    report.line(format!(
        "One service's whole image: `compile` from the desired state (split cells, one \
         Maglev table per group), then `DataPlane::write_service` (a new tables map made, \
         filled through a memory mapping and swapped in; the swap returns after the \
         kernel's RCU grace period, which the time includes); {} rounds each.\n",
        plan.rounds.max(10)
    ));
    report.table(
        &["backends", "compile (ms)", "map write (ms)"],
        &swaps
            .iter()
            .map(|s| vec![s.backends.to_string(), s.compile.show(3), s.write.show(3)])
            .collect::<Vec<_>>(),
    );
    report.chart(Chart {
        file: "control-plane-swap.png".into(),
        title: "Full table swap of one service".into(),
        unit: "ms".into(),
        bars: swaps
            .iter()
            .flat_map(|s| {
                [
                    Bar {
                        label: format!("compile ({} backends)", s.backends),
                        value: s.compile,
                    },
                    Bar {
                        label: format!("map write ({} backends)", s.backends),
                        value: s.write,
                    },
                ]
            })
            .collect(),
    });
    report.line("### Metrics scrape\n");
    report.line(format!(
        "The daemon with `--metrics-listen`, one service of {} backends in two groups \
         (addresses with static neighbour entries, no hosts behind them); `GET /metrics` from \
         the LB namespace, connect to last byte, {} times. A scrape reads each backend's \
         per-CPU counters and the state under the controller's lock, and the executor's \
         latest walk of connection tracking (made every 5 s, off the lock).\n",
        scrapes.backends,
        plan.rounds.max(10) * 5
    ));
    report.table(
        &["backends", "scrape (ms)", "answer (KiB)", "lines"],
        &[vec![
            scrapes.backends.to_string(),
            scrapes.time.show(2),
            format!("{:.0}", scrapes.bytes as f64 / 1024.0),
            scrapes.lines.to_string(),
        ]],
    );
    report.line("### Live view\n");
    report.line(format!(
        "The daemon (no `--metrics-listen`) with one service of {} backends in two groups, \
         as above. Its CPU time (user + system, all threads, from `/proc/PID/stat`) over \
         windows of {} s: idle (no request), then while one `balancer status --watch --json` \
         runs, which asks for `status` once a second — each answer walks connection \
         tracking off the controller's lock and reads every backend's per-CPU counters \
         under it. {} pair(s) of windows, side by side. \"Per refresh\" is the daemon's \
         CPU time with the watch less its idle time (medians), over the watch's refreshes \
         in a window.\n",
        watching.backends,
        watching.window.as_secs(),
        plan.watch_rounds
    ));
    let per_refresh_ms = (watching.watched.median - watching.idle.median) / 100.0
        * watching.window.as_secs_f64()
        * 1e3
        / watching.refreshes.median.max(1.0);
    report.table(
        &[
            "backends",
            "daemon idle (% of a core)",
            "daemon, one watch (% of a core)",
            "daemon per refresh (ms)",
            "the watch itself (% of a core)",
            "refreshes per window",
        ],
        &[vec![
            watching.backends.to_string(),
            watching.idle.show(2),
            watching.watched.show(2),
            format!("{per_refresh_ms:.1}"),
            watching.client.show(2),
            watching.refreshes.show(0),
        ]],
    );
    Ok(())
}

/// Fails the run unless every change of kind `name` was made and took effect within
/// [`live::EFFECTIVE_TIMEOUT`]: how soon is shown, never asserted.
fn check(report: &mut Report, name: &str, samples: &[Sample]) {
    const SECTION: &str = "control plane";
    if samples.is_empty() {
        report.fail(SECTION, format!("no {name} was made"));
    }
    let late = late(samples);
    if late > 0 {
        report.fail(
            SECTION,
            format!(
                "{late} of {} {name}s not effective within {:?} of the CLI's exit",
                samples.len(),
                live::EFFECTIVE_TIMEOUT
            ),
        );
    }
}

/// Changes never seen by a new flow, or seen only after [`live::EFFECTIVE_TIMEOUT`].
fn late(samples: &[Sample]) -> usize {
    samples
        .iter()
        .filter(|s| s.effective.is_none_or(|e| e > live::EFFECTIVE_TIMEOUT))
        .count()
}

/// One table row: CLI and effective latencies with counts.
fn latency_row(name: &str, samples: &[Sample]) -> Vec<String> {
    let first = samples.iter().filter(|s| s.first_probe).count();
    let late = late(samples);
    vec![
        name.to_string(),
        samples.len().to_string(),
        Percentiles::of(cli_ms(samples)).show(2),
        Percentiles::of(effective_us(samples)).show(0),
        format!("{first} of {}", samples.len()),
        late.to_string(),
    ]
}

/// The target, and whether this run met it.
fn target_line(name: &str, samples: &[Sample]) -> String {
    let late = late(samples);
    let p99 = Percentiles::of(effective_us(samples)).p99;
    let target_us = TARGET.as_secs_f64() * 1e6;
    let verdict = match p99 {
        Some(p99) if late == 0 && p99 <= target_us => format!("met (p99 {p99:.0} µs)"),
        Some(p99) => format!("not met (p99 {p99:.0} µs; {late} not effective within 1 s)"),
        None => "not met (never effective)".to_string(),
    };
    format!(
        "- Target: {name} effective ≤ {} ms after the CLI returns (p99 over ≥ 100 changes): \
         {verdict}.",
        TARGET.as_millis()
    )
}

fn cli_ms(samples: &[Sample]) -> Vec<f64> {
    samples.iter().map(|s| s.cli.as_secs_f64() * 1e3).collect()
}

fn effective_us(samples: &[Sample]) -> Vec<f64> {
    samples
        .iter()
        .filter_map(|s| s.effective)
        .map(|d| d.as_secs_f64() * 1e6)
        .collect()
}

/// p50, p99 and max of a set of latencies (None when empty).
struct Percentiles {
    p50: Option<f64>,
    p99: Option<f64>,
    max: Option<f64>,
}

impl Percentiles {
    fn of(mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        // Nearest rank: the smallest value with at least p of the values at or below it.
        let rank = |p: f64| {
            let index = (p * values.len() as f64).ceil() as usize;
            values.get(index.saturating_sub(1)).copied()
        };
        Self {
            p50: rank(0.5),
            p99: rank(0.99),
            max: values.last().copied(),
        }
    }

    /// `p50 / p99 / max` with `decimals` decimals, or `–` when there were no values.
    fn show(&self, decimals: usize) -> String {
        match (self.p50, self.p99, self.max) {
            (Some(p50), Some(p99), Some(max)) => {
                format!("{p50:.decimals$} / {p99:.decimals$} / {max:.decimals$}")
            }
            _ => "–".to_string(),
        }
    }
}
