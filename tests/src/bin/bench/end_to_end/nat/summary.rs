//! The section of the report: what was measured, the flood and connection tables with the
//! ratio of `nat` to nftables per round, the target and what limits the numbers.

use std::time::Duration;

use super::{contenders::Contender, lab::BACKENDS};
use crate::{
    end_to_end::{
        connections::{Failures, IO_TIMEOUT},
        generator::{FLOOD_PORT, FLOWS, FRAME_LEN},
        responder::TCP_PORT,
        summary::{
            backend_packets, conns_per_second, delivered, delivered_share, failures,
            forwarding_cpu, kpps, offered, times, Sample,
        },
    },
    report::{Bar, Chart, Report},
    stats::Spread,
};

/// The target: `nat` packets/s ≥ this many times nftables DNAT's, shown and never
/// asserted.
const TARGET: f64 = 4.0;

/// One round: what reached the LB with nothing forwarding, then each contender.
pub struct Round {
    /// Packets/s the generator offered while a sink dropped the flood on the LB's `eth0`.
    pub offered: f64,
    /// Packets/s that reached the LB's `eth0` then: the ceiling.
    pub arrived: f64,
    /// Each contender's sample, in [`Contender::ALL`] order.
    pub samples: Vec<Sample>,
}

impl Round {
    /// The sample of `contender`.
    pub fn of(&self, contender: Contender) -> &Sample {
        let index = Contender::ALL
            .iter()
            .position(|&c| c == contender)
            .expect("every contender is in ALL");
        &self.samples[index]
    }
}

/// The spread over rounds of `figure` of `contender`, if every round has it.
fn spread(
    rounds: &[Round],
    contender: Contender,
    figure: impl Fn(&Sample) -> Option<f64>,
) -> Option<Spread> {
    let values: Option<Vec<f64>> = rounds.iter().map(|r| figure(r.of(contender))).collect();
    values.filter(|v| !v.is_empty()).map(Spread::of)
}

/// The spread over rounds of `figure` of `a` divided by that of `b` in the same round.
fn ratio(
    rounds: &[Round],
    a: Contender,
    b: Contender,
    figure: impl Fn(&Sample) -> Option<f64>,
) -> Option<Spread> {
    let values: Option<Vec<f64>> = rounds
        .iter()
        .map(|r| Some(figure(r.of(a))? / figure(r.of(b))?))
        .collect();
    values.filter(|v| !v.is_empty()).map(Spread::of)
}

fn median(spread: Option<Spread>) -> f64 {
    spread.map_or(0.0, |s| s.median)
}

/// Writes the section; `configs` are the contenders' configuration lines.
pub fn write(
    report: &mut Report,
    cpus: usize,
    time: Duration,
    configs: &[String],
    rounds: &[Round],
) {
    describe(report, cpus, time, configs);
    if rounds.is_empty() {
        report.line("No round ran.\n");
        return;
    }
    flood_table(report, rounds);
    conns_table(report, rounds);
    target(report, cpus, rounds);
    charts(report, rounds);
}

fn describe(report: &mut Report, cpus: usize, time: Duration, configs: &[String]) {
    report.line("## End to end: `nat` against nftables DNAT (routed lab)\n");
    report.line(format!(
        "The routed lab of the namespace tests (`tests/src/routed`): client `eth0` ⇄ veth ⇄ \
         router `cl`; router `lb` ⇄ veth ⇄ LB `eth0`; router `br0`, a bridge of {BACKENDS} \
         backends. The router routes the VIP to the LB and, by a policy rule, everything that \
         comes from the backends to the LB too: **both contenders rewrite the destination of \
         the client's packets to a backend, and the backends' replies come back through the \
         LB**, which sends both on to the router. So a packet from the client to a backend \
         crosses the router twice and the LB once, as does its reply. The backends are \
         unmodified (no VIP) and serve on their own address; the LB forwards \
         (`ip_forward=1`, no redirects).\n"
    ));
    report.line(format!(
        "Traffic as in the bridged section, the same durations for both: the UDP flood of \
         {cpus} pinned threads sending {FLOWS} prepared {FRAME_LEN}-byte frames (one per \
         source port) to the VIP's port {FLOOD_PORT}, addressed to the router, for {:.0} s \
         per round, counted and dropped by a sink on each backend's `eth0` (*delivered*); \
         then {} threads opening connections to the VIP's port {TCP_PORT} for {:.0} s. \
         *Ceiling*: the same flood with a sink on the LB's `eth0` instead of a balancer — \
         what reaches the LB through the router.\n",
        time.as_secs_f64(),
        2 * cpus,
        time.as_secs_f64()
    ));
    report.line("Contenders, one active at a time, each round in this order:\n");
    for (contender, config) in Contender::ALL.iter().zip(configs) {
        report.line(format!("- {}: {config}", contender.name()));
    }
    report.line(
        "\nThe XDP_PASS helper runs on the router's `lb` for both (veth delivers XDP_TX \
         frames only to a peer running an XDP program).\n",
    );
}

fn flood_table(report: &mut Report, rounds: &[Round]) {
    let mut rows: Vec<Vec<String>> = Contender::ALL
        .into_iter()
        .map(|c| {
            vec![
                c.name().to_string(),
                kpps(spread(rounds, c, offered), "–"),
                kpps(spread(rounds, c, delivered), "–"),
                spread(rounds, c, delivered_share).map_or("–".into(), |s| s.show(2)),
                times(ratio(rounds, c, Contender::Nftables, delivered), "–"),
                spread(rounds, c, forwarding_cpu).map_or("–".into(), |s| s.show(0)),
                times(ratio(rounds, Contender::Nftables, c, forwarding_cpu), "–"),
            ]
        })
        .collect();
    let ceiling = |figure: fn(&Round) -> f64| {
        kpps(Some(Spread::of(rounds.iter().map(figure).collect())), "–")
    };
    rows.push(vec![
        "ceiling: a sink on the LB's `eth0`".to_string(),
        ceiling(|r| r.offered),
        format!("{} (at the LB)", ceiling(|r| r.arrived)),
        "–".into(),
        "–".into(),
        "–".into(),
        "–".into(),
    ]);
    report.line("### UDP flood\n");
    report.table(
        &[
            "contender",
            "offered kpkt/s",
            "delivered kpkt/s",
            "delivered / offered",
            "delivered × nftables",
            "CPU ns/packet beyond the ceiling",
            "CPU/packet: nftables ÷ this",
        ],
        &rows,
    );
}

fn conns_table(report: &mut Report, rounds: &[Round]) {
    let rows: Vec<Vec<String>> = Contender::ALL
        .into_iter()
        .map(|c| {
            let (mut answered, mut failed) = (0, Failures::default());
            for round in rounds {
                answered += round.of(c).conns.answered;
                failed += round.of(c).conns.failed;
            }
            vec![
                c.name().to_string(),
                spread(rounds, c, conns_per_second).map_or("–".into(), |s| s.show(0)),
                failures(failed, answered),
                kpps(spread(rounds, c, backend_packets), "–"),
                times(ratio(rounds, c, Contender::Nftables, conns_per_second), "–"),
            ]
        })
        .collect();
    report.line("### New TCP connections\n");
    report.table(
        &[
            "contender",
            "connections/s",
            "failed (all rounds)",
            "backend kpkt/s",
            "conn/s × nftables",
        ],
        &rows,
    );
}

/// The target, whether this run met it, and what limits the numbers.
fn target(report: &mut Report, cpus: usize, rounds: &[Round]) {
    let (nat, nft) = (Contender::Nat, Contender::Nftables);
    let pps = ratio(rounds, nat, nft, delivered);
    let verdict = match pps {
        Some(r) if r.median >= TARGET => format!("**{:.2}×**, met", r.median),
        Some(r) => format!("**{:.2}×**, missed", r.median),
        None => "not measured".to_string(),
    };
    let conns = median(ratio(rounds, nat, nft, conns_per_second));
    report.line(format!(
        "**Target** (shown, never asserted): `nat` packets/s ≥ {TARGET}× nftables DNAT on the \
         same run. This run: `nat` ÷ nftables = {verdict} (UDP flood, delivered packets/s); \
         new connections/s {conns:.2}×.\n"
    ));
    let ceiling = Spread::of(rounds.iter().map(|r| r.arrived).collect::<Vec<_>>()).median;
    let (nat_pps, nft_pps) = (
        median(spread(rounds, nat, delivered)),
        median(spread(rounds, nft, delivered)),
    );
    let (nat_cpu, nft_cpu) = (
        median(spread(rounds, nat, forwarding_cpu)),
        median(spread(rounds, nft, forwarding_cpu)),
    );
    let cpu_ratio = median(ratio(rounds, nft, nat, forwarding_cpu));
    let per_frame = cpus as f64 * 1e9 / ceiling;
    report.line(format!(
        "What limits these numbers: on veth, a frame is received in softirq on the CPU that \
         sent it, so the generator's {cpus} threads, the router, the LB and the backends' \
         sinks all share the same {cpus} CPUs. Before any balancer works, the client's kernel \
         builds and sends each frame and the router forwards it: {:.0} kpkt/s reach the LB, \
         about {per_frame:.0} ns of CPU per frame. Then both contenders' packets cross the \
         router a second time (LB → backends) and reach a sink, which costs the same for \
         both. Delivered: `nat` {:.0} kpkt/s ({:.0} % of what reached the LB), nftables \
         {:.0} kpkt/s ({:.0} %). The CPU time a delivered packet costs beyond the ceiling \
         (CPUs ÷ delivered − CPUs ÷ ceiling, every CPU busy in both) is {nat_cpu:.0} ns with \
         `nat` and {nft_cpu:.0} ns with nftables ({cpu_ratio:.2}×); it still holds the \
         router's second crossing and the sink, so the difference, {:.0} ns, is what \
         nftables' path through the LB's kernel (receive, conntrack, NAT, routing, transmit) \
         costs per packet beyond `nat`'s rewrite, route lookup and XDP_TX. The ratio of \
         delivered packets/s understates that difference; a generator and a router on other \
         machines, with a physical NIC on the LB, separate it. New connections are bounded \
         by the end hosts' costs (a handshake, a request, an answer and a teardown in the \
         client's and the backend's kernels, every packet through the router twice) for \
         both contenders alike.\n",
        ceiling / 1e3,
        nat_pps / 1e3,
        100.0 * nat_pps / ceiling,
        nft_pps / 1e3,
        100.0 * nft_pps / ceiling,
        nft_cpu - nat_cpu,
    ));
    report.line(format!(
        "How to read: *offered* is what the generator handed to the client's kernel, \
         *delivered* what the backends' sinks counted; below 1, packets were dropped on the \
         way (a veth queue full, at the router or the LB). The × columns divide `nat`'s \
         figure (or nftables') by nftables' in the same round, median [min–max] over \
         rounds. *Failed* connections are counted by \
         kind (connect or read timeout: {} s). Backend kpkt/s in the connection test counts \
         what the backends received.\n",
        IO_TIMEOUT.as_secs_f64()
    ));
}

fn charts(report: &mut Report, rounds: &[Round]) {
    let mut bars: Vec<Bar> = Contender::ALL
        .into_iter()
        .filter_map(|c| {
            spread(rounds, c, delivered).map(|value| Bar {
                label: format!("{}: UDP flood, delivered", c.name()),
                value,
            })
        })
        .collect();
    bars.push(Bar {
        label: "ceiling: reaching the LB".into(),
        value: Spread::of(rounds.iter().map(|r| r.arrived).collect()),
    });
    report.chart(Chart {
        file: "nat-pps.png".into(),
        title: "nat against nftables DNAT: packets/s (routed lab)".into(),
        unit: "packets/s".into(),
        bars,
    });
    report.chart(Chart {
        file: "nat-connections.png".into(),
        title: "nat against nftables DNAT: new TCP connections/s (routed lab)".into(),
        unit: "connections/s".into(),
        bars: Contender::ALL
            .into_iter()
            .filter_map(|c| {
                spread(rounds, c, conns_per_second).map(|value| Bar {
                    label: c.name().to_string(),
                    value,
                })
            })
            .collect(),
    });
}
