//! Section 1b: forwarding rate end to end through veth namespaces. The same generator,
//! topology and backends carry traffic through our XDP balancer, nftables DNAT and HAProxy,
//! one after another in every round, so ratios compare measurements taken side by side.

mod balancers;
mod connections;
mod generator;
pub mod nat;
mod programs;
mod responder;
mod socket_option;
mod summary;
mod topology;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::{report::Report, Plan};
use balancers::Kind;
use connections::Target;
use generator::Generator;
use programs::{DropAtLb, Sinks};
use responder::{Responders, TCP_PORT};
use summary::{Conns, Flood, Sample, Samples};
use topology::Topology;

/// Accepting threads per backend in the connection test.
const RESPONDER_THREADS: usize = 2;
/// How long a balancer may take to answer its first connection after start.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for frames still queued after a flood to reach the sinks before counting.
const SETTLE: Duration = Duration::from_millis(100);

/// Measures every balancer in `plan.rounds` rounds and writes the section.
pub fn run(report: &mut Report, plan: &Plan) -> Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let scratch = std::env::temp_dir().join("balancer-bbe2e");
    std::fs::remove_dir_all(&scratch).ok();
    std::fs::create_dir_all(&scratch)?;
    let samples = measure(plan, cpus, &scratch);
    std::fs::remove_dir_all(&scratch).ok();
    let samples = samples?;
    summary::write(report, cpus, plan.forwarding_time, &samples);
    check(report, &samples);
    Ok(())
}

/// Fails the run unless every round measured something and nothing failed: our balancer
/// delivered UDP flood packets, and every balancer answered connections and failed none.
/// (A full run with the earlier live-frames flood had 52 failed of 925,188 with ours; none
/// since the AF_PACKET generator, in millions: a failure now is a finding.)
fn check(report: &mut Report, samples: &Samples) {
    const SECTION: &str = "end-to-end";
    for kind in Kind::ALL {
        let rounds = samples.of(kind);
        if rounds.is_empty() {
            report.fail(SECTION, format!("{} ran no round", kind.name()));
        }
        let silent = rounds
            .iter()
            .filter(|s| s.flood.as_ref().is_none_or(|f| f.delivered <= 0.0))
            .count();
        if kind == Kind::Xdp && silent > 0 {
            report.fail(
                SECTION,
                format!(
                    "{} delivered no packet of the UDP flood in {silent} of {} rounds",
                    kind.name(),
                    rounds.len()
                ),
            );
        }
        let failed: u64 = rounds.iter().map(|s| s.conns.failed.total()).sum();
        if failed > 0 {
            let answered: u64 = rounds.iter().map(|s| s.conns.answered).sum();
            report.fail(
                SECTION,
                format!(
                    "{} failed {failed} of {} connections",
                    kind.name(),
                    answered + failed
                ),
            );
        }
        let unanswered = rounds.iter().filter(|s| s.conns.answered == 0).count();
        if unanswered > 0 {
            report.fail(
                SECTION,
                format!(
                    "{} answered no connection in {unanswered} of {} rounds",
                    kind.name(),
                    rounds.len()
                ),
            );
        }
    }
}

/// Builds the topology (removed again on return, error or panic) and runs the rounds.
fn measure(plan: &Plan, cpus: usize, scratch: &Path) -> Result<Samples> {
    let _topology = Topology::build(cpus)?;
    let backends = topology::backend_namespaces();
    let sinks = Sinks::attach(&backends)?;
    let generator = Generator::new(&topology::wire());
    let _responders = Responders::start(&backends, RESPONDER_THREADS)?;
    let target = Target {
        ns: topology::CLIENT_NS.to_string(),
        service: SocketAddr::from((topology::VIP, TCP_PORT)),
    };
    let mut samples = Samples::default();
    for round in 1..=plan.rounds {
        eprintln!(
            "bench: end-to-end forwarding, round {round}/{}",
            plan.rounds
        );
        let ceiling = {
            let _drop = DropAtLb::attach()?;
            let offered = generator.flood(cpus, plan.forwarding_time)?;
            offered.packets as f64 / offered.seconds
        };
        samples.ceiling.push(ceiling);
        for kind in Kind::ALL {
            let sample = kind.while_active(cpus, scratch, || {
                connections::wait_answering(&target, READY_TIMEOUT)?;
                let flood = match kind.forwards_udp() {
                    true => Some(flood(
                        &generator,
                        &sinks,
                        cpus,
                        plan.forwarding_time,
                        ceiling,
                    )?),
                    false => None,
                };
                let conns = conns(&target, &sinks, cpus, plan.forwarding_time)?;
                Ok(Sample { flood, conns })
            })?;
            samples.of_mut(kind).push(sample);
        }
    }
    Ok(samples)
}

/// One UDP flood through the active balancer: offered and delivered packets/s, and the
/// forwarding CPU time per packet against this round's `ceiling` (packets/s).
fn flood(
    generator: &Generator,
    sinks: &Sinks,
    cpus: usize,
    time: Duration,
    ceiling: f64,
) -> Result<Flood> {
    let before = sinks.packets()?;
    let offered = generator.flood(cpus, time)?;
    std::thread::sleep(SETTLE);
    let delivered = (sinks.packets()? - before) as f64 / offered.seconds;
    Ok(Flood {
        offered: offered.packets as f64 / offered.seconds,
        delivered,
        forwarding_ns: summary::forwarding_ns(cpus, delivered, ceiling),
    })
}

/// One connection test to `target` through the active balancer: connections/s, failures,
/// and packets/s that reached the backends meanwhile.
fn conns(target: &Target, sinks: &Sinks, cpus: usize, time: Duration) -> Result<Conns> {
    let before = sinks.packets()?;
    let opened = connections::open(target, 2 * cpus, time)?;
    let delivered = sinks.packets()? - before;
    Ok(Conns {
        per_second: opened.answered as f64 / opened.seconds,
        answered: opened.answered,
        failed: opened.failed,
        backend_packets: delivered as f64 / opened.seconds,
    })
}
