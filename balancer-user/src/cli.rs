//! Command-line syntax of `balancer`.

use std::{net::IpAddr, path::PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

use crate::{
    api::{AddBackend, AddService},
    basis_points::BasisPoints,
    error::Refused,
    operation::{Change, Operation},
    release::{
        analysis::{self, AnalysisPlan},
        canary::{CanaryAction, CanaryPlan, Preset},
        rollout::RolloutPlan,
    },
    state::{Affinity, CheckKind, Forward, HealthCheck, Mode, PoolPorts, StateError},
    vip::Vip,
    wait::{track::Kind, Waiting},
};

/// Default control socket.
pub const DEFAULT_SOCKET: &str = "/run/balancer.sock";

/// balancer: XDP layer-4 load balancer for zero-downtime releases.
#[derive(Debug, Parser)]
#[command(name = "balancer", version)]
pub struct Cli {
    /// Control socket of the daemon.
    #[arg(long, global = true, env = "BALANCER_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// How long to wait for the daemon's answer (exit code 3 after it; a change the daemon
    /// was still carrying out may yet land: `status` tells).
    #[arg(long, global = true, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: attach the data plane to IFACE and serve the control API.
    Daemon(DaemonArgs),
    /// Manage services.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Manage backends.
    #[command(subcommand)]
    Backend(BackendCommand),
    /// Set the share of new flows of each group: GROUP=PERCENT ..., summing to 100.
    Split {
        /// Service name.
        name: String,
        /// GROUP=PERCENT pairs (up to two decimals); groups not named get 0.
        #[arg(required = true, value_parser = parse_share)]
        shares: Vec<(String, BasisPoints)>,
    },
    /// Blue-green flip: every new flow goes to GROUP from the next packet on; established
    /// flows stay on their backends. Flip back to the old group to roll back.
    Flip {
        /// Service name.
        name: String,
        /// The group that takes every new flow.
        #[arg(long = "to")]
        to: String,
        /// Watch the old groups' flows this long (`status` shows the flip drain); they are
        /// kept unless `--cut`. Default: no flip drain.
        #[arg(long, value_parser = humantime::parse_duration)]
        drain_timeout: Option<std::time::Duration>,
        /// Re-balance the old groups' flows at the drain timeout (or at once without one):
        /// their next packets go to GROUP, whose backends answer TCP with a reset.
        #[arg(long)]
        cut: bool,
        /// Waiting for the flip drain's end.
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Gradual canary: move new flows from one group to another in timed steps.
    #[command(subcommand)]
    Canary(CanaryCommand),
    /// Rolling replacement: per OLD=NEW pair add NEW, wait until healthy, ramp it up,
    /// drain and remove OLD. `rollout status NAME`, `rollout abort NAME`.
    Rollout(RolloutArgs),
    /// Client pinning: clients of a prefix always get one group for new flows.
    #[command(subcommand)]
    Pin(PinCommand),
    /// Show services, split, backends and counters.
    Status {
        /// Only this service.
        name: Option<String>,
        /// Print JSON: the API's `GET /status` answer (`api::Status`); with --watch, one
        /// line of JSON per refresh, with the rates.
        #[arg(long)]
        json: bool,
        /// Refresh every second with the rates since the previous refresh: a live screen on
        /// a terminal (q quits), one block of text per refresh otherwise (as `top`).
        #[arg(long)]
        watch: bool,
        /// With --watch: stop after this many refreshes.
        #[arg(long, requires = "watch", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
    },
    /// Live view: `status --watch`.
    Top {
        /// Only this service.
        name: Option<String>,
        /// One line of JSON per refresh (NDJSON), with the rates.
        #[arg(long)]
        json: bool,
        /// Stop after this many refreshes.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
    },
    /// Wait for the release that runs on a service (canary, rollout, flip drain) to end;
    /// exit 0 when it completed, 5 aborted, 6 rolled back, 7 at --wait-timeout. With none
    /// running: the exit code of the last one that ended (0 if none ever ran).
    Wait {
        /// Service name.
        name: String,
        /// Give up after this long (exit 7; the release goes on). Default: no limit.
        #[arg(long, value_parser = humantime::parse_duration)]
        wait_timeout: Option<std::time::Duration>,
    },
    /// Show the event history: every change (with the uid that made it) and every decision
    /// of the daemon, oldest first, as `TIME WHO SERVICE WHAT (BEFORE -> AFTER)` lines.
    Events(EventsArgs),
    /// Make the desired state exactly what a TOML file says.
    Apply {
        /// The file ("-" for standard input).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Print the desired state as TOML that `apply` accepts.
    Export,
    /// The fleet of LB hosts sharing the daemon's store (`daemon --store`).
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Detach the data plane, remove its pins and stop the daemon (the state file stays).
    /// With no daemon answering on --socket, `--iface` removes the pins directly.
    Teardown(TeardownArgs),
    /// Backends of `ipip`/`gue` services: attach the decapsulator (an XDP program) to
    /// --iface, where it stays after the command exits (a link pinned under --pin-dir),
    /// replacing an earlier one atomically; `--remove` detaches it, `--status` shows its
    /// counters. Needs no daemon.
    Decap(DecapArgs),
    /// Print a shell completion script (e.g. `balancer completions bash >
    /// /etc/bash_completion.d/balancer`); needs no daemon.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff; e.g. `balancer man > balancer.1`), or with --dir write
    /// one page per command there (balancer.1, balancer-backend-drain.1, ...); needs no
    /// daemon.
    Man {
        /// Directory to write every command's page into.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// `balancer events` options.
#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Only the events of this service.
    pub name: Option<String>,
    /// Print each event as a JSON object on its own line.
    #[arg(long)]
    pub json: bool,
    /// Keep printing new events as they happen, until interrupted or the output is closed.
    #[arg(long, short = 'f')]
    pub follow: bool,
}

/// `balancer decap` options.
#[derive(Debug, clap::Args)]
pub struct DecapArgs {
    /// Interface whose tunnel packets to decapsulate.
    #[arg(long)]
    pub iface: String,
    /// UDP destination port of GUE (the IP packet directly in UDP).
    #[arg(long, default_value_t = balancer_common::GUE_PORT,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub gue_port: u16,
    /// XDP attach mode when attached anew (a replacement keeps the mode of the link it
    /// replaces in).
    #[arg(long, value_enum, default_value_t = XdpModeArg::Native)]
    pub xdp_mode: XdpModeArg,
    /// Take tunnel packets only from outer sources in this prefix (repeatable; up to 256
    /// per family); tunnel packets from elsewhere are dropped. Default: from any source.
    #[arg(long = "allow", value_name = "CIDR")]
    pub allow: Vec<ipnet::IpNet>,
    /// Detach the decapsulator from --iface and remove its pins.
    #[arg(long, conflicts_with_all = ["status", "gue_port", "xdp_mode", "allow"])]
    pub remove: bool,
    /// Show the decapsulator's counters on --iface (since it was last attached).
    #[arg(long, conflicts_with_all = ["gue_port", "xdp_mode", "allow"])]
    pub status: bool,
    /// Print the counters of --status as JSON.
    #[arg(long, requires = "status")]
    pub json: bool,
    /// bpffs directory of the decapsulator's pins (`<DIR>/<IFACE>/{link,stats}`).
    #[arg(long, default_value = crate::decap::DEFAULT_ROOT)]
    pub pin_dir: PathBuf,
}

/// `balancer teardown` options.
#[derive(Debug, clap::Args)]
pub struct TeardownArgs {
    /// Interface whose data plane to remove when no daemon answers on --socket (the
    /// interface itself may be gone).
    #[arg(long)]
    pub iface: Option<String>,
    /// bpffs directory of the pins, as given to the daemon.
    #[arg(long, default_value = crate::dataplane::bpffs::DEFAULT_ROOT)]
    pub pin_dir: PathBuf,
    /// With --iface and no daemon answering: also withdraw the VIPs the daemon announced
    /// in this routing table (its --announce-table), once the pins are removed. (A daemon
    /// that answers withdraws its own.)
    #[arg(long, value_name = "TABLE", requires = "iface",
          value_parser = crate::announce::parse_table)]
    pub announce_table: Option<u32>,
}

/// `balancer daemon` options.
#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// Interface to attach to (required, here or in the --config file).
    #[arg(long, required_unless_present = "config")]
    pub iface: Option<String>,
    /// TOML file of daemon settings: a key per flag, named as the flag with `_` for `-`
    /// (`state_dir = "/var/lib/balancer"`, `socket = "/run/balancer.sock"`, ...). Flags given
    /// on the command line (or in the environment) win over the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// XDP attach mode [default: native]. A pinned data plane keeps the mode it runs in
    /// (a different one is ignored, with a warning).
    #[arg(long, value_enum)]
    pub xdp_mode: Option<XdpModeArg>,
    /// Directory of the state file.
    #[arg(long, default_value = "/var/lib/balancer")]
    pub state_dir: PathBuf,
    /// bpffs directory for pins (mounted at /sys/fs/bpf if needed).
    #[arg(long, default_value = crate::dataplane::bpffs::DEFAULT_ROOT)]
    pub pin_dir: PathBuf,
    /// Connection-tracking entries [default: 262144]. Used when the maps are created; pinned
    /// maps keep their size (a different one is ignored, with a warning).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    pub conntrack_size: Option<u32>,
    /// With no state file in --state-dir, take over a pinned data plane that serves VIPs
    /// with no services, removing them (without it, the daemon refuses to start).
    #[arg(long)]
    pub empty_state: bool,
    /// Seed of the flow hash; keep it equal on every LB host of a fleet.
    #[arg(long, default_value_t = 0)]
    pub hash_seed: u64,
    /// Seconds without packets after which a tracked flow no longer counts as active.
    #[arg(long, default_value_t = 120)]
    pub flow_idle: u64,
    /// How long a retired backend (removed, or replaced by a rollout) keeps its flows at
    /// most; then they are re-balanced.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub retire_timeout: std::time::Duration,
    /// Serve Prometheus metrics on http://ADDR:PORT/metrics (e.g. 127.0.0.1:9651); off
    /// without it.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Keep the desired state in a fleet's etcd, shared by every LB host of the fleet:
    /// etcd://HOST:PORT[,HOST:PORT...]/PREFIX. The state file in --state-dir stays this
    /// host's last copy. Without it the state file is the state (one host).
    #[arg(long, value_name = "URL")]
    pub store: Option<crate::fleet::url::StoreUrl>,
    /// This host's name in the fleet (`fleet status`) [default: the system's host name].
    #[arg(long, value_parser = parse_host_name)]
    pub host_name: Option<String>,
    /// Announce the VIPs over BGP: keep one route per VIP address (a /32 or /128
    /// blackhole route, protocol 251) in this kernel routing table, for the host's BGP
    /// daemon to export (bird2: `protocol kernel { kernel table N; learn; ... }`). Announced
    /// once the data plane is attached and the state reconciled; kept when the daemon stops
    /// (the pinned data plane goes on forwarding); withdrawn by `teardown` and `fleet leave`.
    #[arg(long, value_name = "TABLE", value_parser = crate::announce::parse_table)]
    pub announce_table: Option<u32>,
    /// Sync flow state with the fleet's other hosts: take their new flows' records on this
    /// UDP address (this host's, as its peers reach it; published in its host record) and
    /// send them this host's. Needs --store. Off without it.
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_sync_listen)]
    pub sync_listen: Option<std::net::SocketAddr>,
    /// In a fleet: the time to live of the leader's lease in etcd, whole seconds from 1s to
    /// 300s (etcd raises a shorter one to its minimum, 2s by default) [default: 3s]. The
    /// leader renews it every third of it; when the leader dies, another host takes over
    /// within it and about a second.
    #[arg(long, value_name = "DURATION", value_parser = parse_leader_ttl)]
    pub leader_ttl: Option<std::time::Duration>,
    /// How the log on standard error is written: text lines, or one JSON object a line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The daemon's log format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Text lines.
    Text,
    /// JSON lines: timestamp, level, fields (the message among them), target.
    Json,
}

/// XDP attach mode.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum XdpModeArg {
    /// Native (driver) mode.
    Native,
    /// Generic (skb) mode, for drivers without XDP support.
    Skb,
}

impl From<XdpModeArg> for aya::programs::XdpMode {
    fn from(mode: XdpModeArg) -> Self {
        match mode {
            XdpModeArg::Native => Self::Driver,
            XdpModeArg::Skb => Self::Skb,
        }
    }
}

/// `balancer fleet ...`.
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// The hosts of the fleet: each one's store revision, tables' digest, services and
    /// when it was last seen, and the leader (none yet: each daemon drives its own timed
    /// steps).
    Status {
        /// Print JSON: the API's `GET /fleet` answer (`api::FleetStatus`).
        #[arg(long)]
        json: bool,
    },
    /// Take this host out of the fleet for maintenance: withdraw its VIPs' announcements
    /// (the router stops sending it new flows and moves its flows to the other hosts),
    /// then wait until its flows are served elsewhere: until this host's data plane has
    /// forwarded no packet to a VIP for --quiet (exit 0), or --wait-timeout passed (exit
    /// 7; the host stays out). The host stays out, across daemon restarts, until `fleet
    /// join`. Needs `daemon --store` and `--announce-table`; leaving twice is no error.
    Leave {
        /// How long the data plane must forward no packet to a VIP for the host's flows to
        /// count as served elsewhere.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        quiet: std::time::Duration,
        /// Give up waiting after this long (exit 7; the host stays out of the fleet).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        wait_timeout: std::time::Duration,
        /// Withdraw and return at once, without waiting.
        #[arg(long, conflicts_with_all = ["quiet", "wait_timeout"])]
        no_wait: bool,
    },
    /// Bring this host back into the fleet: announce its VIPs again, so that the router
    /// spreads new flows over it too. Joining a host that is in is no error.
    Join,
}

/// `balancer service ...`.
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Add a service.
    Add {
        /// Service name.
        name: String,
        /// ADDR:PORT/tcp|udp ([ADDR]:PORT/tcp for IPv6).
        #[arg(long)]
        vip: Vip,
        /// connection: hash the 5-tuple; client: hash the client address only.
        #[arg(long, value_enum, default_value_t = AffinityArg::Connection)]
        affinity: AffinityArg,
        /// Maglev table size (a prime up to 65537).
        #[arg(long)]
        table_size: Option<u32>,
        /// Health checks.
        #[command(flatten)]
        health: HealthArgs,
        /// How packets reach the backends.
        #[command(flatten)]
        forward: ForwardArgs,
    },
    /// Change a service's health checks, or its forwarding (only while it has no backends).
    Set {
        /// Service name.
        name: String,
        /// Health checks.
        #[command(flatten)]
        health: HealthArgs,
        /// Stop checking: every backend counts as healthy.
        #[arg(long, conflicts_with = "health")]
        no_health: bool,
        /// How packets reach the backends.
        #[command(flatten)]
        forward: ForwardArgs,
    },
    /// Remove a service (its VIP's packets are passed to the kernel from then on).
    Remove {
        /// Service name.
        name: String,
    },
    /// List services.
    List {
        /// Print JSON: an array of `{name, vip, affinity}` (`api::ServiceEntry`).
        #[arg(long)]
        json: bool,
    },
}

/// Health-check options of `service add` and `service set`.
#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// tcp (a connection is accepted) or http:/PATH (GET answers 2xx/3xx), sent from the LB
    /// host to each backend's own address on the service port.
    #[arg(long)]
    pub health: Option<String>,
    /// Time between checks of a backend.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub health_interval: std::time::Duration,
    /// Time a check may take.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub health_timeout: std::time::Duration,
    /// Consecutive passes that bring a backend up.
    #[arg(long, default_value_t = 2)]
    pub rise: u32,
    /// Consecutive failures that take a backend down.
    #[arg(long, default_value_t = 3)]
    pub fall: u32,
}

impl HealthArgs {
    /// The checks these options describe, if `--health` was given.
    pub fn check(&self) -> Result<Option<HealthCheck>, StateError> {
        let Some(kind) = &self.health else {
            return Ok(None);
        };
        Ok(Some(HealthCheck {
            kind: kind.parse::<CheckKind>()?,
            interval_ms: millis(self.health_interval),
            timeout_ms: millis(self.health_timeout),
            rise: self.rise,
            fall: self.fall,
        }))
    }
}

/// Forwarding options of `service add` and `service set`.
#[derive(Debug, clap::Args)]
pub struct ForwardArgs {
    /// dsr: re-address frames to backends on a directly connected network (default); ipip
    /// or gue: tunnel packets to each backend's address, routed; nat: rewrite them to each
    /// backend's address and port, routed (the backends' replies must pass this host);
    /// fullnat: nat, and the source rewritten to a pool address and port, so replies come
    /// back by ordinary routing (the backends see the pool address, not the client's).
    #[arg(long, value_enum)]
    pub forward: Option<ModeArg>,
    /// ipip, gue: the outer source address, an address of this host (default: the source
    /// the kernel prefers for the route to each backend).
    #[arg(long, requires = "forward")]
    pub tunnel_source: Option<IpAddr>,
    /// fullnat: the pool address, an address of this host or routed to it (default: the
    /// source the kernel prefers for the route to each backend). The same setting as
    /// --tunnel-source, named for full NAT.
    #[arg(long, requires = "forward", conflicts_with = "tunnel_source")]
    pub pool: Option<IpAddr>,
    /// fullnat: the pool's ports, FIRST-LAST (default 1024-32767, below the kernel's
    /// ephemeral ports).
    #[arg(long, requires = "forward")]
    pub pool_ports: Option<PoolPorts>,
    /// gue: the UDP destination port of the tunnel (default 6080).
    #[arg(long, requires = "forward")]
    pub gue_port: Option<u16>,
    /// nat, fullnat: the backends' port, where the VIP's port is rewritten to (default: the
    /// VIP's).
    #[arg(long, requires = "forward")]
    pub backend_port: Option<u16>,
}

impl ForwardArgs {
    /// The forwarding these options describe, if `--forward` was given.
    pub fn forward(&self) -> Option<Forward> {
        self.forward.map(|mode| Forward {
            mode: mode.into(),
            source: self.tunnel_source.or(self.pool),
            port: self.gue_port,
            backend_port: self.backend_port,
            source_ports: self.pool_ports,
        })
    }
}

/// A forwarding mode on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModeArg {
    /// Direct server return on L2.
    Dsr,
    /// IP in IP to the backend's address.
    Ipip,
    /// GUE (IP in UDP) to the backend's address.
    Gue,
    /// Address translation to the backend's address and port.
    Nat,
    /// Address translation of both ends: to the backend, from a pool address and port.
    Fullnat,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Dsr => Mode::Dsr,
            ModeArg::Ipip => Mode::Ipip,
            ModeArg::Gue => Mode::Gue,
            ModeArg::Nat => Mode::Nat,
            ModeArg::Fullnat => Mode::Fullnat,
        }
    }
}

/// Affinity on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AffinityArg {
    /// Hash the 5-tuple.
    Connection,
    /// Hash the client address.
    Client,
}

impl From<AffinityArg> for Affinity {
    fn from(a: AffinityArg) -> Self {
        match a {
            AffinityArg::Connection => Affinity::Connection,
            AffinityArg::Client => Affinity::Client,
        }
    }
}

/// `balancer canary ...`.
#[derive(Debug, Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once per run from the command line: its size costs nothing"
)]
pub enum CanaryCommand {
    /// Start a canary: the first step applies at once, each later one an interval after.
    Start {
        /// Service name.
        name: String,
        /// Group new flows move away from.
        #[arg(long)]
        from: String,
        /// Group new flows move to.
        #[arg(long)]
        to: String,
        /// The new group's percentages of what the two groups hold together, ascending,
        /// e.g. 1,5,25,50,100; other groups keep their shares.
        #[arg(
            long,
            value_delimiter = ',',
            required_unless_present = "preset",
            conflicts_with = "preset"
        )]
        steps: Vec<BasisPoints>,
        /// Time between steps, e.g. 30s, 5m.
        #[arg(long, conflicts_with = "preset", value_parser = humantime::parse_duration)]
        interval: Option<std::time::Duration>,
        /// A named plan instead of --steps/--interval.
        #[arg(long, value_enum)]
        preset: Option<PresetArg>,
        /// Roll back by itself when the new group's backends fail their health checks.
        #[arg(long)]
        auto_rollback: bool,
        /// With --auto-rollback: the share of the new group's backends that must fail.
        #[arg(long, default_value = "50", requires = "auto_rollback")]
        rollback_threshold: BasisPoints,
        /// Compare the new group with the old one between steps.
        #[command(flatten)]
        analysis: AnalysisArgs,
        /// Waiting for the canary's end.
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Stop the step timer.
    Pause {
        /// Service name.
        name: String,
    },
    /// Restart the step timer with the time that was left.
    Resume {
        /// Service name.
        name: String,
    },
    /// Jump to 100% on the new group.
    Promote {
        /// Service name.
        name: String,
    },
    /// Return 100% of new flows to the old group in one atomic write.
    Abort {
        /// Service name.
        name: String,
    },
}

/// How a canary is analysed: a file, or the defaults with some values changed inline.
#[derive(Debug, clap::Args)]
pub struct AnalysisArgs {
    /// Gate every step on an analysis described by this TOML file (see the README).
    #[arg(long, value_name = "FILE")]
    pub analysis: Option<PathBuf>,
    /// Gate every step on the default analysis: handshake failures and resets of the new
    /// group at most max(0.5%, 2 x the old group's), windows of 30 s after 10 s.
    #[arg(long, conflicts_with = "analysis")]
    pub analyze: bool,
    /// Length of an analysis window (at least 5s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub window: Option<std::time::Duration>,
    /// Time after each step before the first analysis window (at least 6s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub warmup: Option<std::time::Duration>,
    /// New flows the new group must get in a window for a verdict.
    #[arg(long)]
    pub min_flows: Option<u64>,
    /// Windows in a row without a verdict before the canary rolls back.
    #[arg(long)]
    pub max_inconclusive: Option<u32>,
}

impl AnalysisArgs {
    /// The analysis asked for, if any: the file's (or the defaults), with the inline
    /// values given.
    pub fn plan(self) -> Result<Option<AnalysisPlan>, Refused> {
        let inline = self.window.is_some()
            || self.warmup.is_some()
            || self.min_flows.is_some()
            || self.max_inconclusive.is_some();
        let mut plan = match (&self.analysis, self.analyze || inline) {
            (Some(file), _) => analysis::file::parse(&read_config(file)?)
                .map_err(|e| Refused::Request(format!("{}: {e}", file.display())))?,
            (None, true) => AnalysisPlan::default(),
            (None, false) => return Ok(None),
        };
        if let Some(window) = self.window {
            plan.window_ms = millis(window);
        }
        if let Some(warmup) = self.warmup {
            plan.warmup_ms = millis(warmup);
        }
        if let Some(min_flows) = self.min_flows {
            plan.min_flows = min_flows;
        }
        if let Some(max) = self.max_inconclusive {
            plan.max_inconclusive = max;
        }
        Ok(Some(plan))
    }
}

/// Canary presets.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PresetArg {
    /// 10% for 5 minutes, then 100%.
    #[value(name = "canary10-5m")]
    Canary10Over5m,
    /// +10% every minute.
    #[value(name = "linear10-1m")]
    Linear10Every1m,
    /// 100% at once.
    #[value(name = "all-at-once")]
    AllAtOnce,
}

impl From<PresetArg> for Preset {
    fn from(p: PresetArg) -> Self {
        match p {
            PresetArg::Canary10Over5m => Preset::Canary10Over5m,
            PresetArg::Linear10Every1m => Preset::Linear10Every1m,
            PresetArg::AllAtOnce => Preset::AllAtOnce,
        }
    }
}

/// `balancer rollout ...`: start one, or `status`/`abort`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct RolloutArgs {
    /// `status` or `abort` of a running rollout.
    #[command(subcommand)]
    pub action: Option<RolloutAction>,
    /// Service name.
    #[arg(required = true)]
    pub name: Option<String>,
    /// Group whose backends are replaced.
    #[arg(long, required = true)]
    pub group: Option<String>,
    /// OLD=NEW address pairs, replaced one after another.
    #[arg(long, required = true, num_args = 1.., value_parser = parse_pair)]
    pub replace: Vec<(IpAddr, IpAddr)>,
    /// Stop waiting for OLD's established flows after this long; default: until they end.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub drain_timeout: Option<std::time::Duration>,
    /// Fail (and keep OLD) when NEW is not healthy within this time.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub ready_timeout: std::time::Duration,
    /// Ramp NEW's weight up over this time.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub slow_start: std::time::Duration,
    /// Re-balance each OLD's remaining flows when its drain ends (their clients get a
    /// reset) instead of retiring it with them.
    #[arg(long)]
    pub cut: bool,
    /// Before each OLD drains, compare its NEW with the rest of the group (checks only).
    #[command(flatten)]
    pub analysis: AnalysisArgs,
    /// Waiting for the rollout's end.
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// `--wait [--wait-timeout D]` of `canary start`, `rollout` and `flip`.
#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    /// Block until the release ends, printing a line per step; exit 0 when it completed,
    /// 5 aborted, 6 rolled back, 7 at --wait-timeout.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this long (exit 7; the release goes on). Default: no
    /// limit. (--timeout bounds each answer of the daemon.)
    #[arg(long, requires = "wait", value_parser = humantime::parse_duration)]
    pub wait_timeout: Option<std::time::Duration>,
}

impl Command {
    /// The wait of `fleet leave` (quiet time, timeout), unless `--no-wait`.
    pub fn leaving(&self) -> Option<(std::time::Duration, std::time::Duration)> {
        match self {
            Command::Fleet(FleetCommand::Leave {
                quiet,
                wait_timeout,
                no_wait: false,
            }) => Some((*quiet, *wait_timeout)),
            _ => None,
        }
    }

    /// What the command's `--wait` asks to wait for once it is done; none without it.
    pub fn waiting(&self) -> Option<Waiting> {
        let (service, kind, args) = match self {
            Command::Flip { name, wait, .. } => (name, Kind::Flip, wait),
            Command::Canary(CanaryCommand::Start { name, wait, .. }) => (name, Kind::Canary, wait),
            Command::Rollout(RolloutArgs {
                action: None,
                name: Some(name),
                wait,
                ..
            }) => (name, Kind::Rollout, wait),
            _ => return None,
        };
        args.wait.then(|| Waiting {
            service: service.clone(),
            kind,
            timeout: args.wait_timeout,
        })
    }
}

/// `balancer rollout status|abort NAME`.
#[derive(Debug, Subcommand)]
pub enum RolloutAction {
    /// Show the rollout of a service.
    Status {
        /// Service name.
        name: String,
        /// Print JSON: the service's `rollout` object of `status --json` (null when it has
        /// had none).
        #[arg(long)]
        json: bool,
    },
    /// Stop it: the pair in progress is undone, replaced pairs stay.
    Abort {
        /// Service name.
        name: String,
    },
}

fn parse_pair(text: &str) -> Result<(IpAddr, IpAddr), String> {
    let (old, new) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not OLD=NEW"))?;
    let parse = |a: &str| {
        a.parse::<IpAddr>()
            .map_err(|_| format!("{a:?} is not an IP address"))
    };
    Ok((parse(old)?, parse(new)?))
}

/// `balancer pin ...`.
#[derive(Debug, Subcommand)]
pub enum PinCommand {
    /// Pin clients in CIDR to GROUP, whatever the split (also a group at 0%: a preview).
    /// The longest matching prefix wins.
    Add {
        /// Service name.
        name: String,
        /// Client prefix, e.g. 198.18.2.0/24.
        #[arg(value_parser = parse_cidr)]
        cidr: ipnet::IpNet,
        /// Group the clients get.
        #[arg(long)]
        group: String,
    },
    /// Remove the pin of exactly CIDR.
    Remove {
        /// Service name.
        name: String,
        /// Client prefix.
        #[arg(value_parser = parse_cidr)]
        cidr: ipnet::IpNet,
    },
    /// List pins.
    List {
        /// Only this service.
        name: Option<String>,
        /// Print JSON: an array of `{service, cidr, group}` (`api::PinEntry`).
        #[arg(long)]
        json: bool,
    },
}

/// `balancer backend ...`.
#[derive(Debug, Subcommand)]
pub enum BackendCommand {
    /// Add a backend to a group (the group is created if new).
    Add {
        /// Service name.
        name: String,
        /// Backend address.
        addr: IpAddr,
        /// Group name.
        #[arg(long)]
        group: String,
        /// Weight 0..=65535 (0: no new flows).
        #[arg(long, default_value_t = crate::state::DEFAULT_WEIGHT)]
        weight: u16,
    },
    /// Change a backend's weight; established flows stay where they are.
    SetWeight {
        /// Service name.
        name: String,
        /// Backend address.
        addr: IpAddr,
        /// Weight 0..=65535.
        weight: u16,
    },
    /// Drain a backend: no new flows, established ones kept; complete when none was seen
    /// for the flow idle time, or at the timeout.
    Drain {
        /// Service name.
        name: String,
        /// Backend address.
        addr: IpAddr,
        /// Stop waiting for established flows after this long (e.g. 5m).
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<std::time::Duration>,
        /// Re-balance the flows left when the drain ends (their clients get a reset)
        /// instead of keeping them on the backend.
        #[arg(long)]
        cut: bool,
    },
    /// End a backend's drain (running or ended): it gets back the weight the drain
    /// replaced, and new flows again.
    Undrain {
        /// Service name.
        name: String,
        /// Backend address.
        addr: IpAddr,
    },
    /// Remove a backend: it gets no new flow and retires, its established flows still
    /// reaching it until they end, it fails its checks, or the retire timeout.
    Remove {
        /// Service name.
        name: String,
        /// Backend address.
        addr: IpAddr,
        /// Re-balance its flows now instead (also a retired backend's): their clients get a
        /// reset.
        #[arg(long)]
        cut: bool,
    },
}

fn parse_share(text: &str) -> Result<(String, BasisPoints), String> {
    let (group, percent) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not GROUP=PERCENT"))?;
    let share = percent
        .parse()
        .map_err(|e: crate::basis_points::BadPercent| e.to_string())?;
    Ok((group.to_string(), share))
}

/// `--sync-listen`: an address and port peers can send to (not 0.0.0.0, [::] or port 0:
/// the address is published as it is given).
fn parse_sync_listen(text: &str) -> Result<std::net::SocketAddr, String> {
    let addr: std::net::SocketAddr = text
        .parse()
        .map_err(|_| format!("{text:?} is not ADDR:PORT"))?;
    if addr.ip().is_unspecified() || addr.port() == 0 {
        return Err(format!(
            "{addr} is not an address peers can send to: give this host's address and a port"
        ));
    }
    Ok(addr)
}

fn parse_host_name(text: &str) -> Result<String, String> {
    match crate::fleet::keys::valid_host(text) {
        true => Ok(text.to_string()),
        false => Err(format!(
            "{text:?} is not a host name: use letters, digits, '.', '-' and '_' (at most 64)"
        )),
    }
}

fn parse_leader_ttl(text: &str) -> Result<std::time::Duration, String> {
    let ttl = humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))?;
    match ttl.subsec_nanos() == 0 && (1..=300).contains(&ttl.as_secs()) {
        true => Ok(ttl),
        false => Err(format!(
            "{text:?} is not a leader lease: whole seconds from 1s to 300s"
        )),
    }
}

fn parse_cidr(text: &str) -> Result<ipnet::IpNet, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a CIDR prefix (ADDR/LEN)"))
}

/// How the answer to a command is shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Nothing: success is the exit code.
    Quiet,
    /// `status`: text or JSON.
    Status {
        /// JSON.
        json: bool,
    },
    /// `service list`.
    Services {
        /// JSON.
        json: bool,
    },
    /// `pin list`.
    Pins {
        /// JSON.
        json: bool,
    },
    /// `rollout status NAME`.
    Rollout {
        /// Service.
        name: String,
        /// JSON.
        json: bool,
    },
    /// `export`: the TOML as it comes.
    Toml,
    /// `fleet status`: text or JSON.
    Fleet {
        /// JSON.
        json: bool,
    },
    /// `teardown`: a sentence.
    TornDown,
    /// `fleet leave`: a sentence (then the wait, if asked).
    Left,
    /// `fleet join`: a sentence.
    Joined,
}

/// A command that is not `daemon`, as the operation it sends and how its answer is shown.
/// `apply` reads its file here.
pub fn request(command: Command) -> Result<(Operation, Output), Refused> {
    let change = |c: Change| (Operation::Change(c), Output::Quiet);
    let status = |service: Option<String>, output: Output| (Operation::Status { service }, output);
    Ok(match command {
        Command::Daemon(_)
        | Command::Decap(_)
        | Command::Events(_)
        | Command::Completions { .. }
        | Command::Man { .. }
        | Command::Top { .. }
        | Command::Wait { .. } => {
            return Err(Refused::Request("not a request to the daemon".into()))
        }
        Command::Service(cmd) => match cmd {
            ServiceCommand::Add {
                name,
                vip,
                affinity,
                table_size,
                health,
                forward,
            } => change(Change::AddService(AddService {
                name,
                vip,
                affinity: affinity.into(),
                table_size,
                health: health.check()?,
                forward: forward.forward().unwrap_or_default(),
            })),
            ServiceCommand::Set {
                name,
                health,
                no_health,
                forward,
            } => {
                let health = health.check()?;
                if let Some(forward) = forward.forward() {
                    if health.is_some() || no_health {
                        return Err(Refused::Request(
                            "set the forwarding and the health checks in two commands".into(),
                        ));
                    }
                    return Ok(change(Change::SetForward {
                        service: name,
                        forward,
                    }));
                }
                if health.is_none() && !no_health {
                    return Err(Refused::Request(
                        "nothing to set: give --health KIND, --no-health or --forward MODE".into(),
                    ));
                }
                change(Change::SetHealth {
                    service: name,
                    health,
                })
            }
            ServiceCommand::Remove { name } => change(Change::RemoveService { service: name }),
            ServiceCommand::List { json } => status(None, Output::Services { json }),
        },
        Command::Backend(cmd) => match cmd {
            BackendCommand::Add {
                name,
                addr,
                group,
                weight,
            } => change(Change::AddBackend {
                service: name,
                backend: AddBackend {
                    addr,
                    group,
                    weight: Some(weight),
                },
            }),
            BackendCommand::SetWeight { name, addr, weight } => change(Change::SetWeight {
                service: name,
                addr,
                weight,
            }),
            BackendCommand::Drain {
                name,
                addr,
                timeout,
                cut,
            } => change(Change::Drain {
                service: name,
                addr,
                timeout_ms: timeout.map(millis),
                cut,
            }),
            BackendCommand::Undrain { name, addr } => change(Change::Undrain {
                service: name,
                addr,
            }),
            BackendCommand::Remove { name, addr, cut } => change(Change::RemoveBackend {
                service: name,
                addr,
                cut,
            }),
        },
        Command::Split { name, shares } => change(Change::Split {
            service: name,
            shares,
        }),
        Command::Flip {
            name,
            to,
            drain_timeout,
            cut,
            wait: _,
        } => change(Change::Flip {
            service: name,
            to,
            drain_timeout_ms: drain_timeout.map(millis),
            cut,
        }),
        Command::Canary(cmd) => canary(cmd)?,
        Command::Rollout(args) => rollout(args)?,
        Command::Pin(cmd) => match cmd {
            PinCommand::Add { name, cidr, group } => change(Change::AddPin {
                service: name,
                cidr,
                group,
            }),
            PinCommand::Remove { name, cidr } => change(Change::RemovePin {
                service: name,
                cidr,
            }),
            PinCommand::List { name, json } => status(name, Output::Pins { json }),
        },
        Command::Status { name, json, .. } => status(name, Output::Status { json }),
        Command::Apply { file } => change(Change::Apply {
            toml: read_config(&file)?,
        }),
        Command::Export => (Operation::Export, Output::Toml),
        Command::Fleet(FleetCommand::Status { json }) => (Operation::Fleet, Output::Fleet { json }),
        Command::Fleet(FleetCommand::Leave { .. }) => (Operation::Leave, Output::Left),
        Command::Fleet(FleetCommand::Join) => (Operation::Join, Output::Joined),
        Command::Teardown(_) => (Operation::Teardown, Output::TornDown),
    })
}

fn canary(cmd: CanaryCommand) -> Result<(Operation, Output), Refused> {
    let (name, action) = match cmd {
        CanaryCommand::Start {
            name,
            from,
            to,
            steps,
            interval,
            preset,
            auto_rollback,
            rollback_threshold,
            analysis,
            wait: _,
        } => {
            let (steps, interval_ms) = match preset {
                Some(preset) => Preset::from(preset).plan(),
                None => {
                    let interval_ms = interval.map_or(0, millis);
                    if steps.len() > 1 && interval_ms == 0 {
                        return Err(Refused::Request(
                            "--interval is needed with several --steps".into(),
                        ));
                    }
                    (steps, interval_ms)
                }
            };
            let plan = CanaryPlan {
                from,
                to,
                steps,
                interval_ms,
                auto_rollback: auto_rollback.then_some(rollback_threshold),
                analysis: analysis.plan()?,
            };
            let start = Change::StartCanary {
                service: name,
                plan,
            };
            return Ok((Operation::Change(start), Output::Quiet));
        }
        CanaryCommand::Pause { name } => (name, CanaryAction::Pause),
        CanaryCommand::Resume { name } => (name, CanaryAction::Resume),
        CanaryCommand::Promote { name } => (name, CanaryAction::Promote),
        CanaryCommand::Abort { name } => (name, CanaryAction::Abort),
    };
    let act = Change::Canary {
        service: name,
        action,
    };
    Ok((Operation::Change(act), Output::Quiet))
}

fn rollout(args: RolloutArgs) -> Result<(Operation, Output), Refused> {
    let operation = match args.action {
        Some(RolloutAction::Status { name, json }) => {
            return Ok((
                Operation::Status {
                    service: Some(name.clone()),
                },
                Output::Rollout { name, json },
            ))
        }
        Some(RolloutAction::Abort { name }) => Change::AbortRollout { service: name },
        None => {
            let (Some(name), Some(group)) = (args.name, args.group) else {
                return Err(Refused::Request("give NAME and --group".into()));
            };
            Change::StartRollout {
                service: name,
                plan: RolloutPlan {
                    group,
                    pairs: args.replace,
                    ready_timeout_ms: millis(args.ready_timeout),
                    slow_start_ms: millis(args.slow_start),
                    drain_timeout_ms: args.drain_timeout.map(millis),
                    cut: args.cut,
                    analysis: args.analysis.plan()?,
                },
            }
        }
    };
    Ok((Operation::Change(operation), Output::Quiet))
}

/// The text of a configuration file ("-": standard input).
/// A file over the daemon's request limit is refused before it is read whole.
fn read_config(file: &std::path::Path) -> Result<String, Refused> {
    use std::io::Read as _;
    let limit = crate::server::routes::MAX_BODY;
    let cannot =
        |e: std::io::Error| Refused::Request(format!("cannot read {}: {e}", file.display()));
    let source: Box<dyn std::io::Read> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(file).map_err(cannot)?)
    };
    let mut text = String::new();
    source
        .take(limit as u64 + 1)
        .read_to_string(&mut text)
        .map_err(cannot)?;
    if text.len() > limit {
        return Err(Refused::Request(format!(
            "{} is over the limit of {limit} bytes",
            file.display()
        )));
    }
    Ok(text)
}

/// A duration in whole milliseconds (saturating).
fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The operation `balancer ARGS...` asks of the daemon, or the one-line refusal.
    fn operation(args: &[&str]) -> Result<Operation, String> {
        let cli = Cli::try_parse_from(std::iter::once("balancer").chain(args.iter().copied()))
            .map_err(|e| e.kind().to_string())?;
        request(cli.command)
            .map(|(operation, _)| operation)
            .map_err(|e| e.to_string())
    }

    fn forward(mode: Mode, source: Option<&str>, port: Option<u16>) -> Forward {
        Forward {
            mode,
            source: source.map(|s| s.parse().unwrap()),
            port,
            backend_port: None,
            source_ports: None,
        }
    }

    #[test]
    fn service_add_takes_a_forwarding_mode_dsr_by_default() {
        let added = |args: &[&str]| match operation(args) {
            Ok(Operation::Change(Change::AddService(s))) => s.forward,
            other => panic!("not an added service: {other:?}"),
        };
        let add = ["service", "add", "web", "--vip", "198.19.0.1:80/tcp"];
        assert_eq!(added(&add), Forward::default());
        let gue = [
            &add[..],
            &["--forward", "gue", "--tunnel-source", "198.18.0.1"],
        ]
        .concat();
        assert_eq!(added(&gue), forward(Mode::Gue, Some("198.18.0.1"), None));
        let port = [&add[..], &["--forward", "gue", "--gue-port", "7000"]].concat();
        assert_eq!(added(&port), forward(Mode::Gue, None, Some(7000)));
        let ipip = [&add[..], &["--forward", "ipip"]].concat();
        assert_eq!(added(&ipip), forward(Mode::Ipip, None, None));
        let nat = [&add[..], &["--forward", "nat", "--backend-port", "8080"]].concat();
        assert_eq!(
            added(&nat),
            Forward {
                backend_port: Some(8080),
                source_ports: None,
                ..forward(Mode::Nat, None, None)
            }
        );
        let fullnat = [
            &add[..],
            &["--forward", "fullnat", "--pool", "198.18.0.2"],
            &["--pool-ports", "2000-2999", "--backend-port", "8080"],
        ]
        .concat();
        assert_eq!(
            added(&fullnat),
            Forward {
                backend_port: Some(8080),
                source_ports: Some("2000-2999".parse().unwrap()),
                ..forward(Mode::Fullnat, Some("198.18.0.2"), None)
            }
        );
        // Pool ports that are no range, and a pool besides a tunnel source: usage errors.
        let bad = [&add[..], &["--forward", "fullnat", "--pool-ports", "9-2"]].concat();
        assert!(operation(&bad).is_err());
        let both = [
            &add[..],
            &["--forward", "fullnat", "--pool", "198.18.0.2"],
            &["--tunnel-source", "198.18.0.3"],
        ]
        .concat();
        assert!(operation(&both).is_err());
        // A tunnel source without a mode is a usage error.
        let orphan = [&add[..], &["--tunnel-source", "198.18.0.1"]].concat();
        assert!(operation(&orphan).is_err());
        let bad = [&add[..], &["--forward", "vxlan"]].concat();
        assert!(operation(&bad).is_err());
    }

    #[test]
    fn service_set_changes_the_forwarding_or_the_health_checks() {
        assert_eq!(
            operation(&["service", "set", "web", "--forward", "ipip"]),
            Ok(Operation::Change(Change::SetForward {
                service: "web".into(),
                forward: forward(Mode::Ipip, None, None),
            }))
        );
        assert_eq!(
            operation(&["service", "set", "web", "--forward", "dsr", "--no-health"]),
            Err("set the forwarding and the health checks in two commands".into())
        );
        assert_eq!(
            operation(&["service", "set", "web"]),
            Err("nothing to set: give --health KIND, --no-health or --forward MODE".into())
        );
    }

    #[test]
    fn the_leader_ttl_is_whole_seconds_from_1s_to_300s() {
        let ttl = |text: &str| -> Result<Option<std::time::Duration>, String> {
            let args = [
                "balancer",
                "daemon",
                "--iface",
                "eth0",
                "--leader-ttl",
                text,
            ];
            match Cli::try_parse_from(args) {
                Ok(Cli {
                    command: Command::Daemon(daemon),
                    ..
                }) => Ok(daemon.leader_ttl),
                Ok(_) => Err("not the daemon".into()),
                Err(e) => Err(e.to_string()),
            }
        };
        assert_eq!(ttl("2s"), Ok(Some(std::time::Duration::from_secs(2))));
        assert_eq!(ttl("5m"), Ok(Some(std::time::Duration::from_secs(300))));
        for bad in ["1500ms", "0s", "301s", "soon"] {
            let err = ttl(bad).unwrap_err();
            assert!(err.contains("--leader-ttl"), "{bad}: {err}");
            assert!(err.contains(bad), "{bad}: {err}");
        }
        assert!(ttl("1500ms")
            .unwrap_err()
            .contains("whole seconds from 1s to 300s"));
    }
}
