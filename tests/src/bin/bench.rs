//! `cargo xtask bench [--quick]`: what the data plane and the control plane cost, measured
//! side by side in one run and written to a markdown report (default `bench/REPORT.md`).
//!
//! Every figure is a median over rounds with min and max, or a ratio to a baseline measured
//! in the same run: numbers on a shared VM are noisy.

use std::{collections::BTreeSet, fmt::Write as _, net::IpAddr, path::PathBuf, time::Instant};

use anyhow::{bail, Context, Result};
use aya::{
    programs::{TestRun, TestRunOptions, Xdp},
    EbpfLoader,
};
use balancer_common::Backend;
use balancer_user::{
    compile::compile,
    dataplane::{object::BASELINES, pins::PinLayout, DataPlane},
    maglev::{build_table, MaglevBackend, DEFAULT_TABLE_SIZE},
    state::{Affinity, State},
};
use etherparse::PacketBuilder;

/// Sizes of one run.
struct Plan {
    quick: bool,
    repeat: u32,
    rounds: usize,
    new_flows: u32,
    conntrack_fill: u32,
}

fn main() -> Result<()> {
    let mut quick = false;
    let mut report_path = PathBuf::from("bench/REPORT.md");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--report" => report_path = args.next().context("--report needs a path")?.into(),
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
        }
    } else {
        Plan {
            quick,
            repeat: 1_000_000,
            rounds: 5,
            new_flows: 20_000,
            conntrack_fill: 1_000_000,
        }
    };
    let mut out = String::new();
    header(&mut out, &plan)?;
    per_packet(&mut out, &plan)?;
    table_builds(&mut out, &plan)?;
    disruption(&mut out)?;
    if let Some(dir) = report_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&report_path, &out)?;
    print!("{out}");
    println!("bench: report written to {}", report_path.display());
    Ok(())
}

fn header(out: &mut String, plan: &Plan) -> Result<()> {
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
    writeln!(out, "# balancer benchmark report\n")?;
    writeln!(
        out,
        "Machine: {cores} × {model}; kernel {}; mode: {}. Regenerate with `cargo xtask bench{}`.\n",
        kernel.trim(),
        if plan.quick { "quick" } else { "full" },
        if plan.quick { " --quick" } else { "" }
    )?;
    writeln!(
        out,
        "Each figure is the median of {} rounds, with [min–max]. Per-packet times come from \
         BPF_PROG_TEST_RUN (the kernel's own mean per run, {} runs per round).\n",
        plan.rounds, plan.repeat
    )?;
    Ok(())
}

/// Median, min and max of `values`.
fn spread(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    (
        values[values.len() / 2],
        values[0],
        values[values.len() - 1],
    )
}

fn fmt_spread((median, min, max): (f64, f64, f64)) -> String {
    format!("{median:.1} [{min:.1}–{max:.1}]")
}

fn frame_v4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1, 64_240)
        .syn();
    let mut frame = Vec::new();
    builder.write(&mut frame, &[0u8; 32]).expect("frame");
    frame
}

fn frame_v6(src: [u8; 16], sport: u16, dst: [u8; 16], dport: u16) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv6(src, dst, 64)
        .tcp(sport, dport, 1, 64_240);
    let mut frame = Vec::new();
    builder.write(&mut frame, &[0u8; 32]).expect("frame");
    frame
}

const VIP4: [u8; 4] = [198, 19, 0, 1];
const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
];

/// A data plane loaded for test runs under its own pins, removed on drop.
struct Plane {
    dp: Option<DataPlane>,
    root: PathBuf,
}

impl Drop for Plane {
    fn drop(&mut self) {
        if let Some(dp) = self.dp.take() {
            let _ = dp.teardown();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Loads the balancer with an IPv4 and an IPv6 service of `backends` backends each.
fn plane(backends: u32, conntrack: u32) -> Result<Plane> {
    let root = PathBuf::from(format!("/sys/fs/bpf/balancer-bench-{}", std::process::id()));
    let mut plane = Plane {
        dp: None,
        root: root.clone(),
    };
    let mut dp = DataPlane::load_unattached(&PinLayout::new(&root, "bench"), conntrack)?;
    let mut state = State::default();
    for (name, vip, v6) in [
        ("web4", "198.19.0.1:80/tcp", false),
        ("web6", "[2001:db8:ffff::1]:80/tcp", true),
    ] {
        state.add_service(name, vip.parse()?, Affinity::Connection, None)?;
        for i in 0..backends {
            let addr: IpAddr = if v6 {
                format!("2001:db8::{:x}", 0x1000 + i).parse()?
            } else {
                format!("198.18.{}.{}", 1 + i / 250, 1 + i % 250).parse()?
            };
            state.add_backend(name, addr, "main", 100)?;
        }
    }
    for (name, service) in &state.services {
        for (_, b) in service.backends() {
            let mac = [2, 0xbe, (b.index >> 8) as u8, b.index as u8, 0, 1];
            let backend = Backend {
                dst_mac: mac,
                src_mac: [2, 0, 0, 0, 0, 2],
                ifindex: 1,
                epoch: b.epoch,
                reserved: 0,
            };
            dp.set_backend(b.index, &backend, true)?;
        }
        let image =
            compile(service, 0, &BTreeSet::new()).with_context(|| format!("compile {name}"))?;
        dp.write_service(service.slot, service.vip.key(), &image.image)?;
    }
    plane.dp = Some(dp);
    Ok(plane)
}

/// Mean ns per run of `frame`, `repeat` times, over `rounds` rounds.
fn run_balancer(dp: &mut DataPlane, frame: &[u8], repeat: u32, rounds: usize) -> Result<Vec<f64>> {
    (0..rounds)
        .map(|_| Ok(dp.test_run(frame, repeat)?.duration.as_nanos() as f64))
        .collect()
}

/// Mean ns of a first packet of `count` distinct new flows (one run each).
fn new_flow_cost(dp: &mut DataPlane, count: u32, first: u32) -> Result<f64> {
    let mut total = 0.0;
    for i in first..first + count {
        let src = [
            10u8.wrapping_add(100),
            (i >> 16) as u8,
            (i >> 8) as u8,
            i as u8,
        ];
        let frame = frame_v4(
            [198, 18, src[1], src[3]],
            1024 + (i % 60_000) as u16,
            VIP4,
            80,
        );
        let _ = src;
        total += dp.test_run(&frame, 1)?.duration.as_nanos() as f64;
    }
    Ok(total / f64::from(count))
}

fn per_packet(out: &mut String, plan: &Plan) -> Result<()> {
    let syn = frame_v4([198, 18, 200, 1], 40_000, VIP4, 80);
    let mut ebpf = EbpfLoader::new()
        .load(BASELINES)
        .context("load the baselines")?;
    for name in ["baseline_drop", "baseline_macswap"] {
        let program: &mut Xdp = ebpf
            .program_mut(name)
            .context("baseline missing")?
            .try_into()?;
        program.load()?;
    }
    let mut baseline = |name: &str, repeat: u32, calls: u32| -> Result<Vec<f64>> {
        let program: &mut Xdp = ebpf
            .program_mut(name)
            .context("baseline missing")?
            .try_into()?;
        (0..plan.rounds)
            .map(|_| {
                let mut total = 0.0;
                for _ in 0..calls {
                    let result = program.test_run(TestRunOptions {
                        data_in: Some(&syn),
                        repeat,
                        ..Default::default()
                    })?;
                    total += result.duration.as_nanos() as f64;
                }
                Ok(total / f64::from(calls))
            })
            .collect()
    };
    let drop = spread(baseline("baseline_drop", plan.repeat, 1)?);
    let macswap = spread(baseline("baseline_macswap", plan.repeat, 1)?);
    // A new flow can only be measured one run per call (the next run of the same packet is
    // a conntrack hit), and a single run carries the kernel's per-call timing overhead.
    // XDP_DROP measured the same way gives that overhead, which the new-flow rows subtract.
    let single_run_overhead = spread(baseline("baseline_drop", 1, plan.new_flows)?).0 - drop.0;
    writeln!(out, "## Per-packet cost (BPF_PROG_TEST_RUN)\n")?;
    writeln!(
        out,
        "| path | backends | conntrack | ns/packet | × XDP_DROP | × MAC-swap XDP_TX |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|")?;
    writeln!(
        out,
        "| baseline: XDP_DROP | – | – | {} | 1.00 | {:.2} |",
        fmt_spread(drop),
        drop.0 / macswap.0
    )?;
    writeln!(
        out,
        "| baseline: parse + MAC swap + XDP_TX | – | – | {} | {:.2} | 1.00 |",
        fmt_spread(macswap),
        macswap.0 / drop.0
    )?;
    let row = |out: &mut String,
               path: &str,
               backends: u32,
               conntrack: &str,
               cost: (f64, f64, f64)|
     -> Result<()> {
        writeln!(
            out,
            "| {path} | {backends} | {conntrack} | {} | {:.2} | {:.2} |",
            fmt_spread(cost),
            cost.0 / drop.0,
            cost.0 / macswap.0
        )?;
        Ok(())
    };
    for backends in [2u32, 100, 1000] {
        let mut plane = plane(backends, plan.conntrack_fill + plan.new_flows + 1024)?;
        let dp = plane.dp.as_mut().expect("loaded");
        let pass = frame_v4([198, 18, 200, 1], 40_000, [198, 18, 255, 1], 80);
        row(
            out,
            "not a VIP (XDP_PASS)",
            backends,
            "empty",
            spread(run_balancer(dp, &pass, plan.repeat, plan.rounds)?),
        )?;
        let new: Vec<f64> = (0..plan.rounds as u32)
            .map(|r| {
                new_flow_cost(dp, plan.new_flows, r * plan.new_flows)
                    .map(|ns| ns - single_run_overhead)
            })
            .collect::<Result<_>>()?;
        row(
            out,
            "new flow (miss + select + insert)¹",
            backends,
            "small",
            spread(new),
        )?;
        dp.test_run(&syn, 1)?;
        row(
            out,
            "established flow, IPv4",
            backends,
            "small",
            spread(run_balancer(dp, &syn, plan.repeat, plan.rounds)?),
        )?;
        let syn6 = frame_v6(
            [0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            40_000,
            VIP6,
            80,
        );
        dp.test_run(&syn6, 1)?;
        row(
            out,
            "established flow, IPv6",
            backends,
            "small",
            spread(run_balancer(dp, &syn6, plan.repeat, plan.rounds)?),
        )?;
        let mut truncated = syn.clone();
        truncated.truncate(14 + 20 + 10);
        row(
            out,
            "malformed (truncated TCP)",
            backends,
            "small",
            spread(run_balancer(dp, &truncated, plan.repeat, plan.rounds)?),
        )?;
        if backends == 100 {
            // Fill connection tracking, then measure the established path again.
            new_flow_cost(dp, plan.conntrack_fill, 1_000_000)?;
            let label = format!("{} flows", plan.conntrack_fill);
            row(
                out,
                "established flow, IPv4",
                backends,
                &label,
                spread(run_balancer(dp, &syn, plan.repeat, plan.rounds)?),
            )?;
        }
    }
    writeln!(
        out,
        "\n¹ One run per call (the same packet again would be a conntrack hit), less the \
         per-call overhead of a single run measured on XDP_DROP: {single_run_overhead:.0} ns.\n"
    )?;
    Ok(())
}

fn backends_for(n: u32) -> Vec<MaglevBackend> {
    (0..n)
        .map(|i| MaglevBackend {
            index: i,
            addr: IpAddr::from([198, 18, (i / 250) as u8 + 1, (i % 250) as u8 + 1]),
            weight: 100,
        })
        .collect()
}

fn table_builds(out: &mut String, plan: &Plan) -> Result<()> {
    writeln!(out, "## Lookup table build ({DEFAULT_TABLE_SIZE} slots)\n")?;
    writeln!(out, "| backends | ms per build |")?;
    writeln!(out, "|---|---|")?;
    for n in [10u32, 100, 1000] {
        let backends = backends_for(n);
        let times: Vec<f64> = (0..plan.rounds.max(5))
            .map(|_| {
                let start = Instant::now();
                build_table(&backends, DEFAULT_TABLE_SIZE)
                    .map(|_| start.elapsed().as_secs_f64() * 1e3)
            })
            .collect::<Result<_, _>>()?;
        writeln!(out, "| {n} | {} |", fmt_spread(spread(times)))?;
    }
    writeln!(out)?;
    Ok(())
}

fn disruption(out: &mut String) -> Result<()> {
    writeln!(
        out,
        "## Disruption: table slots that change when one backend leaves or joins\n"
    )?;
    writeln!(
        out,
        "| backends | remove: changed / ideal | add: changed / ideal |"
    )?;
    writeln!(out, "|---|---|---|")?;
    for n in [10u32, 100, 1000] {
        let all = backends_for(n + 1);
        let base = build_table(&all[..n as usize], DEFAULT_TABLE_SIZE)?;
        let fewer = build_table(&all[..n as usize - 1], DEFAULT_TABLE_SIZE)?;
        let more = build_table(&all, DEFAULT_TABLE_SIZE)?;
        let changed = |a: &[u32], b: &[u32]| a.iter().zip(b).filter(|(x, y)| x != y).count() as f64;
        let size = f64::from(DEFAULT_TABLE_SIZE);
        let remove = changed(&base, &fewer) / (size / f64::from(n));
        let add = changed(&base, &more) / (size / f64::from(n + 1));
        writeln!(out, "| {n} | {remove:.3} | {add:.3} |")?;
    }
    writeln!(out)?;
    Ok(())
}
