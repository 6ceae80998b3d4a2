//! `cargo xtask bench [--quick] [--only SECTIONS]`: what the data plane and the control
//! plane cost, measured side by side in one run and written to a markdown report with PNG
//! charts next to it: `bench/REPORT.md` for the full run of every section, a temporary
//! directory for a quick one or one of some sections (so a smoke or partial run never
//! overwrites the committed report), or `--report PATH`.
//!
//! `--only` takes a comma-separated list of sections: `per-packet`, `end-to-end`, `nat`,
//! `tables`, `control-plane`, `memory`, `sync`. The `end-to-end`, `nat`, `control-plane`
//! and `sync` sections run the daemon: `$BALANCER_BIN` (`cargo xtask bench` sets it).
//!
//! Every figure is a median over rounds with min and max, or a ratio to a baseline measured
//! in the same run: numbers on a shared VM are noisy. Timings are never asserted, but a
//! section that measured nothing (no packet delivered, no connection answered, a change
//! never effective, a per-packet row on the wrong path or without a time) fails the run
//! after the report is written.

mod control_plane;
mod end_to_end;
mod frames;
mod memory;
mod per_packet;
mod plane;
mod plots;
mod report;
mod sections;
mod stats;
mod sync;
mod tables;

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context, Result};

use report::Report;
use sections::Section;

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
    /// Length of each flood and connection test of `nat` against nftables.
    pub nat_time: Duration,
    /// Length of each window of the live view's CPU row (idle, then watched).
    pub watch_window: Duration,
    /// Pairs of windows of that row.
    pub watch_rounds: usize,
}

/// What `--help` prints.
fn usage() -> String {
    format!(
        "usage: bench [--quick] [--only SECTIONS] [--report PATH]\n\
         \n  --quick          fewer repetitions and rounds: a smoke run\
         \n  --only SECTIONS  only these sections, comma-separated: {}\
         \n  --report PATH    where to write the report (default: bench/REPORT.md for a full\
         \n                   run of every section, else $TMPDIR/balancer-bench-quick/REPORT.md)\
         \n\nThe end-to-end, nat, control-plane and sync sections run the daemon $BALANCER_BIN.\n",
        Section::names()
    )
}

fn main() -> Result<()> {
    let mut quick = false;
    let mut report_path = None;
    let mut only = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--report" => {
                report_path = Some(PathBuf::from(args.next().context("--report needs a path")?))
            }
            "--help" | "-h" => {
                print!("{}", usage());
                return Ok(());
            }
            "--only" => {
                let list = args.next().context("--only needs a list of sections")?;
                only = Some(Section::parse_list(&list)?);
            }
            other => bail!("unknown argument {other:?}\n{}", usage()),
        }
    }
    let partial = only.is_some();
    let sections = only.unwrap_or(Section::ALL.to_vec());
    let plan = if quick {
        Plan {
            quick,
            repeat: 100_000,
            rounds: 3,
            new_flows: 2_000,
            conntrack_fill: 100_000,
            control_changes: 100,
            forwarding_time: Duration::from_secs(2),
            nat_time: Duration::from_secs(1),
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
            nat_time: Duration::from_secs(3),
            watch_window: Duration::from_secs(10),
            watch_rounds: 3,
        }
    };
    let report_path = report_path.unwrap_or_else(|| match quick || partial {
        true => std::env::temp_dir()
            .join("balancer-bench-quick")
            .join("REPORT.md"),
        false => PathBuf::from("bench/REPORT.md"),
    });
    let mut report = Report::default();
    header(&mut report, &plan, partial.then_some(&sections[..]))?;
    for section in sections {
        match section {
            Section::PerPacket => per_packet::run(&mut report, &plan)?,
            Section::EndToEnd => end_to_end::run(&mut report, &plan)?,
            Section::Nat => end_to_end::nat::run(&mut report, &plan)?,
            Section::Tables => {
                tables::build_times(&mut report, &plan)?;
                tables::disruption(&mut report)?;
            }
            Section::ControlPlane => control_plane::run(&mut report, &plan)?,
            Section::Memory => memory::run(&mut report)?,
            Section::Sync => sync::run(&mut report, &plan)?,
        }
    }
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

/// The report's title, the machine, and the run's sizes; `only` names the sections of a
/// partial run.
fn header(report: &mut Report, plan: &Plan, only: Option<&[Section]>) -> Result<()> {
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
    let only = only.map(|sections| {
        let names: Vec<&str> = sections.iter().map(|s| s.name()).collect();
        names.join(",")
    });
    report.line(format!(
        "Machine: {cores} × {model}; kernel {}; mode: {}{}. Regenerate with `cargo xtask \
         bench{}{}`.\n",
        kernel.trim(),
        if plan.quick { "quick" } else { "full" },
        only.as_ref()
            .map_or(String::new(), |names| format!(", sections {names} only")),
        if plan.quick { " --quick" } else { "" },
        only.as_ref()
            .map_or(String::new(), |names| format!(" --only {names}")),
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
