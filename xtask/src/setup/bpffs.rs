//! The BPF filesystem, where the daemon pins its maps and links.

use std::fs;
use std::process::Command;

use anyhow::{Context, Result};

use super::Progress;
use crate::command;

/// Where bpffs is mounted.
const BPFFS: &str = "/sys/fs/bpf";

/// Mounts bpffs on `/sys/fs/bpf` unless it already is.
pub(super) fn ensure_mounted(progress: &mut Progress) -> Result<()> {
    if is_mounted()? {
        return Ok(());
    }
    progress.action(&format!("mounting bpffs on {BPFFS}"));
    command::run(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))
}

/// Whether `/proc/mounts` lists a `bpf` filesystem on `/sys/fs/bpf`.
fn is_mounted() -> Result<bool> {
    let mounts = fs::read_to_string("/proc/mounts").context("read /proc/mounts")?;
    Ok(mounts.lines().any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        fields.next() == Some(BPFFS) && fields.next() == Some("bpf")
    }))
}
