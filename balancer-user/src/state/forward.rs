//! How a service's packets reach its backends: direct server return on L2 (the default),
//! a tunnel (IP in IP, GUE) to the backend's address, routed — with its outer source and,
//! for GUE, its UDP port — or address translation (`nat`) to the backend's address and
//! port, routed, its replies translated back on their way through this host — with the
//! source translated too (`fullnat`: to a pool address and port of this host's), so the
//! replies come back by ordinary routing.

use std::net::IpAddr;

use balancer_common::{
    FORWARD_DSR, FORWARD_FULLNAT, FORWARD_GUE, FORWARD_IPIP, FORWARD_NAT, GUE_PORT,
};
use serde::{Deserialize, Serialize};

use crate::vip::{is_unicast, Vip};

/// The forwarding mode of a service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Direct server return: the frame is re-addressed to the backend's MAC on a directly
    /// connected network.
    #[default]
    Dsr,
    /// IP in IP (IPv4 in IPv4, IPv6 in IPv6) to the backend's address, routed.
    Ipip,
    /// GUE variant 1 (the IP packet directly in UDP) to the backend's address, routed.
    Gue,
    /// Destination rewritten to the backend's address and port, routed; the backend's
    /// replies, which must pass this host, rewritten back to come from the VIP.
    Nat,
    /// `nat`, and the source rewritten to an address and port of the service's pool, given
    /// per flow: the replies come back to the pool address by ordinary routing. The
    /// backends see the pool address, not the client's.
    Fullnat,
}

impl Mode {
    /// Whether packets are routed to the backend's address (every mode but `dsr`): such
    /// backends are placed by route, not looked for on L2.
    pub fn routed(self) -> bool {
        self != Mode::Dsr
    }

    /// Whether packets are tunnelled (`ipip`, `gue`).
    pub fn tunnelled(self) -> bool {
        matches!(self, Mode::Ipip | Mode::Gue)
    }

    /// Whether addresses are translated and the replies pass this host (`nat`, `fullnat`),
    /// so that it counts what they say (resets, handshake times).
    pub fn translated(self) -> bool {
        matches!(self, Mode::Nat | Mode::Fullnat)
    }

    /// Whether packets leave from an address the service gives or the route prefers
    /// (`ipip`, `gue`: the outer source; `fullnat`: the pool address).
    pub fn sourced(self) -> bool {
        self.tunnelled() || self == Mode::Fullnat
    }

    /// The data plane's `Backend::forward` value.
    pub fn code(self) -> u32 {
        match self {
            Mode::Dsr => FORWARD_DSR,
            Mode::Ipip => FORWARD_IPIP,
            Mode::Gue => FORWARD_GUE,
            Mode::Nat => FORWARD_NAT,
            Mode::Fullnat => FORWARD_FULLNAT,
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Dsr => "dsr",
            Mode::Ipip => "ipip",
            Mode::Gue => "gue",
            Mode::Nat => "nat",
            Mode::Fullnat => "fullnat",
        })
    }
}

/// The ports of a full-NAT pool, first to last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PoolPorts {
    /// The first port.
    pub first: u16,
    /// The last port.
    pub last: u16,
}

/// The pool ports when a `fullnat` service names none: below the kernel's default range of
/// ephemeral ports (32768–60999), so a pool address that is also the host's own never
/// hands out a port the host's own connections (health checks) use.
pub const DEFAULT_POOL_PORTS: PoolPorts = PoolPorts {
    first: 1024,
    last: 32767,
};

impl std::str::FromStr for PoolPorts {
    type Err = ForwardError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || ForwardError::BadPorts(text.to_string());
        let (first, last) = text.split_once('-').ok_or_else(bad)?;
        let ports = PoolPorts {
            first: first.trim().parse().map_err(|_| bad())?,
            last: last.trim().parse().map_err(|_| bad())?,
        };
        if ports.first == 0 || ports.last < ports.first {
            return Err(bad());
        }
        Ok(ports)
    }
}

impl TryFrom<String> for PoolPorts {
    type Error = ForwardError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<PoolPorts> for String {
    fn from(ports: PoolPorts) -> String {
        ports.to_string()
    }
}

impl std::fmt::Display for PoolPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// A service's forwarding: its mode, the outer source and the GUE port of tunnels, the
/// backends' port of `nat` and `fullnat`, the pool of `fullnat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    /// The mode.
    #[serde(default)]
    pub mode: Mode,
    /// Tunnels: the outer source address; `fullnat`: the pool address (an address of this
    /// host, or routed to it, of the VIP's family); none: the source the kernel prefers for
    /// the route to each backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<IpAddr>,
    /// GUE: the UDP destination port; none: [`GUE_PORT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `nat`, `fullnat`: the port of every backend, where the VIP's port is rewritten to;
    /// none: the VIP's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_port: Option<u16>,
    /// `fullnat`: the pool's ports; none: [`DEFAULT_POOL_PORTS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ports: Option<PoolPorts>,
}

/// Why a forwarding was refused.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// A tunnel source or GUE port without the mode that uses it.
    #[error("{0} applies only to {1} forwarding (this service forwards by {2})")]
    Unused(&'static str, &'static str, Mode),
    /// A tunnel source that cannot be one.
    #[error("source {0} (a tunnel source or pool address) is not a unicast, non-loopback address")]
    BadSource(IpAddr),
    /// A tunnel source of the other family than the VIP.
    #[error("source {0} (a tunnel source or pool address) and VIP {1} are of different address families")]
    SourceFamily(IpAddr, Vip),
    /// Port 0 as a GUE or backend port.
    #[error("{0} 0 is not a port")]
    ZeroPort(&'static str),
    /// A pool address that is the service's VIP: replies to it would be taken for
    /// clients' packets to the VIP.
    #[error("pool address {0} is the service's VIP address: replies to it would be taken for clients' packets")]
    PoolIsVip(IpAddr),
    /// Pool ports that are no range.
    #[error("source ports {0:?} are not FIRST-LAST with 1 <= FIRST <= LAST <= 65535")]
    BadPorts(String),
    /// A change of forwarding while backends (serving or retired) hold flows.
    #[error("service {0:?} has {1} backends (serving or retired): its forwarding changes only without backends, since established flows would be sent another way")]
    InUse(String, usize),
}

impl Forward {
    /// Whether this is plain direct server return with nothing else set (the default).
    pub fn is_dsr(&self) -> bool {
        *self == Forward::default()
    }

    /// The GUE port, the default when none is set.
    pub fn gue_port(&self) -> u16 {
        self.port.unwrap_or(GUE_PORT)
    }

    /// The port the backends of a service on `vip` take its packets on: the `nat` or
    /// `fullnat` backend port, else the VIP's.
    pub fn backend_port(&self, vip: Vip) -> u16 {
        match self.mode.translated() {
            true => self.backend_port.unwrap_or(vip.addr.port()),
            false => vip.addr.port(),
        }
    }

    /// The pool's ports (`fullnat`), the default when none are set.
    pub fn pool_ports(&self) -> PoolPorts {
        self.source_ports.unwrap_or(DEFAULT_POOL_PORTS)
    }

    /// Checks that the settings fit the mode and the service's VIP.
    pub fn check(&self, vip: Vip) -> Result<(), ForwardError> {
        if let Some(source) = self.source {
            if !self.mode.sourced() {
                return Err(ForwardError::Unused(
                    "a source",
                    "ipip, gue or fullnat",
                    self.mode,
                ));
            }
            if !is_unicast(source) || source.is_loopback() {
                return Err(ForwardError::BadSource(source));
            }
            if source.is_ipv4() != vip.addr.is_ipv4() {
                return Err(ForwardError::SourceFamily(source, vip));
            }
            if self.mode == Mode::Fullnat && source == vip.addr.ip() {
                return Err(ForwardError::PoolIsVip(source));
            }
        }
        match self.port {
            Some(_) if self.mode != Mode::Gue => {
                return Err(ForwardError::Unused("a GUE port", "gue", self.mode))
            }
            Some(0) => return Err(ForwardError::ZeroPort("GUE port")),
            _ => {}
        }
        if self.source_ports.is_some() && self.mode != Mode::Fullnat {
            return Err(ForwardError::Unused(
                "a source port range",
                "fullnat",
                self.mode,
            ));
        }
        match self.backend_port {
            Some(_) if !self.mode.translated() => Err(ForwardError::Unused(
                "a backend port",
                "nat or fullnat",
                self.mode,
            )),
            Some(0) => Err(ForwardError::ZeroPort("backend port")),
            _ => Ok(()),
        }
    }
}

impl std::fmt::Display for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.mode)?;
        if self.mode == Mode::Gue {
            write!(f, " port {}", self.gue_port())?;
        }
        if let Some(port) = self.backend_port {
            write!(f, " to backend port {port}")?;
        }
        match (self.mode.sourced(), self.source) {
            (true, Some(source)) => write!(f, " from {source}")?,
            (true, None) => f.write_str(" from the route's source")?,
            (false, _) => {}
        }
        match self.mode {
            Mode::Fullnat => write!(f, " ports {}", self.pool_ports()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::ip;

    fn forward(mode: Mode, source: Option<&str>, port: Option<u16>) -> Forward {
        Forward {
            mode,
            source: source.map(ip),
            port,
            backend_port: None,
            source_ports: None,
        }
    }

    #[test]
    fn settings_must_fit_the_mode_and_the_vip() {
        let v4: Vip = "198.19.0.1:80/tcp".parse().unwrap();
        assert!(forward(Mode::Dsr, None, None).check(v4).is_ok());
        assert!(forward(Mode::Ipip, Some("198.18.0.1"), None)
            .check(v4)
            .is_ok());
        assert!(forward(Mode::Gue, Some("198.18.0.1"), Some(5555))
            .check(v4)
            .is_ok());
        let refused = |f: Forward| f.check(v4).unwrap_err().to_string();
        assert_eq!(
            refused(forward(Mode::Dsr, Some("198.18.0.1"), None)),
            "a source applies only to ipip, gue or fullnat forwarding (this service forwards by dsr)"
        );
        assert_eq!(
            refused(forward(Mode::Ipip, None, Some(6080))),
            "a GUE port applies only to gue forwarding (this service forwards by ipip)"
        );
        assert_eq!(
            refused(forward(Mode::Gue, None, Some(0))),
            "GUE port 0 is not a port"
        );
        assert!(refused(forward(Mode::Ipip, Some("2001:db8::1"), None))
            .contains("different address families"));
        assert!(refused(forward(Mode::Ipip, Some("127.0.0.1"), None)).contains("unicast"));
        assert!(refused(forward(Mode::Ipip, Some("224.0.0.1"), None)).contains("unicast"));
        let nat = |backend_port| Forward {
            backend_port,
            ..forward(Mode::Nat, None, None)
        };
        assert!(nat(None).check(v4).is_ok());
        assert!(nat(Some(8080)).check(v4).is_ok());
        assert_eq!(refused(nat(Some(0))), "backend port 0 is not a port");
        assert_eq!(
            refused(Forward {
                backend_port: Some(8080),
                ..forward(Mode::Gue, None, None)
            }),
            "a backend port applies only to nat or fullnat forwarding (this service forwards by gue)"
        );
        assert_eq!(
            refused(forward(Mode::Nat, Some("198.18.0.1"), None)),
            "a source applies only to ipip, gue or fullnat forwarding (this service forwards by nat)"
        );
        let fullnat = |source_ports: Option<&str>| Forward {
            source_ports: source_ports.map(|p| p.parse().unwrap()),
            backend_port: Some(8080),
            ..forward(Mode::Fullnat, Some("198.18.0.1"), None)
        };
        assert!(fullnat(None).check(v4).is_ok());
        assert!(fullnat(Some("2000-2999")).check(v4).is_ok());
        assert_eq!(fullnat(None).pool_ports(), DEFAULT_POOL_PORTS);
        assert_eq!(
            refused(Forward {
                source: Some(ip("198.19.0.1")),
                ..fullnat(None)
            }),
            "pool address 198.19.0.1 is the service's VIP address: replies to it would be taken \
             for clients' packets"
        );
        assert_eq!(fullnat(None).backend_port(v4), 8080);
        assert_eq!(
            fullnat(Some("2000-2999")).to_string(),
            "fullnat to backend port 8080 from 198.18.0.1 ports 2000-2999"
        );
        assert_eq!(
            refused(Forward {
                source_ports: Some(DEFAULT_POOL_PORTS),
                ..forward(Mode::Nat, None, None)
            }),
            "a source port range applies only to fullnat forwarding (this service forwards by nat)"
        );
        for bad in ["0-10", "10-5", "7", "a-b", "1-70000"] {
            assert_eq!(
                bad.parse::<PoolPorts>().unwrap_err().to_string(),
                format!("source ports {bad:?} are not FIRST-LAST with 1 <= FIRST <= LAST <= 65535")
            );
        }
        assert_eq!(nat(Some(8080)).backend_port(v4), 8080);
        assert_eq!(nat(None).backend_port(v4), 80);
        assert_eq!(forward(Mode::Ipip, None, None).backend_port(v4), 80);
    }

    #[test]
    fn a_change_waits_for_the_service_to_have_no_backends() {
        let mut state = crate::state::tests::sample();
        let gue = forward(Mode::Gue, None, Some(7000));
        let before = state.clone();
        let refused = state.set_forward("web", gue).unwrap_err().to_string();
        assert_eq!(
            refused,
            "service \"web\" has 3 backends (serving or retired): its forwarding changes only \
             without backends, since established flows would be sent another way"
        );
        assert_eq!(state, before);
        // What it has already is no change.
        state.set_forward("web", Forward::default()).unwrap();
        for addr in ["198.18.0.101", "198.18.0.102", "198.18.0.103"] {
            state.remove_backend("web", ip(addr), true, 0).unwrap();
        }
        state.set_forward("web", gue).unwrap();
        assert_eq!(state.services["web"].forward, gue);
        state
            .add_backend("web", ip("198.18.0.101"), "blue", 100)
            .unwrap();
        assert!(state.set_forward("web", Forward::default()).is_err());
        // A VIP of the other family does not fit a tunnel source.
        state.services.get_mut("web").unwrap().forward.source = Some(ip("2001:db8::1"));
        assert!(state.validate().is_err());
    }

    #[test]
    fn shows_mode_port_and_source() {
        assert_eq!(forward(Mode::Dsr, None, None).to_string(), "dsr");
        assert_eq!(
            forward(Mode::Gue, None, None).to_string(),
            "gue port 6080 from the route's source"
        );
        assert_eq!(
            forward(Mode::Ipip, Some("198.18.0.1"), None).to_string(),
            "ipip from 198.18.0.1"
        );
        let nat = Forward {
            backend_port: Some(8080),
            ..forward(Mode::Nat, None, None)
        };
        assert_eq!(nat.to_string(), "nat to backend port 8080");
        assert_eq!(forward(Mode::Nat, None, None).to_string(), "nat");
    }

    #[test]
    fn older_state_reads_as_dsr_and_dsr_is_not_written() {
        let read: Forward = serde_json::from_str("{}").unwrap();
        assert!(read.is_dsr());
        let gue = forward(Mode::Gue, Some("198.18.0.1"), Some(7000));
        let text = serde_json::to_string(&gue).unwrap();
        assert_eq!(text, r#"{"mode":"gue","source":"198.18.0.1","port":7000}"#);
        assert_eq!(serde_json::from_str::<Forward>(&text).unwrap(), gue);
    }
}
