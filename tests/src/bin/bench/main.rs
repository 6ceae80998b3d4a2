//! `cargo xtask bench [--quick]`: what the data plane and the control plane cost, measured
//! side by side in one run and written to a markdown report with PNG charts next to it:
//! `bench/REPORT.md` for the full run, a temporary directory for the quick one (so a smoke
//! run never overwrites the committed report), or `--report PATH`.
//!
//! Every figure is a median over rounds with min and max, or a ratio to a baseline measured
//! in the same run: numbers on a shared VM are noisy. Timings are never asserted, but a
//! section that measured nothing (no packet delivered, no connection answered, a change
//! never effective, a per-packet row on the wrong path or without a time) fails the run
//! after the report is written.

mod control_plane;
mod end_to_end;
mod frames;
mod per_packet;
mod plane;
mod plots;
mod report;
mod stats;
mod tables;

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context, Result};

use report::Report;

/// Sizes of one run.
pub struct Plan {
    /// A smoke run (CI): fewer repetitions and rounds.
    pub quick: bool,
    /// BPF_PROG_TEST_RUN repetitions per round.
    pub repeat: u32,
    /// Rounds per figure.
    pub rounds: usize,
    /// New flows measured per round.
    pub new_flows: u32,
    /// Conntrack entries for the "filled" row.
    pub conntrack_fill: u32,
    /// CLI changes of each kind in the control-plane section.
    pub control_changes: usize,
    /// Length of each end-to-end flood and connection test.
    pub forwarding_time: Duration,
    /// Length of each window of the live view's CPU row (idle, then watched).
    pub watch_window: Duration,
    /// Pairs of windows of that row.
    pub watch_rounds: usize,
}

fn main() -> Result<()> {
    let mut quick = false;
    let mut report_path = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--report" => {
                report_path = Some(PathBuf::from(args.next().context("--report needs a path")?))
            }
            other => bail!("unknown argument {other:?} (use --quick, --report PATH)"),
        }
    }
    let plan = if quick {
        Plan {
            quick,
            repeat: 100_000,
            rounds: 3,
            new_flows: 2_000,
            conntrack_fill: 100_000,
            control_changes: 100,
            forwarding_time: Duration::from_secs(2),
            watch_window: Duration::from_secs(3),
            watch_rounds: 1,
        }
    } else {
        Plan {
            quick,
            repeat: 1_000_000,
            rounds: 5,
            new_flows: 20_000,
            conntrack_fill: 1_000_000,
            control_changes: 300,
            forwarding_time: Duration::from_secs(5),
            watch_window: Duration::from_secs(10),
            watch_rounds: 3,
        }
    };
    let report_path = report_path.unwrap_or_else(|| match quick {
        true => std::env::temp_dir()
            .join("balancer-bench-quick")
            .join("REPORT.md"),
        false => PathBuf::from("bench/REPORT.md"),
    });
    let mut report = Report::default();
    header(&mut report, &plan)?;
    per_packet::run(&mut report, &plan)?;
    end_to_end::run(&mut report, &plan)?;
    tables::build_times(&mut report, &plan)?;
    tables::disruption(&mut report)?;
    control_plane::run(&mut report, &plan)?;
    let dir = report_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    std::fs::write(&report_path, &report.markdown)?;
    plots::draw_all(&report.charts, dir)?;
    print!("{}", report.markdown);
    println!("bench: report written to {}", report_path.display());
    if !report.failures.is_empty() {
        bail!("measured nothing: {}", report.failures.join("; "));
    }
    Ok(())
}

fn header(report: &mut Report, plan: &Plan) -> Result<()> {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo")?;
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']))
        })
        .unwrap_or("unknown");
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    report.line("# balancer benchmark report\n");
    report.line(format!(
        "Machine: {cores} × {model}; kernel {}; mode: {}. Regenerate with `cargo xtask bench{}`.\n",
        kernel.trim(),
        if plan.quick { "quick" } else { "full" },
        if plan.quick { " --quick" } else { "" }
    ));
    report.line(
        "Each section states its targets and whether this run met them. What was changed to \
         reach them, with before/after numbers, is in [OPTIMISATIONS.md](OPTIMISATIONS.md) \
         (written by hand, not regenerated).\n",
    );
    report.line(format!(
        "Each figure is the median of {} rounds, with [min–max]. Per-packet times come from \
         BPF_PROG_TEST_RUN (the kernel's own mean per run, {} runs per round).\n",
        plan.rounds, plan.repeat
    ));
    Ok(())
}
