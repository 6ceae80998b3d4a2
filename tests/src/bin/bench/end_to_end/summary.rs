//! The section of the report: what was measured, tables with ratios per round, the target,
//! and the charts.

use std::time::Duration;

use super::{
    balancers::Kind,
    connections::{Failure, Failures, IO_TIMEOUT},
    generator::{FLOOD_PORT, FLOWS, FRAME_LEN},
    responder::TCP_PORT,
    topology::{BACKENDS, VIP},
};
use crate::{
    report::{Bar, Chart, Report},
    stats::Spread,
};

/// Target ratios of the issue, shown and never asserted.
const TARGET_VS_NFTABLES: f64 = 4.0;
const TARGET_VS_HAPROXY: f64 = 20.0;

/// One UDP flood.
pub struct Flood {
    /// Packets/s the generator handed to the client's kernel.
    pub offered: f64,
    /// Packets/s that reached the backends.
    pub delivered: f64,
    /// CPU time per delivered packet beyond generating it, in ns (see [`forwarding_ns`]).
    pub forwarding_ns: Option<f64>,
}

/// CPU time per packet, in ns, that forwarding `delivered` packets/s costs beyond generating
/// `ceiling` packets/s into XDP_DROP on the LB, with all `cpus` busy in both cases (on veth,
/// receivers run on the sending CPU). None when nothing was delivered.
pub fn forwarding_ns(cpus: usize, delivered: f64, ceiling: f64) -> Option<f64> {
    (delivered > 0.0 && ceiling > 0.0)
        .then(|| cpus as f64 * (1.0 / delivered - 1.0 / ceiling) * 1e9)
}

/// One connection test.
pub struct Conns {
    /// Answered connections per second.
    pub per_second: f64,
    /// Answered connections.
    pub answered: u64,
    /// Failed connections, per kind.
    pub failed: Failures,
    /// Packets/s that reached the backends.
    pub backend_packets: f64,
}

/// What one balancer did in one round.
pub struct Sample {
    /// The UDP flood, unless the balancer cannot forward one.
    pub flood: Option<Flood>,
    /// The connection test.
    pub conns: Conns,
}

/// Every round's samples.
#[derive(Default)]
pub struct Samples {
    /// Packets/s the generator offered into XDP_DROP on the LB's `eth0`, per round.
    pub ceiling: Vec<f64>,
    xdp: Vec<Sample>,
    nftables: Vec<Sample>,
    haproxy: Vec<Sample>,
}

impl Samples {
    /// The rounds of `kind`, to append to.
    pub fn of_mut(&mut self, kind: Kind) -> &mut Vec<Sample> {
        match kind {
            Kind::Xdp => &mut self.xdp,
            Kind::Nftables => &mut self.nftables,
            Kind::Haproxy => &mut self.haproxy,
        }
    }

    /// The rounds of `kind`.
    pub fn of(&self, kind: Kind) -> &[Sample] {
        match kind {
            Kind::Xdp => &self.xdp,
            Kind::Nftables => &self.nftables,
            Kind::Haproxy => &self.haproxy,
        }
    }

    /// The spread of `figure` over the rounds of `kind`, if it has that figure.
    fn spread(&self, kind: Kind, figure: impl Fn(&Sample) -> Option<f64>) -> Option<Spread> {
        let values: Option<Vec<f64>> = self.of(kind).iter().map(figure).collect();
        values.filter(|v| !v.is_empty()).map(Spread::of)
    }

    /// The spread over rounds of `figure` of `kind` divided by that of `base` in the same
    /// round.
    fn ratio(
        &self,
        kind: Kind,
        base: Kind,
        figure: impl Fn(&Sample) -> Option<f64>,
    ) -> Option<Spread> {
        let ratios: Option<Vec<f64>> = self
            .of(kind)
            .iter()
            .zip(self.of(base))
            .map(|(a, b)| Some(figure(a)? / figure(b)?))
            .collect();
        ratios.filter(|v| !v.is_empty()).map(Spread::of)
    }
}

/// Packets/s the flood offered (none without a flood).
pub fn offered(s: &Sample) -> Option<f64> {
    s.flood.as_ref().map(|f| f.offered)
}

/// Packets/s the flood delivered to the backends (none without a flood).
pub fn delivered(s: &Sample) -> Option<f64> {
    s.flood.as_ref().map(|f| f.delivered)
}

/// CPU nanoseconds a delivered packet cost beyond the ceiling (none without a flood).
pub fn forwarding_cpu(s: &Sample) -> Option<f64> {
    s.flood.as_ref().and_then(|f| f.forwarding_ns)
}

/// Delivered over offered (none without a flood).
pub fn delivered_share(s: &Sample) -> Option<f64> {
    s.flood.as_ref().map(|f| f.delivered / f.offered)
}

/// New connections per second.
pub fn conns_per_second(s: &Sample) -> Option<f64> {
    Some(s.conns.per_second)
}

/// Packets/s the backends received in the connection test.
pub fn backend_packets(s: &Sample) -> Option<f64> {
    Some(s.conns.backend_packets)
}

/// Packets/s in thousands, with spread.
pub(super) fn kpps(spread: Option<Spread>, missing: &str) -> String {
    spread.map_or(missing.to_string(), |s| {
        Spread {
            median: s.median / 1e3,
            min: s.min / 1e3,
            max: s.max / 1e3,
        }
        .show(0)
    })
}

/// A ratio with spread, as `2.31× [2.10–2.50]`.
pub(super) fn times(spread: Option<Spread>, missing: &str) -> String {
    spread.map_or(missing.to_string(), |s| {
        format!("{:.2}× [{:.2}–{:.2}]", s.median, s.min, s.max)
    })
}

/// `failed` of all connections, and how they failed: `2 of 1000 (connect timeout 2)`.
pub(super) fn failures(failed: Failures, answered: u64) -> String {
    let total = failed.total();
    let kinds: Vec<String> = Failure::ALL
        .into_iter()
        .filter(|&kind| failed.of(kind) > 0)
        .map(|kind| format!("{} {}", kind.name(), failed.of(kind)))
        .collect();
    match kinds.is_empty() {
        true => format!("0 of {answered}"),
        false => format!("{total} of {} ({})", answered + total, kinds.join(", ")),
    }
}

/// Writes the section.
pub fn write(report: &mut Report, cpus: usize, time: Duration, samples: &Samples) {
    describe(report, cpus, time);
    flood_table(report, samples);
    conns_table(report, samples);
    target(report, cpus, samples);
    how_to_read(report);
    charts(report, samples);
}

fn describe(report: &mut Report, cpus: usize, time: Duration) {
    report.line("## End-to-end forwarding through veth namespaces\n");
    report.line(format!(
        "Topology, without a bridge: client `eth0` ⇄ veth ⇄ LB `eth0`; LB `bk0`, `bk1` ⇄ \
         veth ⇄ backend `eth0` ({BACKENDS} backends, {cpus} rx/tx queues per veth). Backends \
         hold the VIP {VIP} on `lo` and route everything back through the LB: **return \
         traffic goes through the LB host's kernel routing** (`ip_forward=1`) for every \
         balancer, only the client → backend direction differs.\n"
    ));
    report.line(format!(
        "Generator: {cpus} threads (one per CPU, pinned) in the client's namespace send \
         {FLOWS} prepared {FRAME_LEN}-byte UDP frames to {VIP}:{FLOOD_PORT}, one per source \
         port, IPv4 and UDP checksums complete, over and over for {:.0} s per round, through \
         an AF_PACKET raw socket on the client's `eth0` (`PACKET_QDISC_BYPASS`, batches of \
         `sendmmsg`). The client's kernel builds a socket buffer for each frame and transmits \
         it through the veth into the LB's `eth0`, as it does the host's own packets: that \
         cost is part of every figure, the ceiling's too. *Offered* counts the frames the \
         client's kernel took (a frame the veth then could not queue counts as offered, not \
         delivered). Sink: an XDP program on each backend's `eth0` (native) counts every \
         packet per CPU and drops the flood; *delivered* is its count. Connections: {} client \
         threads connect to {VIP}:{TCP_PORT}, send 6 bytes, read the answer until the server \
         closes, for {:.0} s per round; the backends answer `ok` and close.\n",
        time.as_secs_f64(),
        2 * cpus,
        time.as_secs_f64()
    ));
    report.line("Balancers, one active at a time, each round in this order:\n");
    for kind in Kind::ALL {
        report.line(format!("- {}: {}", kind.name(), kind.config(cpus)));
    }
    report.line("");
}

fn flood_table(report: &mut Report, samples: &Samples) {
    let na = "n/a (TCP proxy)";
    let mut rows: Vec<Vec<String>> = Kind::ALL
        .into_iter()
        .map(|kind| {
            vec![
                kind.name().to_string(),
                kpps(samples.spread(kind, offered), na),
                kpps(samples.spread(kind, delivered), na),
                samples
                    .spread(kind, delivered_share)
                    .map_or(na.to_string(), |s| s.show(2)),
                times(samples.ratio(kind, Kind::Nftables, delivered), na),
                times(samples.ratio(kind, Kind::Haproxy, delivered), na),
                samples
                    .spread(kind, forwarding_cpu)
                    .map_or(na.to_string(), |s| s.show(0)),
                times(samples.ratio(Kind::Nftables, kind, forwarding_cpu), na),
            ]
        })
        .collect();
    rows.push(vec![
        "none: XDP_DROP on the LB's `eth0` (generator ceiling)".to_string(),
        kpps(Some(Spread::of(samples.ceiling.clone())), "–"),
        "–".into(),
        "–".into(),
        "–".into(),
        "–".into(),
        "–".into(),
        "–".into(),
    ]);
    report.line("### UDP flood\n");
    report.table(
        &[
            "balancer",
            "offered kpkt/s",
            "delivered kpkt/s",
            "delivered / offered",
            "delivered × nftables",
            "delivered × HAProxy",
            "forwarding CPU ns/packet",
            "CPU/packet: nftables ÷ this",
        ],
        &rows,
    );
}

fn conns_table(report: &mut Report, samples: &Samples) {
    let rows: Vec<Vec<String>> = Kind::ALL
        .into_iter()
        .map(|kind| {
            let (mut answered, mut failed) = (0, Failures::default());
            for sample in samples.of(kind) {
                answered += sample.conns.answered;
                failed += sample.conns.failed;
            }
            vec![
                kind.name().to_string(),
                samples
                    .spread(kind, conns_per_second)
                    .map_or("–".into(), |s| s.show(0)),
                failures(failed, answered),
                kpps(samples.spread(kind, backend_packets), "–"),
                times(samples.ratio(kind, Kind::Nftables, conns_per_second), "–"),
                times(samples.ratio(kind, Kind::Haproxy, conns_per_second), "–"),
                times(samples.ratio(kind, Kind::Nftables, backend_packets), "–"),
                times(samples.ratio(kind, Kind::Haproxy, backend_packets), "–"),
            ]
        })
        .collect();
    report.line("### New TCP connections\n");
    report.table(
        &[
            "balancer",
            "connections/s",
            "failed (all rounds)",
            "backend kpkt/s",
            "conn/s × nftables",
            "conn/s × HAProxy",
            "pkt/s × nftables",
            "pkt/s × HAProxy",
        ],
        &rows,
    );
}

/// The target, whether this run met it, and if not, the measurements that say why.
fn target(report: &mut Report, cpus: usize, samples: &Samples) {
    let vs_nft = samples.ratio(Kind::Xdp, Kind::Nftables, delivered);
    let vs_haproxy = samples.ratio(Kind::Xdp, Kind::Haproxy, backend_packets);
    let verdict = |ratio: Option<Spread>, target: f64| match ratio {
        Some(r) if r.median >= target => format!("**{:.2}×**, met", r.median),
        Some(r) => format!("**{:.2}×**, missed", r.median),
        None => "not measured".to_string(),
    };
    report.line(format!(
        "**Target** (shown, never asserted): end-to-end packets/s ≥ {TARGET_VS_NFTABLES}× \
         nftables DNAT and ≥ {TARGET_VS_HAPROXY}× HAProxy on the same run. This run: XDP ÷ \
         nftables = {} (UDP flood, delivered packets/s); XDP ÷ HAProxy = {} (packets/s \
         reaching the backends in the connection test, the only workload HAProxy forwards).\n",
        verdict(vs_nft, TARGET_VS_NFTABLES),
        verdict(vs_haproxy, TARGET_VS_HAPROXY)
    ));
    if vs_nft.is_some_and(|r| r.median < TARGET_VS_NFTABLES) {
        why_nftables_missed(report, cpus, samples);
    }
    if vs_haproxy.is_some_and(|r| r.median < TARGET_VS_HAPROXY) {
        why_haproxy_missed(report, samples);
    }
}

fn why_nftables_missed(report: &mut Report, cpus: usize, samples: &Samples) {
    let median = |kind, figure: fn(&Sample) -> Option<f64>| {
        samples.spread(kind, figure).map_or(0.0, |s| s.median)
    };
    let ceiling = Spread::of(samples.ceiling.clone()).median;
    let cpu_ratio = samples
        .ratio(Kind::Nftables, Kind::Xdp, forwarding_cpu)
        .map_or("not measured".to_string(), |r| format!("{:.2}×", r.median));
    report.line(format!(
        "Why the nftables target was missed: on veth, the receiving side's processing (XDP, \
         or the LB's whole forwarding path for nftables, and the backends' sink) runs in \
         softirq on the CPU that sent the frame, so the {cpus} generator threads and all \
         forwarding share the same {cpus} CPUs, and every delivered packet also pays for its \
         generation: a socket buffer built, sent through the veth and received by the LB for \
         each frame. The generator alone, into XDP_DROP on the LB, reaches {:.0} kpkt/s, about \
         {:.0} ns of CPU per frame; the XDP balancer delivered {:.0} kpkt/s ({:.0} % of what it \
         was offered), nftables {:.0} kpkt/s ({:.0} %). The delivered ratio thus understates \
         the difference in forwarding alone: in forwarding CPU per packet, which leaves the \
         generator's share out, nftables costs {cpu_ratio} what the XDP balancer does. A \
         generator on another machine and a physical NIC, or spare cores for forwarding, \
         separate the two.\n",
        ceiling / 1e3,
        cpus as f64 * 1e9 / ceiling,
        median(Kind::Xdp, delivered) / 1e3,
        100.0 * median(Kind::Xdp, delivered_share),
        median(Kind::Nftables, delivered) / 1e3,
        100.0 * median(Kind::Nftables, delivered_share),
    ));
}

fn why_haproxy_missed(report: &mut Report, samples: &Samples) {
    let median = |kind| {
        samples
            .spread(kind, conns_per_second)
            .map_or(0.0, |s| s.median)
    };
    report.line(format!(
        "Why the HAProxy target was missed: HAProxy cannot forward the flood, so the only \
         shared workload is new connections, where each connection costs a handshake, a \
         request, an answer and a teardown in the client's and the backend's kernels, and the \
         answers of all three balancers go back through the LB's kernel routing. Those \
         end-host costs bound the rate for every balancer ({:.0} connections/s with XDP, \
         {:.0} with nftables, {:.0} with HAProxy), so the packets/s ratio there measures the \
         balancer's share of a connection's cost, not its forwarding rate.\n",
        median(Kind::Xdp),
        median(Kind::Nftables),
        median(Kind::Haproxy)
    ));
}

fn how_to_read(report: &mut Report) {
    report.line(format!(
        "How to read: *offered* is what the generator handed to the client's kernel, \
         *delivered* what the backends' sinks counted; delivered / offered below 1 means \
         packets were dropped on the way. The × columns divide this balancer's figure by \
         nftables' or HAProxy's in the same round, median [min–max] over rounds. \
         *Forwarding CPU ns/packet* is CPUs ÷ delivered − CPUs ÷ ceiling in the same round: \
         every CPU is busy in both runs and, on veth, all receiving work runs on the \
         generating CPU, so it is the CPU time a delivered packet costs beyond being \
         generated and dropped at the LB; *nftables ÷ this* divides nftables' by this \
         balancer's. It is derived; the delivered packets/s and their ratios are the \
         measurements. Backend kpkt/s in the connection test counts \
         the client → backend direction as the backends receive it (for HAProxy: its own \
         connections to them). *Failed* connections are counted by kind: connect timeout (not \
         connected within {timeout} s), refused, reset (after connecting), read timeout (no \
         answer within {timeout} s of the request), empty answer (closed by the server \
         without one), other.\n",
        timeout = IO_TIMEOUT.as_secs_f64(),
    ));
}

fn charts(report: &mut Report, samples: &Samples) {
    let mut pps = Vec::new();
    for kind in Kind::ALL {
        if let Some(value) = samples.spread(kind, delivered) {
            pps.push(Bar {
                label: format!("{}: UDP flood, delivered", kind.name()),
                value,
            });
        }
    }
    for kind in Kind::ALL {
        if let Some(value) = samples.spread(kind, backend_packets) {
            pps.push(Bar {
                label: format!("{}: connection test, to backends", kind.name()),
                value,
            });
        }
    }
    report.chart(Chart {
        file: "end-to-end-pps.png".into(),
        title: "End-to-end packets/s through veth namespaces".into(),
        unit: "packets/s".into(),
        bars: pps,
    });
    let conns = Kind::ALL
        .into_iter()
        .filter_map(|kind| {
            samples.spread(kind, conns_per_second).map(|value| Bar {
                label: kind.name().to_string(),
                value,
            })
        })
        .collect();
    report.chart(Chart {
        file: "end-to-end-connections.png".into(),
        title: "New TCP connections/s through veth namespaces".into(),
        unit: "connections/s".into(),
        bars: conns,
    });
}
