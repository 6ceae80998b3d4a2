//! Whose data plane it is: what a daemon claims before it touches anything (the interface,
//! locks on it, on the pin directory and on the state directory, and a refusal to wipe a
//! running data plane whose state file is missing), the start-time flags that a pinned data
//! plane keeps, and `teardown` without a daemon.

pub mod claim;
pub mod iface;
pub mod lock;
pub mod settings;
pub mod teardown;

use std::path::PathBuf;

use crate::dataplane::DataPlaneError;
pub use iface::IfaceError;
pub use lock::LockError;

/// Why a daemon did not start, or a teardown without a daemon did not happen. Nothing was
/// changed either way.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// A bad or unknown interface.
    #[error(transparent)]
    Iface(#[from] IfaceError),
    /// Another daemon holds the interface, the pins or the state directory.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// A running data plane whose state file is not where the daemon looks.
    #[error(
        "no state file at {state_file}, but the data plane pinned at {pins} serves {vips} VIP(s): \
         start with the --state-dir that holds its state file, or add --empty-state to take it \
         over with no services (which removes them)"
    )]
    NoStateFile {
        /// The state file looked for.
        state_file: PathBuf,
        /// The data plane's pin directory.
        pins: PathBuf,
        /// How many VIPs it serves.
        vips: usize,
    },
    /// The interface has a data plane of another map layout (another version's binary).
    #[error(
        "a data plane of map layout v{theirs} is pinned at {pins}, and this binary uses layout \
         v{ours}: remove it with `balancer teardown --iface {iface}` of the binary that started \
         it (its tracked flows are lost), then start this one"
    )]
    OtherLayout {
        /// The interface.
        iface: String,
        /// The other data plane's layout version.
        theirs: u32,
        /// This binary's layout version.
        ours: u32,
        /// Where the other data plane is pinned.
        pins: PathBuf,
    },
    /// `teardown` found nothing to remove.
    #[error("nothing is pinned at {0}: check --iface and --pin-dir")]
    NothingPinned(PathBuf),
    /// A filesystem call failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Reading or unpinning the pinned data plane failed.
    #[error(transparent)]
    DataPlane(#[from] DataPlaneError),
}

impl LifecycleError {
    /// Whether the host failed, as opposed to the command not fitting what is on it.
    pub fn is_host_fault(&self) -> bool {
        matches!(
            self,
            Self::Io { .. } | Self::DataPlane(_) | Self::Lock(LockError::Io { .. })
        )
    }
}

/// An [`LifecycleError::Io`] maker naming what was being done.
fn io_err(context: String) -> impl FnOnce(std::io::Error) -> LifecycleError {
    move |source| LifecycleError::Io { context, source }
}
