//! Finding where a backend is on the wire: the interface that reaches it directly, that
//! interface's MAC, and the backend's MAC from the kernel's neighbour table (probing it with
//! one ICMP echo when the entry is missing).
//!
//! Uses `ip -json` from iproute2, which every Linux host running this daemon has.

use std::{
    net::IpAddr,
    process::Command,
    time::{Duration, Instant},
};

use serde::Deserialize;

mod nudge;

/// How long to wait for a neighbour entry after probing.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Where to send a backend's frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHop {
    /// Interface index towards the backend.
    pub ifindex: u32,
    /// MAC of that interface (new source MAC).
    pub src_mac: [u8; 6],
    /// MAC of the backend (new destination MAC).
    pub dst_mac: [u8; 6],
}

/// Why a backend could not be located.
#[derive(Debug, thiserror::Error)]
pub enum NeighborError {
    /// The backend is behind a router.
    #[error("backend {0} is reached through gateway {1}: L2 direct server return needs backends on a directly connected network")]
    Routed(IpAddr, String),
    /// No route.
    #[error("no route to backend {0}")]
    NoRoute(IpAddr),
    /// ARP/ND did not answer.
    #[error("backend {0} does not answer ARP/neighbour discovery on {1}")]
    Unresolved(IpAddr, String),
    /// `ip` failed or printed something unexpected.
    #[error("`ip {0}` failed: {1}")]
    Ip(String, String),
}

#[derive(Deserialize)]
struct RouteEntry {
    dev: Option<String>,
    gateway: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct LinkEntry {
    ifindex: u32,
    address: Option<String>,
}

#[derive(Deserialize)]
struct NeighEntry {
    lladdr: Option<String>,
    #[serde(default)]
    state: Vec<String>,
}

impl NeighborError {
    /// Whether the host failed (`ip` could not run or answer), as opposed to the backend
    /// not being on a directly connected network.
    pub fn is_host_fault(&self) -> bool {
        matches!(self, Self::Ip(..))
    }
}

/// Locates `addr` on a directly connected network.
pub fn resolve(addr: IpAddr) -> Result<NextHop, NeighborError> {
    let target = addr.to_string();
    let routes: Vec<RouteEntry> = ip_json(&["route", "get", &target])?;
    let route = routes.first().ok_or(NeighborError::NoRoute(addr))?;
    if let Some(gateway) = &route.gateway {
        return Err(NeighborError::Routed(addr, gateway.clone()));
    }
    if route.kind.as_deref().is_some_and(|k| k != "unicast") {
        return Err(NeighborError::NoRoute(addr));
    }
    let dev = route.dev.clone().ok_or(NeighborError::NoRoute(addr))?;
    let links: Vec<LinkEntry> = ip_json(&["link", "show", "dev", &dev])?;
    let link = links
        .first()
        .ok_or_else(|| NeighborError::Ip("link show".into(), format!("no device {dev}")))?;
    let src_mac = link
        .address
        .as_deref()
        .and_then(parse_mac)
        .ok_or_else(|| NeighborError::Ip("link show".into(), format!("{dev} has no MAC")))?;
    let deadline = Instant::now() + RESOLVE_TIMEOUT;
    let mut probed = false;
    loop {
        if let Some(dst_mac) = lookup_neighbor(&target, &dev)? {
            return Ok(NextHop {
                ifindex: link.ifindex,
                src_mac,
                dst_mac,
            });
        }
        if Instant::now() >= deadline {
            return Err(NeighborError::Unresolved(addr, dev));
        }
        if !probed {
            nudge::nudge(addr);
            probed = true;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn lookup_neighbor(target: &str, dev: &str) -> Result<Option<[u8; 6]>, NeighborError> {
    let entries: Vec<NeighEntry> = ip_json(&["neigh", "show", target, "dev", dev])?;
    Ok(entries.iter().find_map(|e| {
        let usable = !e.state.iter().any(|s| s == "FAILED" || s == "INCOMPLETE");
        e.lladdr.as_deref().and_then(parse_mac).filter(|_| usable)
    }))
}

fn ip_json<T: for<'de> Deserialize<'de>>(args: &[&str]) -> Result<Vec<T>, NeighborError> {
    let what = args.join(" ");
    let out = Command::new("ip")
        .arg("-json")
        .args(args)
        .output()
        .map_err(|e| NeighborError::Ip(what.clone(), e.to_string()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if args.first() == Some(&"route") {
            return Ok(Vec::new());
        }
        return Err(NeighborError::Ip(what, stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(&text).map_err(|e| NeighborError::Ip(what, e.to_string()))
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_macs() {
        assert_eq!(
            parse_mac("02:00:0a:ff:10:01"),
            Some([2, 0, 0x0a, 0xff, 0x10, 1])
        );
        assert_eq!(parse_mac("02:00:0a:ff:10"), None);
        assert_eq!(parse_mac("02:00:0a:ff:10:01:02"), None);
        assert_eq!(parse_mac("zz:00:0a:ff:10:01"), None);
    }
}
