//! Timing the balancer's program on frames: repeated runs of one frame, or one run each of
//! the first packets of fresh flows (which can only be sent once).

use anyhow::{bail, Result};
use balancer_user::dataplane::DataPlane;

use super::{expect::Expect, SECTION};
use crate::{
    frames::{Flows, Segment},
    stats::Spread,
    Plan,
};

/// Mean ns per run of `frame`, `repeat` times, over `rounds` rounds, after one run checked
/// against `expect`.
pub fn repeated(
    dp: &mut DataPlane,
    row: &str,
    expect: &Expect,
    frame: &[u8],
    repeat: u32,
    rounds: usize,
) -> Result<Spread> {
    expect.check(row, &dp.test_run(frame, 1)?)?;
    let runs = (0..rounds)
        .map(|_| Ok(dp.test_run(frame, repeat)?.duration.as_nanos() as f64))
        .collect::<Result<_>>()?;
    timed(row, Spread::of(runs))
}

/// Mean ns of one run of `frame` when each call runs it once on a fresh copy, less the
/// per-call `overhead`: `calls` calls per round over `rounds` rounds, every run on the path
/// of `expect`. For packets the program changes so that a second run of the same buffer
/// would take another path (a rewritten destination, an added outer header):
/// BPF_PROG_TEST_RUN repeats a run on the buffer the previous one left.
pub fn single_calls(
    dp: &mut DataPlane,
    row: &str,
    expect: &Expect,
    frame: &[u8],
    calls: u32,
    rounds: usize,
    overhead: f64,
) -> Result<Spread> {
    let costs = (0..rounds)
        .map(|_| {
            let mut total = 0.0;
            for _ in 0..calls {
                let run = dp.test_run(frame, 1)?;
                expect.check(row, &run)?;
                total += run.duration.as_nanos() as f64;
            }
            Ok(total / f64::from(calls) - overhead)
        })
        .collect::<Result<_>>()?;
    timed(row, Spread::of(costs))
}

/// `cost`, unless it is no time at all: then the row measured nothing and the bench fails.
pub fn timed(row: &str, cost: Spread) -> Result<Spread> {
    if cost.median.is_nan() || cost.median <= 0.0 {
        bail!("{SECTION}: row \"{row}\" measured no time");
    }
    Ok(cost)
}

/// A row measured one run per call: the first packet of a flow can only be sent once.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Single {
    /// A new flow's SYN: the established miss, the pending slots, selection, the pending
    /// write.
    NewFlow,
    /// The ACK after a SYN: the established miss, the pending hit, the established insert,
    /// the pending slot emptied (its SYN is sent just before, untimed).
    Promotion,
}

/// The fresh flows of a [`Single`] row: which packet of them is timed, and the path every
/// run must take.
pub struct Fresh<'a> {
    /// The flows.
    pub flows: Flows,
    /// Which packet is timed.
    pub kind: Single,
    /// The path of every run.
    pub expect: Expect<'a>,
}

/// Mean ns of the timed packet of `count` distinct flows of `fresh` (see [`Single`]),
/// numbered from `first`.
fn single_run_cost(
    dp: &mut DataPlane,
    row: &str,
    fresh: &Fresh,
    count: u32,
    first: u32,
) -> Result<f64> {
    let mut total = 0.0;
    for i in first..first + count {
        if fresh.kind == Single::Promotion {
            let syn = fresh.flows.frame(i, Segment::Syn);
            fresh.expect.check(row, &dp.test_run(&syn, 1)?)?;
        }
        let segment = match fresh.kind {
            Single::NewFlow => Segment::Syn,
            Single::Promotion => Segment::Ack,
        };
        let run = dp.test_run(&fresh.flows.frame(i, segment), 1)?;
        fresh.expect.check(row, &run)?;
        total += run.duration.as_nanos() as f64;
    }
    if total <= 0.0 {
        bail!("{SECTION}: row \"{row}\" measured no time");
    }
    Ok(total / f64::from(count))
}

/// One round per `plan.rounds` of a [`Single`] row, each on `plan.new_flows` fresh flows
/// from `first`, less the per-call `overhead`.
pub fn single_rounds(
    dp: &mut DataPlane,
    row: &str,
    fresh: &Fresh,
    plan: &Plan,
    first: u32,
    overhead: f64,
) -> Result<Spread> {
    let costs = (0..plan.rounds as u32)
        .map(|r| {
            single_run_cost(dp, row, fresh, plan.new_flows, first + r * plan.new_flows)
                .map(|ns| ns - overhead)
        })
        .collect::<Result<_>>()?;
    Ok(Spread::of(costs))
}

/// [`single_rounds`] with `reset` run before each round, untimed (e.g. freeing the pool
/// ports the previous round's flows hold).
pub fn single_rounds_reset(
    dp: &mut DataPlane,
    row: &str,
    fresh: &Fresh,
    plan: &Plan,
    overhead: f64,
    mut reset: impl FnMut(&mut DataPlane) -> Result<()>,
) -> Result<Spread> {
    let costs = (0..plan.rounds as u32)
        .map(|r| {
            reset(dp)?;
            single_run_cost(dp, row, fresh, plan.new_flows, r * plan.new_flows)
                .map(|ns| ns - overhead)
        })
        .collect::<Result<_>>()?;
    Ok(Spread::of(costs))
}

/// Sends flows `first..first + count` of `flows` their SYN and, with `establish`, their ACK
/// (untimed): fills the pending or the established table. The first SYN must take the path
/// of `expect`.
pub fn fill(
    dp: &mut DataPlane,
    row: &str,
    expect: &Expect,
    flows: Flows,
    establish: bool,
    count: u32,
    first: u32,
) -> Result<()> {
    for i in first..first + count {
        let run = dp.test_run(&flows.frame(i, Segment::Syn), 1)?;
        if establish {
            dp.test_run(&flows.frame(i, Segment::Ack), 1)?;
        }
        if i == first {
            expect.check(row, &run)?;
        }
    }
    Ok(())
}
