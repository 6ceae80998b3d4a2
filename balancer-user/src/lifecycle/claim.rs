//! What a daemon checks before it touches the data plane: that a missing state file would
//! not wipe a running data plane. A refusal leaves everything as it was.

use std::path::Path;

use super::{io_err, LifecycleError};
use crate::{
    dataplane::{bpffs::Layout, pinned},
    state::FileStore,
};

/// What a daemon asks for.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The data plane's pin directory.
    pub pins: &'a Layout,
    /// The state directory.
    pub state_dir: &'a Path,
    /// Take over a data plane that serves VIPs with an empty state when the state file is
    /// missing (`--empty-state`).
    pub empty_state: bool,
}

/// Checks that the daemon may start on what `request` names.
pub fn claim(request: &Request) -> Result<(), LifecycleError> {
    check_takeover(
        &FileStore::in_dir(request.state_dir),
        request.pins,
        request.empty_state,
    )
}

/// Refuses to start without a state file on a data plane that serves VIPs: reconciling an
/// empty state would remove every VIP and backend from the running data plane. With
/// `empty_state` that is what the operator asked for.
fn check_takeover(
    store: &FileStore,
    pins: &Layout,
    empty_state: bool,
) -> Result<(), LifecycleError> {
    let state_file = store.path();
    let exists = state_file
        .try_exists()
        .map_err(io_err(format!("look for {}", state_file.display())))?;
    if exists {
        return Ok(());
    }
    let vips = pinned::vip_count(pins)?;
    if vips == 0 {
        return Ok(());
    }
    if !empty_state {
        return Err(LifecycleError::NoStateFile {
            state_file: state_file.to_path_buf(),
            pins: pins.dir().to_path_buf(),
            vips,
        });
    }
    tracing::warn!(
        "no state file at {}: taking over the data plane pinned at {} with no services \
         (--empty-state); its {vips} VIP(s) are removed",
        state_file.display(),
        pins.dir().display()
    );
    Ok(())
}
