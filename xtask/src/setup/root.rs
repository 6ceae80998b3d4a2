//! Setup installs packages and mounts bpffs, and the tests create network
//! namespaces: all of it needs root.

use std::fs;

use anyhow::{bail, Context, Result};

/// Fails with a one-line explanation unless the effective user is root.
pub(super) fn ensure_root() -> Result<()> {
    let uid = effective_uid()?;
    if uid != 0 {
        bail!(
            "cargo xtask must run as root (it installs packages, mounts bpffs and \
             creates network namespaces); the effective uid is {uid}"
        );
    }
    Ok(())
}

/// The effective uid, the second field of the `Uid:` line of
/// `/proc/self/status`.
fn effective_uid() -> Result<u32> {
    let status = fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().nth(1))
        .and_then(|uid| uid.parse().ok())
        .context("no effective uid in /proc/self/status")
}
