//! The control socket is root's alone: mode 0600, and another user's CLI can neither
//! change nor read anything; and a crowd of idle connections cannot exhaust the daemon.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use anyhow::{ensure, Context, Result};
use balancer_tests::lab::Lab;

/// The user the CLI runs as: `nobody`.
const NOBODY: &str = "65534";

#[test]
fn another_user_cannot_change_or_read_anything() -> Result<()> {
    let lab = Lab::new("blx5")?;
    lab.service("web", false, &["main"; 2], &[100; 2])?;
    let socket = lab.balancer.socket();
    let meta = std::fs::metadata(&socket)?;
    ensure!(
        meta.permissions().mode() & 0o777 == 0o600 && meta.uid() == 0,
        "socket mode {:o}, owner {}",
        meta.permissions().mode(),
        meta.uid()
    );
    // A copy of the CLI that nobody may run, next to the socket.
    let binary = socket.with_file_name("balancer-for-nobody");
    std::fs::copy(balancer_tests::balancer::binary()?, &binary)?;
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755))?;
    let before = lab.balancer.settings()?;
    let addr = lab.topology.backend_v4(0).to_string();
    for args in [
        vec!["backend", "set-weight", "web", addr.as_str(), "7"],
        vec!["status"],
    ] {
        let out = std::process::Command::new("setpriv")
            .args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups"])
            .arg(&binary)
            .arg("--socket")
            .arg(&socket)
            .args(&args)
            .output()
            .context("run setpriv")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(3)
                && stderr.trim().lines().count() == 1
                && stderr.contains("Permission denied"),
            "`{}` as nobody: {:?} {stderr}",
            args.join(" "),
            out.status
        );
    }
    ensure!(
        lab.balancer.settings()? == before,
        "another user changed the state"
    );
    Ok(())
}

#[test]
fn a_thousand_idle_connections_take_a_bounded_number_of_descriptors() -> Result<()> {
    const IDLE_CONNECTIONS: usize = 1000;
    let lab = Lab::new("blx6")?;
    lab.service("web", false, &["main"; 2], &[100; 2])?;
    let pid = lab.balancer.pid().context("no daemon")?;
    let descriptors =
        || -> Result<usize> { Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count()) };
    let before = descriptors()?;
    let socket = lab.balancer.socket();
    let idle: Vec<std::os::unix::net::UnixStream> = (0..IDLE_CONNECTIONS)
        .map(|_| std::os::unix::net::UnixStream::connect(&socket))
        .collect::<Result<_, _>>()?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    let during = descriptors()?;
    let limit = balancer_user::server::listener::MAX_CONNECTIONS;
    println!("descriptors: {before} before, {during} with {IDLE_CONNECTIONS} idle connections");
    ensure!(
        during <= before + limit,
        "{during} descriptors with {IDLE_CONNECTIONS} idle connections (before: {before})"
    );
    // Gone, they free their places at once: the CLI is served.
    drop(idle);
    let start = std::time::Instant::now();
    lab.balancer.status()?;
    println!("status after the crowd left: {:?}", start.elapsed());
    ensure!(
        descriptors()? <= before + 2,
        "descriptors were not given back"
    );
    Ok(())
}
