//! Sections on the lookup tables: build time and disruption.

use std::{net::IpAddr, time::Instant};

use anyhow::Result;
use balancer_user::maglev::{build_table, MaglevBackend, DEFAULT_TABLE_SIZE};

use crate::{
    report::{Bar, Chart, Report},
    stats::Spread,
    Plan,
};

/// `n` backends of equal weight with distinct addresses.
fn backends_for(n: u32) -> Vec<MaglevBackend> {
    (0..n)
        .map(|i| MaglevBackend {
            index: i,
            addr: IpAddr::from([198, 18, (i / 250) as u8 + 1, (i % 250) as u8 + 1]),
            weight: 100,
        })
        .collect()
}

/// Times building one lookup table for 10, 100 and 1000 backends.
pub fn build_times(report: &mut Report, plan: &Plan) -> Result<()> {
    let mut rows = Vec::new();
    let mut bars = Vec::new();
    // Median build time; the last size measured is 1000.
    let mut at_1000 = 0.0;
    for n in [10u32, 100, 1000] {
        let backends = backends_for(n);
        let times = (0..plan.rounds.max(5))
            .map(|_| {
                let start = Instant::now();
                build_table(&backends, DEFAULT_TABLE_SIZE)
                    .map(|_| start.elapsed().as_secs_f64() * 1e3)
            })
            .collect::<Result<_, _>>()?;
        let time = Spread::of(times);
        at_1000 = time.median;
        rows.push(vec![n.to_string(), time.show(2)]);
        bars.push(Bar {
            label: format!("{n} backends"),
            value: time,
        });
    }
    report.line(format!(
        "## Lookup table build ({DEFAULT_TABLE_SIZE} slots)\n"
    ));
    report.table(&["backends", "ms per build"], &rows);
    report.line(format!(
        "- Target: ≤ 2 ms for 1000 backends: {} ({at_1000:.2} ms).\n",
        if at_1000 <= 2.0 { "met" } else { "missed" }
    ));
    if at_1000 > 2.0 {
        report.line(
            "Why: the build walks about 8.3 × 65537 random slots for 1000 backends and keeps the \
             earliest claim in a 512 KiB array, larger than this CPU's L2; each step waits on a \
             cache miss. Computing slots a batch ahead of the claims overlaps the misses; \
             splitting the walk between this VM's two vCPUs gave nothing (see \
             [OPTIMISATIONS.md](OPTIMISATIONS.md)). A build runs once per change, off the packet \
             path.\n",
        );
    }
    report.chart(Chart {
        file: "table-build.png".into(),
        title: format!("Lookup table build, {DEFAULT_TABLE_SIZE} slots"),
        unit: "ms per build".into(),
        bars,
    });
    Ok(())
}

/// Fraction of slots that move when one of N backends leaves or joins, against 1/N.
pub fn disruption(report: &mut Report) -> Result<()> {
    let mut rows = Vec::new();
    let mut worst: f64 = 0.0;
    for n in [10u32, 100, 1000] {
        let all = backends_for(n + 1);
        let base = build_table(&all[..n as usize], DEFAULT_TABLE_SIZE)?;
        let fewer = build_table(&all[..n as usize - 1], DEFAULT_TABLE_SIZE)?;
        let more = build_table(&all, DEFAULT_TABLE_SIZE)?;
        let changed = |a: &[u32], b: &[u32]| a.iter().zip(b).filter(|(x, y)| x != y).count() as f64;
        let size = f64::from(DEFAULT_TABLE_SIZE);
        let remove = changed(&base, &fewer) / (size / f64::from(n));
        let add = changed(&base, &more) / (size / f64::from(n + 1));
        worst = worst.max(remove).max(add);
        rows.push(vec![
            n.to_string(),
            format!("{remove:.3}"),
            format!("{add:.3}"),
        ]);
    }
    report.line("## Disruption: table slots that change when one backend leaves or joins\n");
    report.table(
        &[
            "backends",
            "remove: changed / ideal",
            "add: changed / ideal",
        ],
        &rows,
    );
    report.line(format!(
        "- Target: ≤ 1.1× the ideal: {} (worst {worst:.3}×).\n",
        if worst <= 1.1 { "met" } else { "missed" }
    ));
    Ok(())
}
