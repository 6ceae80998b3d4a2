//! The Prometheus metrics that `balancer daemon --metrics-listen` serves on `/metrics`, in
//! the Prometheus text format, version 0.0.4 (prometheus-client). Rendered at each scrape from a
//! [`Snapshot`]: the status the daemon answers `status` with (desired state joined with the
//! data plane's counters) and its latest pass over connection tracking — a scrape never
//! walks connection tracking itself.
//!
//! Names and labels (every backend metric has `service`, `group` and `backend`):
//!
//! | metric | type | what |
//! |---|---|---|
//! | `balancer_backend_new_flows_total` | counter | flows balanced to the backend |
//! | `balancer_backend_packets_total`, `..._bytes_total` | counter | client packets and bytes forwarded |
//! | `balancer_backend_fin_closes_total` | counter | flows the client closed with a FIN |
//! | `balancer_backend_resets_total` | counter | flows the client reset |
//! | `balancer_backend_syn_retransmits_total` | counter | SYNs repeated before anything else |
//! | `balancer_backend_handshake_failures_total` | counter | TCP services: handshakes not completed within 5 s |
//! | `balancer_backend_single_packet_flows_total` | counter | UDP services: flows of one datagram |
//! | `balancer_backend_reply_packets_total`, `..._reply_bytes_total` | counter | `nat` services: the backend's replies |
//! | `balancer_backend_reply_resets_total` | counter | `nat` services: replies with RST (connections the backend reset or refused) |
//! | `balancer_backend_handshake_seconds` | histogram | `nat` services: from the SYN the LB forwarded to the backend's SYN-ACK |
//! | `balancer_backend_active_flows` | gauge | active tracked flows, at the latest pass |
//! | `balancer_backend_weight` | gauge | configured weight |
//! | `balancer_backend_share` | gauge | share of the service's new flows it gets now (0..1) |
//! | `balancer_backend_up` | gauge | 1 up, 0 down (services with health checks only) |
//! | `balancer_group_share` | gauge | configured split (0..1), label `group` |
//! | `balancer_canary_share` | gauge | the canary group's share in force (0..1), labels `from`, `to` |
//! | `balancer_canary_state` | gauge | 1 for the canary's state (`running`, `paused`, or how it ended) |
//! | `balancer_retired_backends` | gauge | backends out of the tables whose flows still reach them |
//! | `balancer_conntrack_entries`, `..._capacity` | gauge | label `table`: `established`, `pending` |
//! | `balancer_packets_total` | counter | label `verdict`: `passed`, `dropped`, `malformed`, `unbalanceable`, `martian` |
//! | `balancer_tunnel_packets_total` | counter | label `outcome`: `unresolved` (passed to the kernel encapsulated), `unroutable`, `failed` (dropped), `too_big` (answered with ICMP fragmentation needed / packet too big) |
//! | `balancer_nat_packets_total` | counter | label `outcome`: `replies` (backend replies rewritten to come from the VIP), `errors` (ICMP errors about nat flows translated back), `unresolved` (passed to the kernel rewritten), `unroutable`, `failed` (dropped), `exhausted` (new fullnat flows dropped: no pool port free), `too_big` (clients' packets too big for the route to the backend, answered with ICMP from the VIP) |
//! | `balancer_fullnat_translations` | gauge | fullnat flows holding a pool port at the daemon's latest sweep (every 5 s) |
//! | `balancer_fullnat_released_total` | counter | pool ports freed since the daemon started |
//! | `balancer_sync_records_total` | counter | `daemon --sync-listen` only; label `event`: `recorded` (this host's new flows read from the data plane), `received` (peers' records), `inserted` (taken into connection tracking), `kept` (flows tracked here already), `overflowed` (lost to a full ring buffer) |
//! | `balancer_sync_datagrams_total` | counter | `daemon --sync-listen` only; label `event`: `sent`, `unsent`, `dropped` (received from no peer, malformed, or not inserted) |
//! | `balancer_sync_sent_bytes_total` | counter | `daemon --sync-listen` only: bytes of the datagrams sent (UDP payload) |
//! | `balancer_dataplane_memory_bytes` | gauge | the kernel's account of the data plane's maps, label `map`: each map the program uses by name, `services` for every service's tables map together |
//! | `balancer_build_info` | gauge | 1, labels `version` and `layout` (map layout version) |

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::{prometheus_text, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

mod counted;

use counted::Counted;

use crate::{
    api::{BackendStatus, Health, ServiceStatus, Status, SyncStatus},
    basis_points::BasisPoints,
    dataplane::{bpffs::LAYOUT_VERSION, Census},
    release::{analysis::Judgement, canary::Canary},
    vip::Protocol,
};

/// The content type of what [`render`] writes.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// What one scrape shows.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The status, with active flows from `census` and the unanswered flows counted.
    pub status: Status,
    /// The latest pass over connection tracking, if one finished yet (its active flows are
    /// those of `status`).
    pub census: Option<Census>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    service: String,
    group: String,
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    service: String,
    group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CanaryLabels {
    service: String,
    from: String,
    to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    service: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignalLabels {
    service: String,
    signal: String,
    group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    service: String,
    signal: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WindowLabels {
    service: String,
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabels {
    map: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    layout: String,
}

/// A gauge of a ratio or other fraction.
type Ratio = Gauge<f64, AtomicU64>;

/// Per-backend metric families.
#[derive(Default)]
struct Backends {
    new_flows: Family<BackendLabels, Counter>,
    packets: Family<BackendLabels, Counter>,
    bytes: Family<BackendLabels, Counter>,
    fin_closes: Family<BackendLabels, Counter>,
    resets: Family<BackendLabels, Counter>,
    syn_retransmits: Family<BackendLabels, Counter>,
    handshake_failures: Family<BackendLabels, Counter>,
    single_packet_flows: Family<BackendLabels, Counter>,
    reply_packets: Family<BackendLabels, Counter>,
    reply_bytes: Family<BackendLabels, Counter>,
    reply_resets: Family<BackendLabels, Counter>,
    handshakes: Family<BackendLabels, Counted>,
    active_flows: Family<BackendLabels, Gauge>,
    weight: Family<BackendLabels, Gauge>,
    share: Family<BackendLabels, Ratio>,
    up: Family<BackendLabels, Gauge>,
}

impl Backends {
    fn register(&self, registry: &mut Registry) {
        let counters = [
            (
                "new_flows",
                "Flows balanced to the backend",
                &self.new_flows,
            ),
            (
                "packets",
                "Client packets forwarded to the backend",
                &self.packets,
            ),
            (
                "bytes",
                "Client bytes forwarded to the backend",
                &self.bytes,
            ),
            (
                "fin_closes",
                "Flows whose client closed them with a FIN",
                &self.fin_closes,
            ),
            ("resets", "Flows the client reset (RST)", &self.resets),
            (
                "syn_retransmits",
                "SYNs the client repeated before sending anything else",
                &self.syn_retransmits,
            ),
            (
                "handshake_failures",
                "TCP handshakes the client did not complete within 5 s",
                &self.handshake_failures,
            ),
            (
                "single_packet_flows",
                "UDP flows that sent one datagram and nothing within 5 s",
                &self.single_packet_flows,
            ),
            (
                "reply_packets",
                "Reply packets of the backend (nat services)",
                &self.reply_packets,
            ),
            (
                "reply_bytes",
                "Reply bytes of the backend (nat services)",
                &self.reply_bytes,
            ),
            (
                "reply_resets",
                "Replies with RST: connections the backend reset or refused (nat services)",
                &self.reply_resets,
            ),
        ];
        for (name, help, family) in counters {
            registry.register(format!("balancer_backend_{name}"), help, family.clone());
        }
        registry.register(
            "balancer_backend_handshake_seconds",
            "Time from the SYN the LB forwarded to the backend's SYN-ACK (nat services)",
            self.handshakes.clone(),
        );
        registry.register(
            "balancer_backend_active_flows",
            "Active tracked flows at the daemon's latest pass",
            self.active_flows.clone(),
        );
        registry.register(
            "balancer_backend_weight",
            "Configured weight",
            self.weight.clone(),
        );
        registry.register(
            "balancer_backend_share",
            "Share of the service's new flows the backend gets now (0..1)",
            self.share.clone(),
        );
        registry.register(
            "balancer_backend_up",
            "Health: 1 up, 0 down (services with health checks)",
            self.up.clone(),
        );
    }

    fn add(&self, service: &ServiceStatus, b: &BackendStatus) {
        let labels = BackendLabels {
            service: service.name.clone(),
            group: b.group.clone(),
            backend: b.addr.to_string(),
        };
        let count = |family: &Family<BackendLabels, Counter>, value: u64| {
            family.get_or_create(&labels).inc_by(value);
        };
        count(&self.new_flows, b.new_flows);
        count(&self.packets, b.packets);
        count(&self.bytes, b.bytes);
        count(&self.fin_closes, b.fin_closes);
        count(&self.resets, b.resets);
        count(&self.syn_retransmits, b.syn_retransmits);
        match service.vip.protocol {
            Protocol::Tcp => count(&self.handshake_failures, b.unanswered_flows),
            Protocol::Udp => count(&self.single_packet_flows, b.unanswered_flows),
        }
        if let Some(answers) = &b.answers {
            count(&self.reply_packets, answers.packets);
            count(&self.reply_bytes, answers.bytes);
            count(&self.reply_resets, answers.resets);
            self.handshakes.get_or_create(&labels).set(
                answers.handshake_seconds,
                answers.handshakes,
                answers
                    .handshake_buckets
                    .iter()
                    .map(|(le, count)| (le.unwrap_or(f64::INFINITY), *count))
                    .collect(),
            );
        }
        let set = |family: &Family<BackendLabels, Gauge>, value: u64| {
            family.get_or_create(&labels).set(gauge(value));
        };
        set(&self.active_flows, b.active_flows);
        set(&self.weight, u64::from(b.weight));
        self.share
            .get_or_create(&labels)
            .set(b.effective_share / 100.0);
        if let Some(health) = b.health {
            set(&self.up, u64::from(health == Health::Up));
        }
    }
}

/// Per-service metric families.
#[derive(Default)]
struct Services {
    group_share: Family<GroupLabels, Ratio>,
    canary_share: Family<CanaryLabels, Ratio>,
    canary_state: Family<StateLabels, Gauge>,
    analysis_ratio: Family<SignalLabels, Ratio>,
    analysis_limit: Family<LimitLabels, Ratio>,
    analysis_seconds: Family<SignalLabels, Ratio>,
    analysis_limit_seconds: Family<LimitLabels, Ratio>,
    analysis_verdict: Family<WindowLabels, Gauge>,
    retired: Family<ServiceLabels, Gauge>,
}

impl Services {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "balancer_group_share",
            "Configured share of the service's new flows (0..1)",
            self.group_share.clone(),
        );
        registry.register(
            "balancer_canary_share",
            "The canary group's share in force (0..1)",
            self.canary_share.clone(),
        );
        registry.register(
            "balancer_canary_state",
            "1 for the canary's state: running, paused, or how it ended",
            self.canary_state.clone(),
        );
        registry.register(
            "balancer_canary_analysis_ratio",
            "A signal per new flow (0..1) of each group in the canary analysis' last window",
            self.analysis_ratio.clone(),
        );
        registry.register(
            "balancer_canary_analysis_limit",
            "The limit (0..1) the new group's ratio had in the last window",
            self.analysis_limit.clone(),
        );
        registry.register(
            "balancer_canary_analysis_seconds",
            "A time signal (handshake time) of each group in the canary analysis' last window",
            self.analysis_seconds.clone(),
        );
        registry.register(
            "balancer_canary_analysis_limit_seconds",
            "The limit the new group's time signal had in the last window",
            self.analysis_limit_seconds.clone(),
        );
        registry.register(
            "balancer_canary_analysis_verdict",
            "1 for the verdict of the canary analysis' last window: pass, fail, inconclusive",
            self.analysis_verdict.clone(),
        );
        registry.register(
            "balancer_retired_backends",
            "Backends out of the tables whose flows still reach them",
            self.retired.clone(),
        );
    }

    fn add(&self, service: &ServiceStatus) {
        for share in &service.split {
            self.group_share
                .get_or_create(&GroupLabels {
                    service: service.name.clone(),
                    group: share.group.clone(),
                })
                .set(ratio(share.percent));
        }
        if let Some(canary) = &service.canary {
            let share = canary.steps.get(canary.step).copied();
            self.canary_share
                .get_or_create(&CanaryLabels {
                    service: service.name.clone(),
                    from: canary.from.clone(),
                    to: canary.to.clone(),
                })
                .set(share.map_or(0.0, ratio));
            self.canary_state
                .get_or_create(&StateLabels {
                    service: service.name.clone(),
                    state: canary_state(canary),
                })
                .set(1);
            if let Some(last) = canary.analysis.as_ref().and_then(|a| a.last.as_ref()) {
                self.add_window(&service.name, canary, last);
            }
        }
        self.retired
            .get_or_create(&ServiceLabels {
                service: service.name.clone(),
            })
            .set(gauge(service.retired.len() as u64));
    }
}

impl Services {
    /// The last analysis window of the canary of `service`.
    fn add_window(&self, service: &str, canary: &Canary, last: &Judgement) {
        for r in &last.readings {
            let signal = r.signal.name().to_string();
            // Percentages as ratios (0..1), milliseconds as seconds.
            let (values, limits) = match r.signal.timed() {
                true => (&self.analysis_seconds, &self.analysis_limit_seconds),
                false => (&self.analysis_ratio, &self.analysis_limit),
            };
            let scale = match r.signal.timed() {
                true => 1000.0,
                false => 100.0,
            };
            let sides = [(&canary.to, r.value), (&canary.from, r.baseline)];
            for (group, value) in sides {
                if let Some(value) = value {
                    values
                        .get_or_create(&SignalLabels {
                            service: service.to_string(),
                            signal: signal.clone(),
                            group: group.clone(),
                        })
                        .set(value / scale);
                }
            }
            if let Some(limit) = r.limit {
                limits
                    .get_or_create(&LimitLabels {
                        service: service.to_string(),
                        signal,
                    })
                    .set(limit / scale);
            }
        }
        let verdict = format!("{:?}", last.verdict).to_lowercase();
        self.analysis_verdict
            .get_or_create(&WindowLabels {
                service: service.to_string(),
                verdict,
            })
            .set(1);
    }
}

/// The state label of a canary.
fn canary_state(canary: &Canary) -> String {
    match (&canary.outcome, canary.paused_remaining_ms) {
        (Some(outcome), _) => format!("{outcome:?}").to_lowercase(),
        (None, Some(_)) => "paused".into(),
        (None, None) => "running".into(),
    }
}

/// `value` as a gauge's value (saturating).
fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// `share` as a fraction of 1.
fn ratio(share: BasisPoints) -> f64 {
    f64::from(share.get()) / 10_000.0
}

/// Registers the flow-state sync's counters.
fn register_sync(registry: &mut Registry, sync: &SyncStatus) {
    let families = [
        (
            "balancer_sync_records",
            "Flow records of the flow-state sync, by event",
            vec![
                ("recorded", sync.recorded),
                ("received", sync.received),
                ("inserted", sync.inserted),
                ("kept", sync.kept),
                ("overflowed", sync.overflows),
            ],
        ),
        (
            "balancer_sync_datagrams",
            "Datagrams of the flow-state sync, by event",
            vec![
                ("sent", sync.datagrams),
                ("unsent", sync.unsent),
                ("dropped", sync.dropped),
            ],
        ),
    ];
    for (name, help, events) in families {
        let family = Family::<EventLabels, Counter>::default();
        registry.register(name, help, family.clone());
        for (event, value) in events {
            family
                .get_or_create(&EventLabels {
                    event: event.into(),
                })
                .inc_by(value);
        }
    }
    let bytes = Counter::<u64>::default();
    registry.register(
        "balancer_sync_sent_bytes",
        "Bytes of the flow-state sync's datagrams sent (UDP payload)",
        bytes.clone(),
    );
    bytes.inc_by(sync.bytes);
}

/// Renders `snapshot` in the Prometheus text format.
pub fn render(snapshot: &Snapshot) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    let backends = Backends::default();
    backends.register(&mut registry);
    let services = Services::default();
    services.register(&mut registry);
    for service in &snapshot.status.services {
        services.add(service);
        for b in &service.backends {
            backends.add(service, b);
        }
    }
    let entries = Family::<TableLabels, Gauge>::default();
    let capacity = Family::<TableLabels, Gauge>::default();
    registry.register(
        "balancer_conntrack_entries",
        "Flows in connection tracking at the daemon's latest pass",
        entries.clone(),
    );
    registry.register(
        "balancer_conntrack_capacity",
        "Flows connection tracking holds at most",
        capacity.clone(),
    );
    if let Some(census) = &snapshot.census {
        let tables = [
            (
                "established",
                census.established,
                census.established_capacity,
            ),
            ("pending", census.pending, census.pending_capacity),
        ];
        for (table, held, size) in tables {
            let labels = TableLabels {
                table: table.into(),
            };
            entries.get_or_create(&labels).set(gauge(held));
            capacity.get_or_create(&labels).set(gauge(size));
        }
    }
    let packets = Family::<VerdictLabels, Counter>::default();
    registry.register(
        "balancer_packets",
        "Packets the XDP program did not forward to a backend, by verdict",
        packets.clone(),
    );
    let globals = snapshot.status.counters;
    let verdicts = [
        ("passed", globals.passed),
        ("dropped", globals.dropped),
        ("malformed", globals.malformed),
        ("unbalanceable", globals.unbalanceable),
        ("martian", globals.martian),
    ];
    for (verdict, value) in verdicts {
        packets
            .get_or_create(&VerdictLabels {
                verdict: verdict.into(),
            })
            .inc_by(value);
    }
    let tunnel = Family::<OutcomeLabels, Counter>::default();
    registry.register(
        "balancer_tunnel_packets",
        "Packets to tunnelled backends the XDP program did not send out itself, by outcome",
        tunnel.clone(),
    );
    let outcomes = [
        ("unresolved", globals.tunnel.unresolved),
        ("unroutable", globals.tunnel.unroutable),
        ("failed", globals.tunnel.failed),
        ("too_big", globals.tunnel.too_big),
    ];
    for (outcome, value) in outcomes {
        tunnel
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc_by(value);
    }
    let nat = Family::<OutcomeLabels, Counter>::default();
    registry.register(
        "balancer_nat_packets",
        "Packets of nat backends: replies rewritten, and packets the XDP program did not send out itself, by outcome",
        nat.clone(),
    );
    let outcomes = [
        ("replies", globals.nat.replies),
        ("errors", globals.nat.errors),
        ("unresolved", globals.nat.unresolved),
        ("unroutable", globals.nat.unroutable),
        ("failed", globals.nat.failed),
        ("exhausted", globals.nat.exhausted),
        ("too_big", globals.nat.too_big),
    ];
    for (outcome, value) in outcomes {
        nat.get_or_create(&OutcomeLabels {
            outcome: outcome.into(),
        })
        .inc_by(value);
    }
    let translations = snapshot.status.translations;
    let active = Gauge::<i64>::default();
    registry.register(
        "balancer_fullnat_translations",
        "Full-NAT flows holding a pool port, at the daemon's latest sweep",
        active.clone(),
    );
    active.set(i64::try_from(translations.active).unwrap_or(i64::MAX));
    let released = Counter::<u64>::default();
    registry.register(
        "balancer_fullnat_released",
        "Pool ports freed since the daemon started: flows ended, and ports no flow named",
        released.clone(),
    );
    released.inc_by(translations.released + translations.orphans);
    if let Some(sync) = &snapshot.status.sync {
        register_sync(&mut registry, sync);
    }
    let memory = Family::<MapLabels, Gauge>::default();
    registry.register(
        "balancer_dataplane_memory_bytes",
        "Bytes the kernel accounts for the data plane's maps, by map (services: every service's tables map together)",
        memory.clone(),
    );
    let status_memory = &snapshot.status.memory;
    let maps = status_memory
        .maps
        .iter()
        .map(|m| (m.name.as_str(), m.bytes));
    for (map, bytes) in maps.chain([("services", status_memory.tables_bytes)]) {
        memory
            .get_or_create(&MapLabels { map: map.into() })
            .set(gauge(bytes));
    }
    let build = Family::<BuildLabels, Gauge>::default();
    registry.register(
        "balancer_build_info",
        "1, labelled with the daemon's version and map layout",
        build.clone(),
    );
    build
        .get_or_create(&BuildLabels {
            version: env!("CARGO_PKG_VERSION").into(),
            layout: LAYOUT_VERSION.to_string(),
        })
        .set(1);
    let mut text = String::new();
    prometheus_text::encode(&mut text, &registry)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::{fullnat::Swept, GlobalCounters, MapMemory, Memory, TunnelCounters};

    #[test]
    fn memory_is_one_gauge_per_map_and_one_for_the_services_tables() {
        let maps = vec![MapMemory {
            name: "CONNTRACK".into(),
            bytes: 1000,
        }];
        let status = Status {
            services: Vec::new(),
            counters: GlobalCounters::default(),
            memory: Memory::new(maps, [20, 30].into_iter()),
            translations: Swept::default(),
            announcement: None,
            sync: None,
        };
        let text = render(&Snapshot {
            status,
            census: None,
        })
        .unwrap();
        for line in [
            "balancer_dataplane_memory_bytes{map=\"CONNTRACK\"} 1000\n",
            "balancer_dataplane_memory_bytes{map=\"services\"} 50\n",
        ] {
            assert!(text.contains(line), "{line:?} in:\n{text}");
        }
    }

    #[test]
    fn tunnel_packets_are_one_counter_per_outcome_and_fullnat_ports_are_reported() {
        let counters = GlobalCounters {
            tunnel: TunnelCounters {
                unresolved: 1,
                unroutable: 2,
                failed: 3,
                too_big: 4,
            },
            ..GlobalCounters::default()
        };
        let status = Status {
            services: Vec::new(),
            counters,
            translations: Swept {
                active: 5,
                released: 7,
                orphans: 1,
            },
            memory: Memory::default(),
            announcement: None,
            sync: None,
        };
        let text = render(&Snapshot {
            status,
            census: None,
        })
        .unwrap();
        for (outcome, value) in [
            ("unresolved", 1),
            ("unroutable", 2),
            ("failed", 3),
            ("too_big", 4),
        ] {
            let line = format!("balancer_tunnel_packets_total{{outcome=\"{outcome}\"}} {value}\n");
            assert!(text.contains(&line), "{line:?} in:\n{text}");
        }
        for line in [
            "balancer_fullnat_translations 5\n",
            "balancer_fullnat_released_total 8\n",
        ] {
            assert!(text.contains(line), "{line:?} in:\n{text}");
        }
        assert!(!text.contains("balancer_sync"), "no sync: {text}");
    }

    #[test]
    fn the_sync_counters_are_one_series_per_event() {
        let status = Status {
            services: Vec::new(),
            counters: GlobalCounters::default(),
            translations: Swept::default(),
            memory: Memory::default(),
            announcement: None,
            sync: Some(Box::new(SyncStatus {
                listen: "198.18.1.1:7070".parse().unwrap(),
                peers: 2,
                recorded: 1,
                datagrams: 2,
                bytes: 3,
                unsent: 4,
                received: 5,
                inserted: 6,
                kept: 7,
                dropped: 8,
                overflows: 9,
            })),
        };
        let text = render(&Snapshot {
            status,
            census: None,
        })
        .unwrap();
        for line in [
            "balancer_sync_records_total{event=\"recorded\"} 1\n",
            "balancer_sync_records_total{event=\"received\"} 5\n",
            "balancer_sync_records_total{event=\"inserted\"} 6\n",
            "balancer_sync_records_total{event=\"kept\"} 7\n",
            "balancer_sync_records_total{event=\"overflowed\"} 9\n",
            "balancer_sync_datagrams_total{event=\"sent\"} 2\n",
            "balancer_sync_datagrams_total{event=\"unsent\"} 4\n",
            "balancer_sync_datagrams_total{event=\"dropped\"} 8\n",
            "balancer_sync_sent_bytes_total 3\n",
        ] {
            assert!(text.contains(line), "{line:?} in:\n{text}");
        }
    }
}
