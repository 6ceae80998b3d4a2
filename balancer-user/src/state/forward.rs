//! How a service's packets reach its backends: direct server return on L2 (the default),
//! a tunnel (IP in IP, GUE) to the backend's address, routed — with its outer source and,
//! for GUE, its UDP port — or address translation (`nat`) to the backend's address and
//! port, routed, its replies translated back on their way through this host.

use std::net::IpAddr;

use balancer_common::{FORWARD_DSR, FORWARD_GUE, FORWARD_IPIP, FORWARD_NAT, GUE_PORT};
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
}

impl Mode {
    /// Whether packets are routed to the backend's address (every mode but `dsr`): such
    /// backends are placed by route, not looked for on L2.
    pub fn routed(self) -> bool {
        self != Mode::Dsr
    }

    /// Whether the backends' replies pass this host (`nat`), so that it counts what they
    /// say (resets, handshake times).
    pub fn replies(self) -> bool {
        self == Mode::Nat
    }

    /// Whether packets are tunnelled (`ipip`, `gue`).
    pub fn tunnelled(self) -> bool {
        matches!(self, Mode::Ipip | Mode::Gue)
    }

    /// The data plane's `Backend::forward` value.
    pub fn code(self) -> u32 {
        match self {
            Mode::Dsr => FORWARD_DSR,
            Mode::Ipip => FORWARD_IPIP,
            Mode::Gue => FORWARD_GUE,
            Mode::Nat => FORWARD_NAT,
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
        })
    }
}

/// A service's forwarding: its mode, the outer source and the GUE port of tunnels, the
/// backends' port of `nat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    /// The mode.
    #[serde(default)]
    pub mode: Mode,
    /// Tunnels: the outer source address (an address of this host, of the VIP's family);
    /// none: the source the kernel prefers for the route to each backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<IpAddr>,
    /// GUE: the UDP destination port; none: [`GUE_PORT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `nat`: the port of every backend, where the VIP's port is rewritten to; none: the
    /// VIP's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_port: Option<u16>,
}

/// Why a forwarding was refused.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// A tunnel source or GUE port without the mode that uses it.
    #[error("{0} applies only to {1} forwarding (this service forwards by {2})")]
    Unused(&'static str, &'static str, Mode),
    /// A tunnel source that cannot be one.
    #[error("tunnel source {0} is not a unicast, non-loopback address")]
    BadSource(IpAddr),
    /// A tunnel source of the other family than the VIP.
    #[error("tunnel source {0} and VIP {1} are of different address families")]
    SourceFamily(IpAddr, Vip),
    /// Port 0 as a GUE or backend port.
    #[error("{0} 0 is not a port")]
    ZeroPort(&'static str),
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

    /// The port the backends of a service on `vip` take its packets on: the `nat` backend
    /// port, else the VIP's.
    pub fn backend_port(&self, vip: Vip) -> u16 {
        match self.mode {
            Mode::Nat => self.backend_port.unwrap_or(vip.addr.port()),
            _ => vip.addr.port(),
        }
    }

    /// Checks that the settings fit the mode and the service's VIP.
    pub fn check(&self, vip: Vip) -> Result<(), ForwardError> {
        if let Some(source) = self.source {
            if !self.mode.tunnelled() {
                return Err(ForwardError::Unused(
                    "a tunnel source",
                    "ipip or gue",
                    self.mode,
                ));
            }
            if !is_unicast(source) || source.is_loopback() {
                return Err(ForwardError::BadSource(source));
            }
            if source.is_ipv4() != vip.addr.is_ipv4() {
                return Err(ForwardError::SourceFamily(source, vip));
            }
        }
        match self.port {
            Some(_) if self.mode != Mode::Gue => {
                return Err(ForwardError::Unused("a GUE port", "gue", self.mode))
            }
            Some(0) => return Err(ForwardError::ZeroPort("GUE port")),
            _ => {}
        }
        match self.backend_port {
            Some(_) if self.mode != Mode::Nat => {
                Err(ForwardError::Unused("a backend port", "nat", self.mode))
            }
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
        match (self.mode.tunnelled(), self.source) {
            (true, Some(source)) => write!(f, " from {source}"),
            (true, None) => f.write_str(" from the route's source"),
            (false, _) => Ok(()),
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
            "a tunnel source applies only to ipip or gue forwarding (this service forwards by dsr)"
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
            "a backend port applies only to nat forwarding (this service forwards by gue)"
        );
        assert_eq!(
            refused(forward(Mode::Nat, Some("198.18.0.1"), None)),
            "a tunnel source applies only to ipip or gue forwarding (this service forwards by nat)"
        );
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
