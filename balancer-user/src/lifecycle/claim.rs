//! What a daemon takes before it touches the data plane, in this order: the interface
//! (a plain name that exists), a lock on the interface (one daemon per interface and network
//! namespace), a lock on the pin directory (one daemon per data plane), the check that a
//! missing state file would not wipe a running data plane, and a lock on the state
//! directory (one daemon per state file). A refusal at any step leaves everything as it was.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use super::{iface, io_err, lock::Lock, LifecycleError};
use crate::{
    dataplane::{
        bpffs::{self, Layout},
        pinned,
    },
    state::FileStore,
};

/// Where the interface locks live (a tmpfs: they are about running processes).
pub const RUN_DIR: &str = "/run/balancer";

/// Name of the lock file in the state directory.
pub const STATE_LOCK: &str = "lock";

/// What a daemon asks for.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The interface to attach to.
    pub iface: &'a str,
    /// The data plane's pin directory.
    pub pins: &'a Layout,
    /// The state directory.
    pub state_dir: &'a Path,
    /// Take over a data plane that serves VIPs with an empty state when the state file is
    /// missing (`--empty-state`).
    pub empty_state: bool,
}

/// What a daemon holds while it runs; the locks go with it.
#[derive(Debug)]
pub struct Claim {
    /// The interface's index.
    pub ifindex: u32,
    _locks: [Lock; 3],
}

/// Claims the interface, the pins and the state directory for one daemon.
pub fn claim(request: &Request) -> Result<Claim, LifecycleError> {
    let Request {
        iface,
        pins,
        state_dir,
        empty_state,
    } = *request;
    let ifindex = iface::index(iface)?;
    let iface_lock = Lock::try_acquire(
        &iface_lock(iface)?,
        &format!("interface {iface} already has a balancer daemon; stop it first"),
    )?;
    check_layout(iface, pins)?;
    let created = !pins.dir().exists();
    bpffs::ensure(pins.dir()).map_err(io_err(format!(
        "prepare the pin directory {}",
        pins.dir().display()
    )))?;
    let rest = claim_pins_and_state(pins, state_dir, empty_state);
    if rest.is_err() && created {
        // Leave no trace: the directory is empty, nothing was pinned.
        let _ = std::fs::remove_dir(pins.dir());
    }
    let (pins_lock, state_lock) = rest?;
    Ok(Claim {
        ifindex,
        _locks: [iface_lock, pins_lock, state_lock],
    })
}

fn claim_pins_and_state(
    pins: &Layout,
    state_dir: &Path,
    empty_state: bool,
) -> Result<(Lock, Lock), LifecycleError> {
    let pins_lock = Lock::try_acquire(
        pins.dir(),
        &format!(
            "the data plane pinned at {} already has a balancer daemon; stop it first",
            pins.dir().display()
        ),
    )?;
    check_takeover(&FileStore::in_dir(state_dir), pins, empty_state)?;
    std::fs::create_dir_all(state_dir).map_err(io_err(format!(
        "create the state directory {}",
        state_dir.display()
    )))?;
    let state_lock = Lock::try_acquire(
        &state_dir.join(STATE_LOCK),
        &format!(
            "state directory {} is used by another balancer daemon; stop it first",
            state_dir.display()
        ),
    )?;
    Ok((pins_lock, state_lock))
}

/// Refuses to start beside a data plane of another map layout: its maps cannot be read,
/// and its program holds the interface.
fn check_layout(iface: &str, pins: &Layout) -> Result<(), LifecycleError> {
    let others = pins.others().map_err(io_err(format!(
        "look for other layouts beside {}",
        pins.dir().display()
    )))?;
    match others.into_iter().next() {
        None => Ok(()),
        Some((theirs, dir)) => Err(LifecycleError::OtherLayout {
            iface: iface.to_string(),
            theirs,
            ours: bpffs::LAYOUT_VERSION,
            pins: dir,
        }),
    }
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

/// The lock file of `iface` in this network namespace: interfaces of the same name in other
/// namespaces are other interfaces.
fn iface_lock(iface: &str) -> Result<PathBuf, LifecycleError> {
    let netns = std::fs::metadata("/proc/self/ns/net")
        .map_err(io_err("identify the network namespace".into()))?
        .ino();
    let dir = Path::new(RUN_DIR);
    std::fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
    Ok(iface_lock_file(iface, netns))
}

/// The lock file of interface `iface` in the network namespace of inode `netns` (a daemon
/// killed with `kill -9` leaves it behind, unlocked).
pub fn iface_lock_file(iface: &str, netns: u64) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{iface}.net{netns}.lock"))
}
