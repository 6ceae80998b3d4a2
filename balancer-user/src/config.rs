//! The declarative configuration file (`apply -f`, `export`): services, groups, backends,
//! weights and split, in TOML.
//!
//! ```toml
//! [[service]]
//! name = "web"
//! vip = "198.19.0.1:80/tcp"
//! affinity = "client"        # or "connection" (default)
//! forward = "gue"            # or "dsr" (default), "ipip", "nat", "fullnat"
//! tunnel_source = "198.18.0.1"   # ipip, gue: outer source (default: the route's)
//! gue_port = 6080            # gue: UDP port (default 6080)
//! # backend_port = 8080      # nat, fullnat: the backends' port (default: the VIP's)
//! # pool = "198.18.0.2"      # fullnat: the pool address (default: the route's source)
//! # pool_ports = "1024-32767"  # fullnat: the pool's ports (default 1024-32767)
//!
//! [[service.group]]
//! name = "blue"
//! percent = "90"             # share of new flows; the groups of a service sum to 100
//! backends = [{ addr = "198.18.0.101", weight = 100 }]
//! ```
//!
//! Applying a file makes the desired state exactly what the file says: services and
//! backends absent from it are removed, present ones keep their identity (and so their
//! established flows), and the split moves monotonically from the current one.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{
    basis_points::BasisPoints,
    maglev::DEFAULT_TABLE_SIZE,
    state::{Affinity, Forward, HealthCheck, Mode, PoolPorts, State, StateError, DEFAULT_WEIGHT},
    vip::Vip,
};

/// A whole configuration file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Services.
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceConfig>,
}

/// One service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Name.
    pub name: String,
    /// `ADDR:PORT/tcp|udp`.
    pub vip: Vip,
    /// Hashing affinity.
    #[serde(default)]
    pub affinity: Affinity,
    /// Maglev table size (prime).
    #[serde(default = "default_table_size")]
    pub table_size: u32,
    /// How packets reach the backends (changes only while the service has none).
    #[serde(default, skip_serializing_if = "is_dsr")]
    pub forward: Mode,
    /// ipip, gue: the outer source; none: the route's preferred source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_source: Option<IpAddr>,
    /// gue: the UDP port; none: 6080.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gue_port: Option<u16>,
    /// nat, fullnat: the backends' port; none: the VIP's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_port: Option<u16>,
    /// fullnat: the pool address; none: the route's preferred source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<IpAddr>,
    /// fullnat: the pool's ports; none: 1024-32767.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_ports: Option<PoolPorts>,
    /// Groups in order.
    #[serde(default, rename = "group")]
    pub groups: Vec<GroupConfig>,
    /// Client pins.
    #[serde(default, rename = "pin", skip_serializing_if = "Vec::is_empty")]
    pub pins: Vec<PinConfig>,
    /// Health checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
}

/// A client pin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinConfig {
    /// Client prefix.
    pub cidr: IpNet,
    /// Group its clients get.
    pub group: String,
}

/// One group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Name.
    pub name: String,
    /// Share of new flows in percent (string or number, at most two decimals); may be left
    /// out when the service has a single group.
    #[serde(default)]
    pub percent: Option<Percent>,
    /// Backends.
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
}

/// One backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Address.
    pub addr: IpAddr,
    /// Weight (0..=65535), default 100.
    #[serde(default = "default_weight")]
    pub weight: u16,
}

/// A percentage as written in the file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Percent {
    /// "12.5"
    Text(String),
    /// 12
    Integer(i64),
    /// 12.5
    Float(f64),
}

impl Percent {
    fn basis_points(&self) -> Result<BasisPoints, StateError> {
        let text = match self {
            Percent::Text(t) => t.clone(),
            Percent::Integer(i) => i.to_string(),
            Percent::Float(f) => format!("{f}"),
        };
        Ok(text.parse()?)
    }
}

fn default_table_size() -> u32 {
    DEFAULT_TABLE_SIZE
}

fn is_dsr(mode: &Mode) -> bool {
    *mode == Mode::Dsr
}

fn default_weight() -> u16 {
    DEFAULT_WEIGHT
}

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not valid TOML of this shape.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// Valid TOML, invalid content.
    #[error(transparent)]
    State(#[from] StateError),
    /// Duplicate service name.
    #[error("service {0:?} appears twice")]
    DuplicateService(String),
    /// A group with a share but no backends.
    #[error("group {0:?} of service {1:?} has a share but no backends")]
    EmptyGroup(String, String),
    /// One backend address listed twice in a service (in one group or in two).
    #[error("backend {0} appears twice in service {1:?}")]
    DuplicateBackend(IpAddr, String),
    /// Several groups and no percentages.
    #[error("service {0:?} has several groups: give each a percent")]
    MissingPercent(String),
}

impl Config {
    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(one_line(&e.to_string())))
    }

    /// Renders as TOML that [`Config::parse`] accepts.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("configuration serialises")
    }

    /// The configuration describing `state`.
    pub fn from_state(state: &State) -> Result<Self, StateError> {
        let mut services = Vec::new();
        for (name, s) in &state.services {
            let shares = s.shares()?;
            services.push(ServiceConfig {
                name: name.clone(),
                vip: s.vip,
                affinity: s.affinity,
                table_size: s.table_size,
                forward: s.forward.mode,
                tunnel_source: s.forward.source.filter(|_| s.forward.mode.tunnelled()),
                gue_port: s.forward.port,
                backend_port: s.forward.backend_port,
                pool: s.forward.source.filter(|_| s.forward.mode == Mode::Fullnat),
                pool_ports: s.forward.source_ports,
                groups: s
                    .groups
                    .iter()
                    .zip(shares)
                    .map(|(g, share)| GroupConfig {
                        name: g.name.clone(),
                        percent: Some(Percent::Text(share.to_string())),
                        backends: g
                            .backends
                            .iter()
                            .map(|b| BackendConfig {
                                addr: b.addr,
                                weight: b.weight,
                            })
                            .collect(),
                    })
                    .collect(),
                health: s.health.clone(),
                pins: s
                    .pins
                    .iter()
                    .map(|p| PinConfig {
                        cidr: p.cidr,
                        group: p.group.clone(),
                    })
                    .collect(),
            });
        }
        Ok(Self { services })
    }

    /// Makes `state` what this configuration says at `now_ms`, keeping the identity of
    /// services and backends that stay; backends that leave retire with their flows.
    pub fn apply_to(&self, state: &mut State, now_ms: u64) -> Result<(), ConfigError> {
        let mut names = std::collections::BTreeSet::new();
        for s in &self.services {
            if !names.insert(s.name.as_str()) {
                return Err(ConfigError::DuplicateService(s.name.clone()));
            }
        }
        let gone: Vec<String> = state
            .services
            .keys()
            .filter(|n| !names.contains(n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            state.remove_service(&name)?;
        }
        // A service whose VIP changes keeps its identity (backends and their established
        // flows); all VIPs move at once, so that two services may swap theirs.
        let moves: Vec<(String, crate::vip::Vip)> = self
            .services
            .iter()
            .filter(|s| state.services.get(&s.name).is_some_and(|e| e.vip != s.vip))
            .map(|s| (s.name.clone(), s.vip))
            .collect();
        state.move_vips(&moves)?;
        for s in &self.services {
            if state.services.contains_key(&s.name) {
                state.reconfigure_service(&s.name, s.affinity, s.table_size)?;
            } else {
                state.add_service(&s.name, s.vip, s.affinity, Some(s.table_size))?;
            }
            state.set_forward(&s.name, s.forwarding())?;
            apply_service(s, state, now_ms)?;
        }
        Ok(())
    }
}

impl ServiceConfig {
    /// The service's forwarding.
    fn forwarding(&self) -> Forward {
        Forward {
            mode: self.forward,
            source: self.tunnel_source.or(self.pool),
            port: self.gue_port,
            backend_port: self.backend_port,
            source_ports: self.pool_ports,
        }
    }
}

fn apply_service(s: &ServiceConfig, state: &mut State, now_ms: u64) -> Result<(), ConfigError> {
    let wanted: Vec<(IpAddr, &str, u16)> = s
        .groups
        .iter()
        .flat_map(|g| {
            g.backends
                .iter()
                .map(|b| (b.addr, g.name.as_str(), b.weight))
        })
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    if let Some((addr, _, _)) = wanted.iter().find(|(addr, _, _)| !seen.insert(*addr)) {
        return Err(ConfigError::DuplicateBackend(*addr, s.name.clone()));
    }
    let current: Vec<(IpAddr, String)> = {
        let svc = state.service(&s.name)?;
        svc.backends()
            .map(|(g, b)| (b.addr, svc.groups[g].name.clone()))
            .collect()
    };
    // A backend that changes group retires and is revived in its new group.
    let placed: std::collections::HashSet<(IpAddr, &str)> = wanted
        .iter()
        .map(|(addr, group, _)| (*addr, *group))
        .collect();
    for (addr, group) in &current {
        if !placed.contains(&(*addr, group.as_str())) {
            state.remove_backend(&s.name, *addr, false, now_ms)?;
        }
    }
    let present: std::collections::HashSet<IpAddr> = state
        .service(&s.name)?
        .backends()
        .map(|(_, b)| b.addr)
        .collect();
    let mut added = Vec::new();
    for &(addr, group, weight) in &wanted {
        if present.contains(&addr) {
            state.set_weight(&s.name, addr, weight)?;
        } else {
            added.push((addr, group, weight));
        }
    }
    state.add_backends(&s.name, &added)?;
    for g in &s.groups {
        let percent = g.percent.as_ref().map(Percent::basis_points).transpose()?;
        if g.backends.is_empty() && percent.is_some_and(|p| p > BasisPoints::ZERO) {
            return Err(ConfigError::EmptyGroup(g.name.clone(), s.name.clone()));
        }
    }
    let groups: Vec<&GroupConfig> = s.groups.iter().filter(|g| !g.backends.is_empty()).collect();
    let shares: Vec<(String, BasisPoints)> = match groups.as_slice() {
        [] => Vec::new(),
        [only] => vec![(
            only.name.clone(),
            only.percent
                .as_ref()
                .map_or(Ok(BasisPoints::ALL), Percent::basis_points)?,
        )],
        groups => groups
            .iter()
            .map(|g| {
                let p = g
                    .percent
                    .as_ref()
                    .ok_or_else(|| ConfigError::MissingPercent(s.name.clone()))?;
                Ok((g.name.clone(), p.basis_points()?))
            })
            .collect::<Result<_, ConfigError>>()?,
    };
    if !shares.is_empty() {
        state.set_split(&s.name, &shares)?;
    }
    let current: Vec<IpNet> = state
        .service(&s.name)?
        .pins
        .iter()
        .map(|p| p.cidr)
        .collect();
    for cidr in current {
        state.remove_pin(&s.name, cidr)?;
    }
    for pin in &s.pins {
        state.add_pin(&s.name, pin.cidr, &pin.group)?;
    }
    state.set_health(&s.name, s.health.clone())?;
    Ok(())
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
