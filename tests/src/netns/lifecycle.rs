//! Creating, listing and deleting named network namespaces.

use std::sync::Mutex;

use anyhow::{Context, Result};

use crate::command::run_in_host;

/// Serialises `ip netns add`: the first one also sets up the shared
/// `/run/netns` mount, which races when done concurrently.
static CREATION_LOCK: Mutex<()> = Mutex::new(());

/// Names of all named network namespaces (`ip netns list`).
pub fn list() -> Result<Vec<String>> {
    let output = run_in_host(&["ip", "netns", "list"])?;
    Ok(output
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Creates the named namespace `name`.
pub fn create(name: &str) -> Result<()> {
    let _guard = CREATION_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    run_in_host(&["ip", "netns", "add", name])?;
    Ok(())
}

/// SIGKILLs every process living in namespace `name`, then deletes it.
pub fn delete(name: &str) -> Result<()> {
    kill_processes_in(name)?;
    run_in_host(&["ip", "netns", "delete", name])?;
    Ok(())
}

fn kill_processes_in(name: &str) -> Result<()> {
    let own_pid = std::process::id();
    let output = run_in_host(&["ip", "netns", "pids", name])?;
    for pid in output.split_whitespace() {
        let pid: u32 = pid
            .parse()
            .with_context(|| format!("bad pid {pid:?} in namespace {name}"))?;
        if pid != own_pid {
            // SAFETY: plain syscall. The process lives in a namespace this
            // harness created, so the harness started it.
            unsafe { libc::kill(i32::try_from(pid)?, libc::SIGKILL) };
        }
    }
    Ok(())
}
