//! The section `nat`: `nat` end to end against nftables DNAT doing the same job on the
//! routed lab of the namespace tests: both rewrite the destination of the client's packets
//! to a backend, and the backends' replies come back through the LB host. The same
//! generator, sinks and connection test as the bridged section carry traffic through one
//! and then the other in every round, so their ratios compare measurements taken side by
//! side.

mod contenders;
mod lab;
mod summary;

use std::path::Path;

use anyhow::Result;

use super::{
    connections, conns, flood, generator::Generator, programs::Sinks, responder::Responders,
    summary::Sample, READY_TIMEOUT, RESPONDER_THREADS, SETTLE,
};
use crate::{report::Report, Plan};
use contenders::Contender;
use lab::Lab;
use summary::Round;

/// Measures both contenders in `plan.rounds` rounds of `plan.nat_time` per measurement
/// and writes the section.
pub fn run(report: &mut Report, plan: &Plan) -> Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let scratch = std::env::temp_dir().join("balancer-bench-nat");
    std::fs::remove_dir_all(&scratch).ok();
    std::fs::create_dir_all(&scratch)?;
    let measured = measure(plan, cpus, &scratch);
    std::fs::remove_dir_all(&scratch).ok();
    let (configs, rounds) = measured?;
    summary::write(report, cpus, plan.nat_time, &configs, &rounds);
    check(report, &rounds);
    Ok(())
}

/// Fails the run unless every contender delivered flood packets and answered connections in
/// every round, and failed none.
fn check(report: &mut Report, rounds: &[Round]) {
    const SECTION: &str = "nat end to end";
    if rounds.is_empty() {
        report.fail(SECTION, "no round ran");
    }
    for contender in Contender::ALL {
        let samples: Vec<&Sample> = rounds.iter().map(|r| r.of(contender)).collect();
        let silent = samples
            .iter()
            .filter(|s| s.flood.as_ref().is_none_or(|f| f.delivered <= 0.0))
            .count();
        if silent > 0 {
            report.fail(
                SECTION,
                format!(
                    "{} delivered no packet of the UDP flood in {silent} of {} rounds",
                    contender.name(),
                    samples.len()
                ),
            );
        }
        let unanswered = samples.iter().filter(|s| s.conns.answered == 0).count();
        if unanswered > 0 {
            report.fail(
                SECTION,
                format!(
                    "{} answered no connection in {unanswered} of {} rounds",
                    contender.name(),
                    samples.len()
                ),
            );
        }
        let failed: u64 = samples.iter().map(|s| s.conns.failed.total()).sum();
        if failed > 0 {
            let answered: u64 = samples.iter().map(|s| s.conns.answered).sum();
            report.fail(
                SECTION,
                format!(
                    "{} failed {failed} of {} connections",
                    contender.name(),
                    answered + failed
                ),
            );
        }
    }
}

/// Builds the lab (removed again on return, error or panic) and runs the rounds; returns
/// each contender's configuration line and the rounds.
fn measure(plan: &Plan, cpus: usize, scratch: &Path) -> Result<(Vec<String>, Vec<Round>)> {
    let lab = Lab::build()?;
    let configs = Contender::ALL
        .iter()
        .map(|c| c.config(&lab))
        .collect::<Result<_>>()?;
    let backends = lab.backend_namespaces();
    let sinks = Sinks::attach(&backends)?;
    let generator = Generator::new(&lab.wire()?);
    let _responders = Responders::start(&backends, RESPONDER_THREADS)?;
    let target = lab.target()?;
    let time = plan.nat_time;
    let mut rounds = Vec::new();
    for round in 1..=plan.rounds {
        eprintln!("bench: nat end to end, round {round}/{}", plan.rounds);
        // What reaches the LB through the router when nothing is forwarded: a sink on its
        // `eth0` counts and drops the flood.
        let (offered, arrived) = {
            let at_lb = Sinks::attach(&[lab.topology.lb_ns().to_string()])?;
            let before = at_lb.packets()?;
            let offered = generator.flood(cpus, time)?;
            std::thread::sleep(SETTLE);
            let arrived = (at_lb.packets()? - before) as f64 / offered.seconds;
            (offered.packets as f64 / offered.seconds, arrived)
        };
        let mut samples = Vec::new();
        for contender in Contender::ALL {
            samples.push(contender.while_active(&lab, scratch, || {
                connections::wait_answering(&target, READY_TIMEOUT)?;
                let flood = flood(&generator, &sinks, cpus, time, arrived)?;
                let conns = conns(&target, &sinks, cpus, time)?;
                Ok(Sample {
                    flood: Some(flood),
                    conns,
                })
            })?);
        }
        rounds.push(Round {
            offered,
            arrived,
            samples,
        });
    }
    Ok((configs, rounds))
}
