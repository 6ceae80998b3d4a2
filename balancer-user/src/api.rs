//! The control API's request and response bodies (HTTP + JSON on a Unix socket), shared by
//! the daemon and the CLI.

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

use crate::dataplane::fullnat::Swept;

use crate::{
    basis_points::BasisPoints,
    dataplane::{GlobalCounters, Memory},
    history::Event,
    release::{canary::Canary, drain::Drain, flip::FlipDrain, rollout::Rollout},
    state::{Affinity, Forward, HealthCheck},
    vip::Vip,
};

/// `POST /services`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddService {
    /// Service name.
    pub name: String,
    /// Address, port, protocol.
    pub vip: Vip,
    /// Hashing affinity.
    #[serde(default)]
    pub affinity: Affinity,
    /// Maglev table size (prime); default 65537.
    pub table_size: Option<u32>,
    /// Health checks; none: every backend counts as healthy.
    #[serde(default)]
    pub health: Option<HealthCheck>,
    /// How packets reach the backends; default direct server return.
    #[serde(default, skip_serializing_if = "Forward::is_dsr")]
    pub forward: Forward,
}

/// `PUT /services/{name}/forward`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetForward {
    /// The new forwarding (refused while the service has backends).
    pub forward: Forward,
}

/// `PUT /services/{name}/health`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetHealth {
    /// New checks; none stops checking.
    pub health: Option<HealthCheck>,
}

/// `POST /services/{name}/backends`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBackend {
    /// Backend address.
    pub addr: IpAddr,
    /// Group to join (created if new).
    pub group: String,
    /// Weight, default 100.
    pub weight: Option<u16>,
}

/// `PUT /services/{name}/backends/{addr}/weight`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetWeight {
    /// New weight.
    pub weight: u16,
}

/// `PUT /services/{name}/split`: group name and percentage ("12.5", two decimals at most).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetSplit {
    /// Shares in order.
    pub shares: Vec<(String, BasisPoints)>,
}

/// `PUT /services/{name}/flip`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flip {
    /// Group that gets every new flow.
    pub to: String,
    /// Watch the previous groups' flows this long, milliseconds.
    #[serde(default)]
    pub drain_timeout_ms: Option<u64>,
    /// Re-balance the previous groups' flows at the drain timeout (at once without one).
    #[serde(default)]
    pub cut: bool,
}

/// `POST /services/{name}/pins` and `DELETE /services/{name}/pins` (group ignored).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinRequest {
    /// Client prefix, e.g. `198.18.2.0/24` or `2001:db8:2::/48`.
    pub cidr: String,
    /// Group the prefix's clients get.
    #[serde(default)]
    pub group: String,
}

/// `DELETE /services/{name}/backends/{addr}` (an empty body is `cut: false`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveBackend {
    /// Re-balance the backend's flows now instead of retiring it with them.
    #[serde(default)]
    pub cut: bool,
}

/// `POST /services/{name}/backends/{addr}/drain`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartDrain {
    /// Give up waiting for established flows after this long; none: wait until they end.
    pub timeout_ms: Option<u64>,
    /// Re-balance the flows left at the drain's end (their clients get a reset).
    #[serde(default)]
    pub cut: bool,
}

/// `GET /events`: events of the history, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Events {
    /// The events.
    pub events: Vec<Event>,
}

/// Error body of every non-2xx answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    /// One line for the operator.
    pub error: String,
}

/// `GET /status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Services in name order.
    pub services: Vec<ServiceStatus>,
    /// Global packet counters.
    pub counters: GlobalCounters,
    /// Full NAT's translations: active at the daemon's latest sweep (every 5 s), freed
    /// since it started (absent from older daemons' answers: zero).
    #[serde(default)]
    pub translations: Swept,
    /// The data plane's memory as the kernel accounts it (absent from older daemons'
    /// answers: zero).
    #[serde(default)]
    pub memory: Memory,
    /// The VIPs this host announces over BGP (`daemon --announce-table`); none without it.
    #[serde(default)]
    pub announcement: Option<Announcement>,
    /// The flow-state sync with the fleet's other hosts (`daemon --sync-listen`); none
    /// without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<Box<SyncStatus>>,
}

/// What a host announces over BGP, in [`Status`]: the routes it keeps in its announcement
/// table for its BGP daemon to export.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// The kernel routing table (`--announce-table`).
    pub table: u32,
    /// Whether the host left the fleet (`fleet leave`): it announces nothing until
    /// `fleet join`.
    pub left: bool,
    /// The VIP addresses announced (a route each in the table), as of the last pass.
    pub vips: Vec<IpAddr>,
}

/// What the flow-state sync did since the daemon started, in [`Status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatus {
    /// The address it listens on and sends from.
    pub listen: std::net::SocketAddr,
    /// Peers it sends to now.
    pub peers: usize,
    /// This host's new flow records read from the data plane.
    pub recorded: u64,
    /// Datagrams sent (each to one peer).
    pub datagrams: u64,
    /// Bytes of those datagrams (UDP payload).
    pub bytes: u64,
    /// Datagrams that could not be sent.
    pub unsent: u64,
    /// Records received from peers.
    pub received: u64,
    /// Received records inserted into connection tracking.
    pub inserted: u64,
    /// Received records of flows this host already tracked (its own entry kept).
    pub kept: u64,
    /// Received datagrams (or records) dropped: from no known peer, malformed, or not
    /// inserted.
    pub dropped: u64,
    /// Records the data plane lost because its ring buffer was full.
    pub overflows: u64,
}

/// One service in [`Status`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Name.
    pub name: String,
    /// VIP.
    pub vip: Vip,
    /// Affinity.
    pub affinity: Affinity,
    /// Maglev table size.
    pub table_size: u32,
    /// How packets reach the backends (absent from older daemons' answers: DSR).
    #[serde(default)]
    pub forward: Forward,
    /// Configured split, in group order.
    pub split: Vec<GroupShare>,
    /// Backends in group order.
    pub backends: Vec<BackendStatus>,
    /// Client pins, by prefix.
    pub pins: Vec<PinStatus>,
    /// The running or last canary.
    pub canary: Option<Canary>,
    /// The running or last rolling replacement.
    pub rollout: Option<Rollout>,
    /// A flip's pending drain timeout.
    pub flip_drain: Option<FlipDrain>,
    /// Backends that left the tables while their flows still reach them.
    #[serde(default)]
    pub retired: Vec<RetiredStatus>,
    /// The digest of the tables written for it (`sha256:` and hex; see [`crate::digest`]):
    /// equal on two hosts exactly when their tables pick the same backends (absent from
    /// older daemons' answers: empty).
    #[serde(default)]
    pub digest: String,
}

/// One retired backend in [`ServiceStatus`]: in no table, its tracked flows still
/// forwarded to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetiredStatus {
    /// Address.
    pub addr: IpAddr,
    /// The group it left.
    pub group: String,
    /// When it retired (Unix milliseconds).
    pub since_ms: u64,
    /// Tracked flows with a packet within the flow idle time.
    pub active_flows: u64,
    /// Up or down, when the service has health checks (down: its flows are re-balanced).
    pub health: Option<Health>,
}

/// A checked backend's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Passes its checks: gets new flows.
    Up,
    /// Fails its checks: gets no new flows.
    Down,
}

impl Health {
    /// Up when `healthy`.
    pub fn of(healthy: bool) -> Self {
        match healthy {
            true => Health::Up,
            false => Health::Down,
        }
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Health::Up => "up",
            Health::Down => "down",
        })
    }
}

/// One client pin in [`ServiceStatus`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PinStatus {
    /// Client prefix.
    pub cidr: String,
    /// Group its clients get.
    pub group: String,
}

/// One group's configured share.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupShare {
    /// Group name.
    pub group: String,
    /// Share of new flows, "12.50".
    pub percent: BasisPoints,
}

/// One backend in [`ServiceStatus`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    /// Address.
    pub addr: IpAddr,
    /// Group name.
    pub group: String,
    /// Weight.
    pub weight: u16,
    /// Percentage of the service's new flows this backend receives now.
    pub effective_share: f64,
    /// Flows assigned since the backend was added.
    pub new_flows: u64,
    /// Packets forwarded.
    pub packets: u64,
    /// Bytes forwarded.
    pub bytes: u64,
    /// Tracked flows with a packet within the flow idle time.
    pub active_flows: u64,
    /// Flows whose client closed them with a FIN (its first close).
    #[serde(default)]
    pub fin_closes: u64,
    /// Flows the client reset (a RST as its first close).
    #[serde(default)]
    pub resets: u64,
    /// SYNs the client repeated before sending anything else (no SYN-ACK in time).
    #[serde(default)]
    pub syn_retransmits: u64,
    /// Flows that sent only their first packet and nothing within the handshake window
    /// after it, counted since the daemon started: TCP handshakes not completed, UDP flows
    /// of one datagram.
    #[serde(default)]
    pub unanswered_flows: u64,
    /// What the backend's replies said: `nat` services only (their replies pass the LB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers: Option<Answers>,
    /// Up or down, when the service has health checks (in a fleet: the fleet's view).
    pub health: Option<Health>,
    /// In a fleet, what this host's own checks say when the fleet's view differs (the
    /// fleet's view decides the tables); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own_health: Option<Health>,
    /// When the health last changed (Unix milliseconds), if since the daemon started.
    pub health_changed_at_ms: Option<u64>,
    /// Why the last check failed, if it did.
    pub health_error: Option<String>,
    /// The drain in progress or ended, if any.
    pub drain: Option<Drain>,
}

/// One service in `service list --json`: a [`ServiceStatus`] without its groups, backends
/// and releases.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceEntry {
    /// Name.
    pub name: String,
    /// VIP.
    pub vip: Vip,
    /// Affinity.
    pub affinity: Affinity,
}

/// One client pin in `pin list --json`: a [`PinStatus`] with its service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PinEntry {
    /// Service name.
    pub service: String,
    /// Client prefix.
    pub cidr: String,
    /// Group its clients get.
    pub group: String,
}

impl Status {
    /// The services, as `service list` shows them.
    pub fn service_entries(&self) -> Vec<ServiceEntry> {
        self.services
            .iter()
            .map(|s| ServiceEntry {
                name: s.name.clone(),
                vip: s.vip,
                affinity: s.affinity,
            })
            .collect()
    }

    /// The client pins of every service, as `pin list` shows them.
    pub fn pin_entries(&self) -> Vec<PinEntry> {
        self.services
            .iter()
            .flat_map(|s| {
                s.pins.iter().map(|p| PinEntry {
                    service: s.name.clone(),
                    cidr: p.cidr.clone(),
                    group: p.group.clone(),
                })
            })
            .collect()
    }
}

/// What a `nat` backend's replies said, counted by the data plane as they passed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Answers {
    /// Reply packets.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Replies with RST: connections the backend reset or refused.
    pub resets: u64,
    /// Handshakes timed: SYN-ACKs of flows whose SYN the LB forwarded.
    pub handshakes: u64,
    /// Their times summed, seconds.
    pub handshake_seconds: f64,
    /// Handshakes by time: (upper bound in seconds, count in that bucket, not cumulative);
    /// the last bucket's bound is none: it takes the rest.
    pub handshake_buckets: Vec<(Option<f64>, u64)>,
}

impl Answers {
    /// The counters of the data plane, in seconds.
    pub fn from_stats(stats: &balancer_common::ReplyStats) -> Self {
        let bounds = balancer_common::HANDSHAKE_BOUNDS_NS
            .iter()
            .map(|ns| Some(*ns as f64 / 1e9))
            .chain(std::iter::once(None));
        Self {
            packets: stats.packets,
            bytes: stats.bytes,
            resets: stats.resets,
            handshakes: stats.handshakes,
            handshake_seconds: stats.handshake_ns as f64 / 1e9,
            handshake_buckets: bounds.zip(stats.buckets).collect(),
        }
    }

    /// The mean handshake time, seconds (none without handshakes).
    pub fn handshake_mean(&self) -> Option<f64> {
        (self.handshakes > 0).then(|| self.handshake_seconds / self.handshakes as f64)
    }
}

/// `balancer fleet status` (`GET /fleet`): the hosts of the answering daemon's fleet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetStatus {
    /// The store (`--store`).
    pub store: String,
    /// The stored revision the answering daemon's state is.
    pub revision: i64,
    /// The host that leads the fleet (holds `PREFIX/leader`: drives the timed work and
    /// decides health); none while no host holds it (a takeover in progress).
    pub leader: Option<String>,
    /// The answering daemon's time (Unix milliseconds), for the hosts' ages.
    pub now_ms: u64,
    /// Every live host (its record not expired), by name.
    pub hosts: Vec<FleetHost>,
}

/// One host in [`FleetStatus`], as it last registered itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetHost {
    /// Its name (`--host-name`).
    pub host: String,
    /// The stored revision its state is.
    pub revision: i64,
    /// The digest of each service's tables (see [`ServiceStatus::digest`]).
    pub digests: BTreeMap<String, String>,
    /// When it last registered (its time, Unix milliseconds).
    pub seen_ms: u64,
    /// Whether it left the fleet (`fleet leave`): it announces no VIP (absent from older
    /// daemons' records: false).
    #[serde(default)]
    pub left: bool,
    /// Where it takes its peers' flow records (`daemon --sync-listen`); none: it syncs no
    /// flows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<std::net::SocketAddr>,
}
