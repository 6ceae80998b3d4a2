//! Network namespaces: creating and removing them, and running commands,
//! processes and closures inside them.

mod enter;
mod exec;
mod lifecycle;

pub use enter::{in_netns, set_sysctls};
pub(crate) use exec::{command, run_with_stdin};
pub use exec::{run, spawn, NsProcess};
pub use lifecycle::{create, delete, list};

/// Path of the bind mount that `ip netns add` creates for namespace `ns`.
fn path(ns: &str) -> String {
    format!("/run/netns/{ns}")
}
