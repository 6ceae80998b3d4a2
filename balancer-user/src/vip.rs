//! Service addresses as operators write them: `ADDR:PORT/tcp`, `[V6ADDR]:PORT/udp`.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    str::FromStr,
};

use balancer_common::{VipKey, FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP};
use serde::{Deserialize, Serialize};

/// Transport protocol of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// A virtual service address: IP, port and protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vip {
    /// Address and port clients connect to.
    pub addr: SocketAddr,
    /// Transport protocol.
    pub protocol: Protocol,
}

/// Why a VIP string was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VipError {
    /// No `/tcp` or `/udp` suffix.
    #[error("VIP {0:?} lacks a protocol: write ADDR:PORT/tcp or ADDR:PORT/udp ([ADDR]:PORT/tcp for IPv6)")]
    MissingProtocol(String),
    /// Protocol other than tcp/udp.
    #[error("VIP {0:?} has an unknown protocol {1:?}: use tcp or udp")]
    UnknownProtocol(String, String),
    /// Address or port malformed.
    #[error("VIP {0:?} is not ADDR:PORT (IPv6 as [ADDR]:PORT)")]
    BadAddress(String),
    /// Port 0 cannot be served.
    #[error("VIP {0:?} has port 0")]
    PortZero(String),
    /// An IPv6 scope id (`%1`): the data plane keys VIPs by address, port and protocol,
    /// so two scopes of one address would be one service.
    #[error("VIP {0:?} has a scope id: write the address without %SCOPE")]
    ScopeId(String),
    /// Unspecified, multicast or broadcast address.
    #[error("VIP {0:?} is not a unicast address")]
    NotUnicast(String),
}

impl FromStr for Vip {
    type Err = VipError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, proto) = s
            .rsplit_once('/')
            .ok_or_else(|| VipError::MissingProtocol(s.to_string()))?;
        let protocol = match proto.to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => return Err(VipError::UnknownProtocol(s.to_string(), other.to_string())),
        };
        let addr: SocketAddr = addr
            .parse()
            .map_err(|_| VipError::BadAddress(s.to_string()))?;
        if addr.port() == 0 {
            return Err(VipError::PortZero(s.to_string()));
        }
        if let SocketAddr::V6(v6) = addr {
            if v6.scope_id() != 0 {
                return Err(VipError::ScopeId(s.to_string()));
            }
        }
        if !is_unicast(addr.ip()) {
            return Err(VipError::NotUnicast(s.to_string()));
        }
        Ok(Self { addr, protocol })
    }
}

/// Whether `ip` can be a service or backend address.
pub fn is_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

impl fmt::Display for Vip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        write!(f, "{}/{}", self.addr, proto)
    }
}

impl Serialize for Vip {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Vip {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Vip {
    /// The key of this VIP in the data plane's VIP map.
    pub fn key(&self) -> VipKey {
        VipKey {
            addr: addr_bytes(self.addr.ip()),
            port_be: self.addr.port().to_be(),
            proto: match self.protocol {
                Protocol::Tcp => PROTO_TCP,
                Protocol::Udp => PROTO_UDP,
            },
            family: family(self.addr.ip()),
        }
    }
}

/// An address as the data plane stores it: IPv4 in the first four bytes.
pub fn addr_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            b
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The data plane's family tag of an address.
pub fn family(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => FAMILY_V4,
        IpAddr::V6(_) => FAMILY_V6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v4_and_v6() {
        let v4: Vip = "198.19.0.1:80/tcp".parse().unwrap();
        assert_eq!(v4.to_string(), "198.19.0.1:80/tcp");
        let v6: Vip = "[2001:db8::1]:443/UDP".parse().unwrap();
        assert_eq!(v6.to_string(), "[2001:db8::1]:443/udp");
        assert_eq!(v6.key().proto, PROTO_UDP);
        assert_eq!(v4.key().port_be, 80u16.to_be());
        assert_eq!(&v4.key().addr[..4], &[198, 19, 0, 1]);
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "198.19.0.1:80",
            "198.19.0.1:80/sctp",
            "198.19.0.1/tcp",
            "198.19.0.300:80/tcp",
            "2001:db8::1:80/tcp",
            "198.19.0.1:0/tcp",
            "0.0.0.0:80/tcp",
            "224.0.0.1:80/udp",
            "198.19.0.1:70000/tcp",
        ] {
            assert!(bad.parse::<Vip>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn rejects_scope_ids_which_would_share_a_data_plane_key() {
        for scoped in ["[2001:db8:ffff::5%1]:80/tcp", "[fe80::1%2]:80/tcp"] {
            assert_eq!(
                scoped.parse::<Vip>(),
                Err(VipError::ScopeId(scoped.to_string()))
            );
        }
        let err = "[2001:db8:ffff::5%1]:80/tcp".parse::<Vip>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "VIP \"[2001:db8:ffff::5%1]:80/tcp\" has a scope id: write the address without %SCOPE"
        );
        // The same address without a scope stays valid.
        assert!("[2001:db8:ffff::5]:80/tcp".parse::<Vip>().is_ok());
    }
}
