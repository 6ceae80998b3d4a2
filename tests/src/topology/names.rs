//! Names of the namespaces and bridge ports of a topology.

/// Name of the bridge device in the bridge namespace.
pub(crate) const BRIDGE: &str = "br0";
/// Name of every host's interface to the bridge.
pub(crate) const HOST_INTERFACE: &str = "eth0";

/// Role suffixes of the fixed namespaces.
const BRIDGE_ROLE: &str = "br";
const CLIENT_ROLE: &str = "cl";
const LB_ROLE: &str = "lb";
/// Role suffix of the router namespace of a routed topology ([`crate::routed`]).
const ROUTER_ROLE: &str = "rt";
/// Role prefix of backend namespaces, followed by the backend index.
const BACKEND_ROLE: &str = "b";

/// Bridge namespace name for `prefix`.
pub(crate) fn bridge_ns(prefix: &str) -> String {
    format!("{prefix}-{BRIDGE_ROLE}")
}

/// Client namespace name for `prefix`.
pub(crate) fn client_ns(prefix: &str) -> String {
    format!("{prefix}-{CLIENT_ROLE}")
}

/// Load balancer namespace name for `prefix`.
pub(crate) fn lb_ns(prefix: &str) -> String {
    format!("{prefix}-{LB_ROLE}")
}

/// Router namespace name for `prefix` (routed topologies only).
pub(crate) fn router_ns(prefix: &str) -> String {
    format!("{prefix}-{ROUTER_ROLE}")
}

/// Namespace name of backend `index` for `prefix`.
pub(crate) fn backend_ns(prefix: &str, index: usize) -> String {
    format!("{prefix}-{BACKEND_ROLE}{index}")
}

/// Bridge-side port of the host whose namespace is `host_ns`: `p-` and
/// the role, e.g. `p-lb`, `p-b3` (short enough for IFNAMSIZ; prefixes
/// contain no `-`).
pub(crate) fn bridge_port(host_ns: &str) -> String {
    let role = host_ns.rsplit('-').next().unwrap_or(host_ns);
    format!("p-{role}")
}

/// Whether `ns` is named like a namespace of a topology with `prefix`, bridged or routed.
pub(crate) fn belongs_to(prefix: &str, ns: &str) -> bool {
    let Some(role) = ns
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
    else {
        return false;
    };
    let is_backend = role
        .strip_prefix(BACKEND_ROLE)
        .is_some_and(|index| !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()));
    is_backend || [BRIDGE_ROLE, CLIENT_ROLE, LB_ROLE, ROUTER_ROLE].contains(&role)
}
