//! The external commands the test harness and the benchmark run, installed with apt.

use std::process::Command;

use anyhow::{ensure, Result};

use super::Progress;
use crate::command;

/// Each command the harness and the benchmark need, with the Debian package providing it.
/// `nft` and `haproxy` are the benchmark's baseline load balancers.
const HARNESS_COMMANDS: [(&str, &str); 5] = [
    ("ip", "iproute2"),
    ("ethtool", "ethtool"),
    ("nsenter", "util-linux"),
    ("nft", "nftables"),
    ("haproxy", "haproxy"),
];

/// Installs the packages of the harness commands missing from `$PATH`.
pub(super) fn ensure_harness_commands(progress: &mut Progress) -> Result<()> {
    let missing = missing_commands();
    if missing.is_empty() {
        return Ok(());
    }
    let commands: Vec<&str> = missing.iter().map(|(command, _)| *command).collect();
    let packages: Vec<&str> = missing.iter().map(|(_, package)| *package).collect();
    progress.action(&format!(
        "installing apt packages {} (missing commands: {})",
        packages.join(" "),
        commands.join(" ")
    ));
    command::run(apt_get().args(["update", "-qq"]))?;
    command::run(
        apt_get()
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&packages),
    )?;
    let still_missing: Vec<&str> = missing_commands()
        .iter()
        .map(|(command, _)| *command)
        .collect();
    ensure!(
        still_missing.is_empty(),
        "still not on PATH after installing {}: {}",
        packages.join(" "),
        still_missing.join(" ")
    );
    Ok(())
}

/// The harness commands not found on `$PATH`, with their packages.
fn missing_commands() -> Vec<(&'static str, &'static str)> {
    HARNESS_COMMANDS
        .into_iter()
        .filter(|(command, _)| !command::on_path(command))
        .collect()
}

/// `apt-get`, never asking questions.
fn apt_get() -> Command {
    let mut apt_get = Command::new("apt-get");
    apt_get.env("DEBIAN_FRONTEND", "noninteractive");
    apt_get
}
