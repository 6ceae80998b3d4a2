//! The two kinds of failure, kept apart from the library to the exit code: a **refused**
//! operation (the operator's input does not fit; nothing changed) and a **fault** of the
//! host (I/O, kernel). Refused is HTTP 4xx and CLI exit 1, a fault HTTP 5xx and CLI exit 4.
//!
//! Each error's Display names only its own context; the cause is its `source()`, and
//! [`one_line`] prints the whole chain once.

use std::net::IpAddr;

use crate::{
    announce::AnnounceError, compile::CompileError, config::ConfigError,
    daemon_file::DaemonFileError, dataplane::DataPlaneError, decap::DecapError, fleet::FleetError,
    lifecycle::LifecycleError, neighbor::NeighborError, state::StateError, state::StoreError,
};

/// An operation refused because of its input. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The change does not fit the desired state.
    #[error(transparent)]
    State(#[from] StateError),
    /// The configuration file is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The daemon's config file (`daemon --config`) is missing or invalid.
    #[error(transparent)]
    DaemonFile(#[from] DaemonFileError),
    /// A backend is not where L2 direct server return can reach it.
    #[error(transparent)]
    Unreachable(NeighborError),
    /// The request itself is malformed (bad address, bad body).
    #[error("{0}")]
    Request(String),
    /// The request body is over the limit, in bytes.
    #[error("the request body is over the limit of {0} bytes")]
    TooLarge(usize),
    /// The request names no operation (method and path).
    #[error("no such operation: {0}")]
    NoOperation(String),
    /// The daemon may not start, or `teardown` may not run, on what the host has (a bad
    /// interface, another daemon, a missing state file for a running data plane).
    #[error(transparent)]
    Lifecycle(LifecycleError),
    /// `balancer decap` does not fit the host (no such interface, another XDP program,
    /// nothing attached to remove).
    #[error(transparent)]
    Decap(DecapError),
    /// A fleet's store refused or could not take the change (see [`FleetError`]).
    #[error(transparent)]
    Fleet(#[from] FleetError),
    /// `fleet leave` or `fleet join` on a daemon that announces nothing.
    #[error(transparent)]
    Announce(AnnounceError),
}

/// A fault of the host: the operation could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    /// The state file could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The kernel refused a data-plane operation.
    #[error(transparent)]
    DataPlane(#[from] DataPlaneError),
    /// The neighbour tables could not be read.
    #[error(transparent)]
    Neighbor(NeighborError),
    /// A table could not be built from a state that passed validation.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// Locking or inspecting the pins or the state directory failed.
    #[error(transparent)]
    Lifecycle(LifecycleError),
    /// The kernel or bpffs refused `balancer decap`.
    #[error(transparent)]
    Decap(DecapError),
    /// The kernel refused to change the announcement table, or the mark of `fleet leave`
    /// could not be written.
    #[error(transparent)]
    Announce(AnnounceError),
    /// The daemon itself failed (a panicked worker, a poisoned lock).
    #[error("{0}")]
    Internal(String),
}

/// Why an operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Refused: see [`Refused`].
    #[error(transparent)]
    Refused(#[from] Refused),
    /// A fault: see [`Fault`].
    #[error(transparent)]
    Fault(#[from] Fault),
    /// The daemon is tearing down and takes no more operations.
    #[error("the daemon is tearing down")]
    TearingDown,
    /// A change adds backends the kernel's neighbour table does not hold yet: nothing was
    /// changed. The executor resolves them off the controller's lock and runs the change
    /// again, so this never reaches a client.
    #[error("backends not located yet: {}", list(.0))]
    Unlocated(Vec<IpAddr>),
}

fn list(addrs: &[IpAddr]) -> String {
    addrs
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl From<StateError> for Error {
    fn from(e: StateError) -> Self {
        Self::Refused(e.into())
    }
}

impl From<FleetError> for Error {
    fn from(e: FleetError) -> Self {
        Self::Refused(e.into())
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Self::Refused(e.into())
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Self::Fault(e.into())
    }
}

impl From<DataPlaneError> for Error {
    fn from(e: DataPlaneError) -> Self {
        Self::Fault(e.into())
    }
}

impl From<CompileError> for Error {
    fn from(e: CompileError) -> Self {
        Self::Fault(e.into())
    }
}

impl From<NeighborError> for Error {
    /// Where a backend is (routed, no route, silent) is the operator's input; failing to
    /// read the kernel's tables is a fault.
    fn from(e: NeighborError) -> Self {
        if e.is_host_fault() {
            Self::Fault(Fault::Neighbor(e))
        } else {
            Self::Refused(Refused::Unreachable(e))
        }
    }
}

impl From<LifecycleError> for Error {
    /// A failing host is a fault; anything else means the command does not fit the host.
    fn from(e: LifecycleError) -> Self {
        if e.is_host_fault() {
            Self::Fault(Fault::Lifecycle(e))
        } else {
            Self::Refused(Refused::Lifecycle(e))
        }
    }
}

impl From<AnnounceError> for Error {
    /// A failing host is a fault; a daemon without `--announce-table` refuses.
    fn from(e: AnnounceError) -> Self {
        if e.is_host_fault() {
            Self::Fault(Fault::Announce(e))
        } else {
            Self::Refused(Refused::Announce(e))
        }
    }
}

impl From<DecapError> for Error {
    /// A failing host is a fault; anything else means the command does not fit the host.
    fn from(e: DecapError) -> Self {
        if e.is_host_fault() {
            Self::Fault(Fault::Decap(e))
        } else {
            Self::Refused(Refused::Decap(e))
        }
    }
}

/// `error` and its sources on one line, each said once: "write BACKENDS: syscall failed".
pub fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_is_said_once() {
        let store = StoreError::Io {
            context: "sync /var/lib/balancer/state.json".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        };
        let error = Error::from(store);
        assert!(matches!(error, Error::Fault(Fault::Store(_))));
        assert_eq!(
            one_line(&error),
            "sync /var/lib/balancer/state.json: No space left on device (os error 28)"
        );
        let refused = Error::from(StateError::UnknownService("web".into()));
        assert!(matches!(refused, Error::Refused(_)));
        assert_eq!(one_line(&refused), "no service named \"web\"");
    }

    #[test]
    fn neighbour_errors_are_refusals_unless_the_host_failed() {
        let addr = "198.18.0.9".parse().unwrap();
        let routed = Error::from(NeighborError::Routed(addr, "198.18.0.1".into()));
        assert!(matches!(routed, Error::Refused(Refused::Unreachable(_))));
        let netlink = Error::from(NeighborError::Netlink {
            what: "routing table",
            source: std::io::Error::from_raw_os_error(libc::ENOBUFS),
        });
        assert!(matches!(netlink, Error::Fault(Fault::Neighbor(_))));
    }
}
