//! Network namespaces: creating and removing them, and running commands,
//! processes and closures inside them.

mod enter;
mod exec;
mod lifecycle;

pub use enter::{in_netns, set_sysctls};
pub(crate) use exec::{command, run_with_stdin};
pub use exec::{run, spawn, spawn_with_env, NsProcess};
pub use lifecycle::{create, delete, list};

/// The MAC address of `eth0` in namespace `ns`.
pub fn eth0_mac(ns: &str) -> anyhow::Result<[u8; 6]> {
    mac(ns, "eth0")
}

/// The MAC address of interface `iface` in namespace `ns`.
pub fn mac(ns: &str, iface: &str) -> anyhow::Result<[u8; 6]> {
    use anyhow::Context as _;
    let json = run(ns, &["ip", "-json", "link", "show", iface])?;
    let links: serde_json::Value = serde_json::from_str(&json).context("parse ip -json link")?;
    let text = links[0]["address"]
        .as_str()
        .with_context(|| format!("no MAC address for {iface} in {ns}"))?;
    balancer_user::neighbor::parse_mac(text)
        .with_context(|| format!("MAC address {text:?} of {iface} in {ns}"))
}

/// Path of the bind mount that `ip netns add` creates for namespace `ns`.
fn path(ns: &str) -> String {
    format!("/run/netns/{ns}")
}
