//! What the test harness and the benchmark need from the system, installed with apt.

use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Result};

use super::Progress;
use crate::command;

/// Something needed from the system.
#[derive(Clone, Copy, Debug)]
enum Need {
    /// A command on `$PATH`.
    Command(&'static str),
    /// A file, e.g. the font the benchmark draws its charts with.
    File(&'static str),
}

impl Need {
    fn present(self) -> bool {
        match self {
            Need::Command(name) => command::on_path(name),
            Need::File(path) => Path::new(path).is_file(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Need::Command(name) | Need::File(name) => name,
        }
    }
}

/// Each need, with the Debian package providing it.
/// `nft` and `haproxy` are the benchmark's baseline load balancers; `prometheus` scrapes the
/// daemon's metrics in the namespace tests; `systemd-analyze` verifies the systemd unit (and
/// `man` finds the manual page it names); `setpriv` runs the daemon with the unit's
/// capabilities; `protoc` builds etcd's client (`balancer daemon --store`), and `etcd` is
/// the fleet's store in the namespace tests; `bird` (and `birdc`) announce the VIPs over BGP
/// and make the router's ECMP route in the fleet's BGP tests.
const NEEDS: [(Need, &str); 13] = [
    (Need::Command("ip"), "iproute2"),
    (Need::Command("ethtool"), "ethtool"),
    (Need::Command("nsenter"), "util-linux"),
    (Need::Command("nft"), "nftables"),
    (Need::Command("haproxy"), "haproxy"),
    (Need::Command("prometheus"), "prometheus"),
    (
        Need::File("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
        "fonts-dejavu-core",
    ),
    (Need::Command("systemd-analyze"), "systemd"),
    (Need::Command("man"), "man-db"),
    (Need::Command("setpriv"), "util-linux"),
    (Need::Command("protoc"), "protobuf-compiler"),
    (Need::Command("etcd"), "etcd-server"),
    (Need::Command("bird"), "bird2"),
];

/// Installs the packages of the needs that are missing.
pub(super) fn ensure_harness_needs(progress: &mut Progress) -> Result<()> {
    let missing = missing_needs();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|(need, _)| need.name()).collect();
    let packages: Vec<&str> = missing.iter().map(|(_, package)| *package).collect();
    progress.action(&format!(
        "installing apt packages {} (missing: {})",
        packages.join(" "),
        names.join(" ")
    ));
    command::run(apt_get().args(["update", "-qq"]))?;
    command::run(
        apt_get()
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&packages),
    )?;
    let still_missing: Vec<&str> = missing_needs()
        .iter()
        .map(|(need, _)| need.name())
        .collect();
    ensure!(
        still_missing.is_empty(),
        "still missing after installing {}: {}",
        packages.join(" "),
        still_missing.join(" ")
    );
    Ok(())
}

/// The needs not present, with their packages.
fn missing_needs() -> Vec<(Need, &'static str)> {
    NEEDS
        .into_iter()
        .filter(|(need, _)| !need.present())
        .collect()
}

/// `apt-get`, never asking questions.
fn apt_get() -> Command {
    let mut apt_get = Command::new("apt-get");
    apt_get.env("DEBIAN_FRONTEND", "noninteractive");
    apt_get
}
