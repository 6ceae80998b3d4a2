//! Section: flow-state sync between LB hosts (`daemon --sync-listen`). Two pairs of LB
//! hosts built side by side (`balancer_tests::pair`: two daemons in a fleet on a real etcd,
//! the client's route through host A), one syncing and one not, measured one after the
//! other in every round: new connections/s through A, what the sync sent per new flow
//! (datagrams and bytes, from A's counters), the CPU time of A's daemon per new flow (and
//! of B's per record taken), and the delay until B knows a flow — from the client's
//! handshake (its `connect` returning: the ACK that makes A's entry is then sent) until B's
//! connection tracking holds the flow, found by polling B's map.

use std::{
    net::{IpAddr, SocketAddr, TcpStream},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use aya::maps::{HashMap, Map, MapData};
use balancer_common::{FlowKey, FlowState, FAMILY_V4, FAMILY_V6, PROTO_TCP};
use balancer_tests::{lab::Lab, netns, pair::Pair};
use balancer_user::{api::SyncStatus, dataplane::bpffs::Layout};

use crate::{report::Report, stats::Spread, Plan};

/// The section's name in failures.
const SECTION: &str = "sync";
/// Client threads opening connections.
const THREADS: usize = 4;
/// Flows whose delay is measured (quick run: a fifth).
const DELAYS: usize = 500;
/// How long B may take to know a flow before it counts as never.
const DELAY_LIMIT: Duration = Duration::from_secs(2);

/// One round of one pair.
struct Sample {
    /// Connections answered per second.
    per_second: f64,
    /// Connections that failed.
    failed: u64,
    /// The sync counters' change on A and B (none without sync).
    sync: Option<(SyncStatus, SyncStatus)>,
    /// New flows A recorded (connections answered, without sync).
    flows: u64,
    /// CPU time of A's and B's daemons meanwhile, in ns.
    cpu_ns: (u64, u64),
}

/// Measures both pairs in `plan.rounds` rounds, then the delays, and writes the section.
pub fn run(report: &mut Report, plan: &Plan) -> Result<()> {
    let on = Pair::new("bsyon", true)?;
    let off = Pair::new("bsyoff", false)?;
    for pair in [&on, &off] {
        // Thousands of connections a second for several rounds: the client's ports must
        // not run out to TIME_WAIT (as in the end-to-end sections).
        netns::set_sysctls(
            pair.lab.topology.client_ns(),
            &[
                ("net/ipv4/ip_local_port_range", "1024 65000"),
                ("net/ipv4/tcp_tw_reuse", "1"),
            ],
        )?;
    }
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for round in 1..=plan.rounds {
        eprintln!("bench: flow sync, round {round}/{}", plan.rounds);
        with.push(sample(&on, plan.forwarding_time)?);
        without.push(sample(&off, plan.forwarding_time)?);
    }
    let count = if plan.quick { DELAYS / 5 } else { DELAYS };
    eprintln!("bench: flow sync, the delay of {count} flows");
    let delays = delays(&on, count)?;
    write(report, &with, &without, &delays, count);
    Ok(())
}

/// New connections through `pair`'s host A for `time`, each a connect, one exchange and a
/// close, from [`THREADS`] threads.
fn sample(pair: &Pair, time: Duration) -> Result<Sample> {
    let before = sync_counters(pair)?;
    let cpu = (
        daemon_cpu_ns(pair.lab.balancer.pid())?,
        daemon_cpu_ns(pair.b.pid())?,
    );
    let started = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let client = pair.lab.client.clone();
            thread::spawn(move || {
                let (mut answered, mut failed) = (0u64, 0u64);
                while started.elapsed() < time {
                    match client.ask_once(Lab::vip(false), None) {
                        Ok(_) => answered += 1,
                        Err(_) => failed += 1,
                    }
                }
                (answered, failed)
            })
        })
        .collect();
    let (mut answered, mut failed) = (0, 0);
    for thread in threads {
        let (a, f) = thread
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
        answered += a;
        failed += f;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_ns = (
        daemon_cpu_ns(pair.lab.balancer.pid())? - cpu.0,
        daemon_cpu_ns(pair.b.pid())? - cpu.1,
    );
    // The last records reach B.
    thread::sleep(Duration::from_millis(200));
    let after = sync_counters(pair)?;
    let sync = match (before, after) {
        (Some((a0, b0)), Some((a1, b1))) => Some((delta(&a0, &a1), delta(&b0, &b1))),
        _ => None,
    };
    Ok(Sample {
        per_second: answered as f64 / seconds,
        failed,
        flows: sync.map_or(answered, |(a, _)| a.recorded),
        sync,
        cpu_ns,
    })
}

/// A's and B's sync counters, none without sync.
fn sync_counters(pair: &Pair) -> Result<Option<(SyncStatus, SyncStatus)>> {
    let [a, b] = pair.statuses()?;
    Ok(a.sync.zip(b.sync).map(|(a, b)| (*a, *b)))
}

/// What the counters of `after` added to `before`'s.
fn delta(before: &SyncStatus, after: &SyncStatus) -> SyncStatus {
    SyncStatus {
        recorded: after.recorded - before.recorded,
        datagrams: after.datagrams - before.datagrams,
        bytes: after.bytes - before.bytes,
        unsent: after.unsent - before.unsent,
        received: after.received - before.received,
        inserted: after.inserted - before.inserted,
        kept: after.kept - before.kept,
        dropped: after.dropped - before.dropped,
        overflows: after.overflows - before.overflows,
        ..*after
    }
}

/// The CPU time the daemon `pid` used so far, every thread's (`/proc/PID/task/*/schedstat`),
/// in ns.
fn daemon_cpu_ns(pid: Option<u32>) -> Result<u64> {
    let pid = pid.context("the daemon is not running")?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))?;
    if comm.trim() != "balancer" {
        bail!("process {pid} is {comm:?}, not the daemon");
    }
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let schedstat = std::fs::read_to_string(task?.path().join("schedstat"))?;
        total += schedstat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .context("a thread's schedstat")?;
    }
    Ok(total)
}

/// For `count` new connections through `pair`'s host A, one after another: the delay from
/// the handshake to B's connection tracking holding the flow (none: not within
/// [`DELAY_LIMIT`]).
fn delays(pair: &Pair, count: usize) -> Result<Vec<Option<Duration>>> {
    let maps = Layout::new(pair.b.pin_root(), "eth0").maps();
    let pin = maps.join("CONNTRACK");
    let data = MapData::from_pin(&pin).with_context(|| format!("open {}", pin.display()))?;
    let mut conntrack: HashMap<MapData, FlowKey, FlowState> =
        HashMap::try_from(Map::LruHashMap(data)).context("B's CONNTRACK")?;
    // B forwards nothing here: its entries are the records of the rounds' flows, whose
    // client ports the kernel hands out again. Removed, so that only a flow's own record
    // is found (and each flow's after it was).
    let held: Vec<FlowKey> = conntrack.keys().collect::<Result<_, _>>()?;
    for key in &held {
        conntrack.remove(key).ok();
    }
    let vip = Lab::vip(false);
    netns::in_netns(pair.lab.topology.client_ns(), move || {
        (0..count)
            .map(|_| {
                let stream = TcpStream::connect_timeout(&vip, Duration::from_secs(1))?;
                let shaken = Instant::now();
                let key = key_of(stream.local_addr()?, vip);
                let delay = loop {
                    if conntrack.get(&key, 0).is_ok() {
                        break Some(shaken.elapsed());
                    }
                    if shaken.elapsed() > DELAY_LIMIT {
                        break None;
                    }
                    thread::sleep(Duration::from_micros(20));
                };
                conntrack.remove(&key).ok();
                Ok(delay)
            })
            .collect::<Result<Vec<_>>>()
    })?
}

/// The connection-tracking key of a TCP flow from `client` to `vip`.
fn key_of(client: SocketAddr, vip: SocketAddr) -> FlowKey {
    let mut key = FlowKey {
        sport_be: client.port().to_be(),
        dport_be: vip.port().to_be(),
        proto: PROTO_TCP,
        family: if client.is_ipv4() {
            FAMILY_V4
        } else {
            FAMILY_V6
        },
        ..FlowKey::default()
    };
    for (out, addr) in [(&mut key.src, client.ip()), (&mut key.dst, vip.ip())] {
        match addr {
            IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => *out = v6.octets(),
        }
    }
    key
}

/// The section's text, and failures when it measured nothing.
fn write(
    report: &mut Report,
    with: &[Sample],
    without: &[Sample],
    delays: &[Option<Duration>],
    count: usize,
) {
    report.line("## Flow-state sync between LB hosts\n");
    report.line(format!(
        "Two pairs of LB hosts side by side (a fleet of two on a real etcd each, the client's \
         route through host A), one with `--sync-listen` and one without; in every round each \
         takes new TCP connections through A from {THREADS} client threads (connect, one \
         exchange, close). Sync is on a separate UDP socket per host; per new flow A sends one \
         48-byte record (plus an 8-byte header per datagram of up to 29 records) to every \
         peer.\n"
    ));
    let spread = |samples: &[Sample], f: &dyn Fn(&Sample) -> Option<f64>| {
        let values: Vec<f64> = samples.iter().filter_map(f).collect();
        match values.is_empty() {
            true => "–".to_string(),
            false => Spread::of(values).show(2),
        }
    };
    let per_flow = |s: &Sample, n: u64| (s.flows > 0).then(|| n as f64 / s.flows as f64);
    let rows = [("with sync", with), ("without sync", without)]
        .into_iter()
        .map(|(name, samples)| {
            vec![
                name.to_string(),
                spread(samples, &|s| Some(s.per_second)),
                samples.iter().map(|s| s.failed).sum::<u64>().to_string(),
                spread(samples, &|s| {
                    s.sync.and_then(|(a, _)| per_flow(s, a.datagrams))
                }),
                spread(samples, &|s| s.sync.and_then(|(a, _)| per_flow(s, a.bytes))),
                spread(samples, &|s| per_flow(s, s.cpu_ns.0).map(|ns| ns / 1000.0)),
                spread(samples, &|s| {
                    s.sync.and_then(|(_, b)| {
                        (b.received > 0).then(|| s.cpu_ns.1 as f64 / b.received as f64 / 1000.0)
                    })
                }),
            ]
        })
        .collect::<Vec<_>>();
    report.table(
        &[
            "A's daemon",
            "new connections/s",
            "failed",
            "datagrams per new flow",
            "bytes per new flow",
            "A's daemon CPU µs per new flow",
            "B's daemon CPU µs per record taken",
        ],
        &rows,
    );
    let lost: u64 = with
        .iter()
        .filter_map(|s| s.sync.map(|(a, b)| a.overflows + a.unsent + b.dropped))
        .sum();
    let known: Vec<f64> = delays
        .iter()
        .flatten()
        .map(|d| d.as_secs_f64() * 1e6)
        .collect();
    let missed = delays.iter().filter(|d| d.is_none()).count();
    let mut sorted = known.clone();
    sorted.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        sorted
            .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
            .copied()
    };
    match (quantile(0.5), quantile(0.99), sorted.last()) {
        (Some(p50), Some(p99), Some(max)) => report.line(format!(
            "Delay until B knows a flow ({count} connections one after another, from the \
             client's handshake to the flow in B's connection tracking): p50 {p50:.0} µs, p99 \
             {p99:.0} µs, max {max:.0} µs; {missed} not within {DELAY_LIMIT:?}. Records lost \
             in the rounds (ring overflows, unsent or dropped datagrams): {lost}.\n"
        )),
        _ => report.fail(SECTION, "B knew no flow"),
    }
    if with.iter().chain(without).any(|s| s.per_second <= 0.0) {
        report.fail(SECTION, "a round answered no connection");
    }
    if with
        .iter()
        .any(|s| s.sync.is_none_or(|(a, _)| a.datagrams == 0))
    {
        report.fail(SECTION, "a round with sync sent no datagram");
    }
    if missed > 0 {
        report.fail(
            SECTION,
            format!("B did not learn {missed} of {count} flows"),
        );
    }
}
