//! `balancer teardown --iface IF` with no daemon running: unpin the link and the maps, which
//! detaches the program and frees the maps. A daemon that runs on those pins holds their
//! lock, and the teardown is refused (it goes through the daemon's socket instead).

use std::path::{Path, PathBuf};

use super::{iface, io_err, lock::Lock, LifecycleError};
use crate::dataplane::{self, bpffs::Layout};

/// Removes the data plane of `iface` pinned under `pin_root`; returns its pin directory.
pub fn teardown(iface: &str, pin_root: &Path) -> Result<PathBuf, LifecycleError> {
    // The interface itself may be gone (its pins are still there to remove).
    iface::check_name(iface)?;
    let pins = Layout::new(pin_root, iface);
    let dir = pins.dir().to_path_buf();
    let exists = dir
        .try_exists()
        .map_err(io_err(format!("look for {}", dir.display())))?;
    if !exists {
        return Err(LifecycleError::NothingPinned(dir));
    }
    let _lock = Lock::try_acquire(
        &dir,
        &format!(
            "the data plane pinned at {} is served by a running daemon: tear it down through \
             that daemon's --socket",
            dir.display()
        ),
    )?;
    let pinned = pins.link().exists() || pins.maps().exists();
    dataplane::unpin(&pins)?;
    if pinned {
        Ok(dir)
    } else {
        Err(LifecycleError::NothingPinned(dir))
    }
}
