//! What ships for installing it: shell completion scripts and the manual page, generated
//! from the command-line definitions with no daemon running; the systemd unit
//! (`packaging/balancer.service`: it verifies, its capabilities are enough and each is
//! needed, readiness and stopping reach the service manager); and the daemon's config file
//! (`--config`), with which the daemon runs from the file alone.

use std::{
    os::unix::net::UnixDatagram,
    process::{Command, Output},
    time::Duration,
};

use anyhow::{ensure, Context, Result};
use balancer_tests::{
    balancer::{binary, DaemonFlags, LB_IFACE},
    http,
    lab::Lab,
    netns,
};

/// The systemd unit as shipped.
const UNIT: &str = include_str!("../../packaging/balancer.service");

/// The unit's command line, with the binary where the README installs it.
const EXEC_START: &str =
    "ExecStart=/usr/local/bin/balancer daemon --config /etc/balancer/daemon.toml";

fn balancer(args: &[&str]) -> Result<Output> {
    Ok(Command::new(binary()?).args(args).output()?)
}

#[test]
fn completions_name_every_command_and_bash_parses_its_script() -> Result<()> {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = balancer(&["completions", shell])?;
        let script = String::from_utf8(out.stdout)?;
        ensure!(out.status.success(), "{shell}: {out:?}", out = out.status);
        for word in ["undrain", "canary", "rollout", "metrics-listen"] {
            ensure!(script.contains(word), "{shell}: no {word:?} in the script");
        }
        if shell == "bash" {
            let path = std::env::temp_dir().join("balancer-completion.bash");
            std::fs::write(&path, &script)?;
            let check = Command::new("bash").arg("-n").arg(&path).output()?;
            ensure!(check.status.success(), "bash -n: {check:?}");
        }
    }
    let out = balancer(&["completions", "tcsh"])?;
    ensure!(
        out.status.code() == Some(2) && String::from_utf8_lossy(&out.stderr).contains("tcsh"),
        "an unknown shell is a usage error: {out:?}"
    );
    Ok(())
}

#[test]
fn the_manual_pages_are_roff_one_per_command() -> Result<()> {
    let out = balancer(&["man"])?;
    ensure!(out.status.success(), "{out:?}");
    let page = String::from_utf8(out.stdout)?;
    ensure!(
        page.contains(".TH balancer 1") && page.contains(".SH SUBCOMMANDS"),
        "not the top page: {page}"
    );
    let dir = std::env::temp_dir().join("balancer-man");
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir)?;
    let out = balancer(&["man", "--dir", &dir.to_string_lossy()])?;
    ensure!(out.status.success(), "{out:?}");
    for name in [
        "balancer",
        "balancer-daemon",
        "balancer-backend-undrain",
        "balancer-canary-start",
        "balancer-teardown",
    ] {
        let page = std::fs::read_to_string(dir.join(format!("{name}.1")))?;
        ensure!(
            page.contains(&format!(".TH {name} 1")),
            "{name}.1 is not its page"
        );
    }
    let out = balancer(&["man", "--dir", "/nonexistent/man"])?;
    ensure!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).trim().lines().count() == 1,
        "an unwritable directory is one line: {out:?}"
    );
    Ok(())
}

/// `systemd-analyze verify` of `unit` written as `balancer.service` in `dir`, with the
/// manual pages of `dir/man` (the unit's `Documentation=` must name a page there): its
/// output.
fn verify(dir: &std::path::Path, unit: &str) -> Result<Output> {
    let path = dir.join("balancer.service");
    std::fs::write(&path, unit)?;
    Ok(Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .env("MANPATH", dir.join("man"))
        .output()?)
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() -> Result<()> {
    let lines: Vec<&str> = UNIT.lines().collect();
    ensure!(
        lines.contains(&"Type=notify"),
        "the unit is not Type=notify"
    );
    let starts: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("ExecStart="))
        .collect();
    ensure!(
        starts == [&EXEC_START],
        "ExecStart is not {EXEC_START}: {starts:?}"
    );
    // `verify` needs ExecStart's binary to exist, and /usr/local/bin/balancer is not
    // installed here: verify a copy that starts the binary under test instead, the only
    // change.
    let tested = format!(
        "ExecStart={} daemon --config /etc/balancer/daemon.toml",
        binary()?.display()
    );
    let copy = UNIT.replace(EXEC_START, &tested);
    let dir = std::env::temp_dir().join("balancer-unit");
    std::fs::remove_dir_all(&dir).ok();
    let pages = dir.join("man/man1");
    std::fs::create_dir_all(&pages)?;
    let out = balancer(&["man", "--dir", &pages.to_string_lossy()])?;
    ensure!(out.status.success(), "balancer man: {out:?}");
    let out = verify(&dir, &copy)?;
    ensure!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "systemd-analyze verify: {out:?}"
    );
    // The check sees mistakes: an unknown setting is reported (with exit code 0).
    let broken = copy.replace("Type=notify", "Type=notify\nProtectKernelTunable=yes");
    let out = verify(&dir, &broken)?;
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("ProtectKernelTunable"),
        "a misspelt setting went unseen: {out:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

/// The capabilities of the unit's `CapabilityBoundingSet=`, as `setpriv` names them
/// (`bpf`, `net_admin`, ...).
fn unit_capabilities() -> Result<Vec<String>> {
    let line = UNIT
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .context("the unit has no CapabilityBoundingSet=")?;
    Ok(line
        .split_whitespace()
        .map(|cap| cap.trim_start_matches("CAP_").to_lowercase())
        .collect())
}

/// The lab daemon's command line (with `flags`) run with only the capabilities `caps`
/// (as root, as the unit runs it).
fn limited(lab: &Lab, caps: &[&String], flags: &DaemonFlags) -> Result<Vec<String>> {
    let caps: Vec<String> = caps.iter().map(|cap| format!("+{cap}")).collect();
    let mut argv = vec![
        "setpriv".to_string(),
        format!("--bounding-set=-all,{}", caps.join(",")),
        "--inh-caps=-all".into(),
        "--".into(),
    ];
    argv.extend(lab.balancer.argv(flags)?);
    Ok(argv)
}

/// Tears the lab's daemon down (detached, unpinned, exited) and forgets the LB's
/// neighbours, so that the next start loads, attaches and resolves anew.
fn from_nothing(lab: &mut Lab) -> Result<()> {
    if lab.balancer.is_running() {
        lab.balancer.ok(&["teardown"])?;
        lab.balancer.wait_exit()?;
    }
    std::fs::remove_dir_all(lab.balancer.pin_root()).ok();
    netns::run(lab.topology.lb_ns(), &["ip", "neigh", "flush", "all"])?;
    Ok(())
}

#[test]
fn the_units_capabilities_are_enough_and_each_is_needed() -> Result<()> {
    let mut lab = Lab::new("blp1")?;
    let caps = unit_capabilities()?;
    ensure!(caps.len() >= 3, "capabilities: {caps:?}");
    let all: Vec<&String> = caps.iter().collect();

    // Enough: a new data plane is loaded and attached, a backend is resolved (the ICMP echo),
    // traffic flows, and a restart takes the pinned data plane over.
    from_nothing(&mut lab)?;
    lab.balancer
        .spawn_argv(&limited(&lab, &all, &DaemonFlags::default())?, &[])?;
    lab.balancer.wait_answering()?;
    let service = lab.service("web", false, &["main"], &[100])?;
    lab.client.ask_once(service, None)?;
    lab.balancer.terminate()?;
    lab.balancer
        .spawn_argv(&limited(&lab, &all, &DaemonFlags::default())?, &[])?;
    lab.balancer.wait_answering()?;
    lab.client.ask_once(service, None)?;

    // Each is needed: without it the start or the first backend fails.
    for dropped in &caps {
        from_nothing(&mut lab)?;
        let fewer: Vec<&String> = caps.iter().filter(|cap| cap != &dropped).collect();
        let flags = DaemonFlags {
            state_dir: Some(lab.balancer.scratch(&format!("state-without-{dropped}"))),
            ..DaemonFlags::default()
        };
        lab.balancer
            .spawn_argv(&limited(&lab, &fewer, &flags)?, &[])?;
        let failed = match lab.balancer.wait_answering() {
            Err(_) => true,
            Ok(()) => lab.service("web", false, &["main"], &[100]).is_err(),
        };
        ensure!(
            failed,
            "the daemon ran and resolved a backend without {dropped}"
        );
    }
    Ok(())
}

/// Whether an XDP program is attached to the LB's interface.
fn xdp_attached(lab: &Lab) -> Result<bool> {
    let json = netns::run(
        lab.topology.lb_ns(),
        &["ip", "-json", "link", "show", LB_IFACE],
    )?;
    let links: serde_json::Value = serde_json::from_str(&json)?;
    Ok(links[0].get("xdp").is_some())
}

/// The next notification the daemon sent to `manager` (20 s at most).
fn notification(manager: &UnixDatagram) -> Result<String> {
    let mut buffer = [0u8; 4096];
    let len = manager
        .recv(&mut buffer)
        .context("no notification from the daemon")?;
    Ok(String::from_utf8_lossy(&buffer[..len]).into_owned())
}

#[test]
fn readiness_reaches_the_service_manager_once_the_daemon_serves_and_stopping_at_its_end(
) -> Result<()> {
    let mut lab = Lab::new("blp2")?;
    from_nothing(&mut lab)?;
    ensure!(!xdp_attached(&lab)?, "a program is still attached");
    let path = lab.balancer.scratch("notify.sock");
    let manager = UnixDatagram::bind(&path)?;
    manager.set_read_timeout(Some(Duration::from_secs(20)))?;
    let socket = path.to_str().context("socket path")?;
    let argv = lab.balancer.argv(&DaemonFlags::default())?;

    // A start from nothing, stopped by SIGTERM; then a restart on the pinned data plane,
    // stopped by `teardown`.
    for (start, stop) in [("new", "SIGTERM"), ("pinned", "teardown")] {
        lab.balancer
            .spawn_argv(&argv, &[("NOTIFY_SOCKET", socket)])?;
        let ready = notification(&manager)?;
        ensure!(
            ready.lines().any(|line| line == "READY=1"),
            "{start}: the first notification is not READY=1: {ready:?}"
        );
        // At that moment the data plane is attached and the control socket answers.
        ensure!(xdp_attached(&lab)?, "{start}: READY=1 before the attach");
        let status = lab.balancer.status()?;
        ensure!(status.services.is_empty(), "{start}: {status:?}");
        match stop {
            "SIGTERM" => lab.balancer.terminate()?,
            _ => {
                lab.balancer.ok(&["teardown"])?;
                lab.balancer.wait_exit()?;
            }
        }
        let stopping = notification(&manager)?;
        ensure!(
            stopping.lines().any(|line| line == "STOPPING=1"),
            "{start}: after {stop} the next notification is not STOPPING=1: {stopping:?}"
        );
    }
    manager.set_nonblocking(true)?;
    let more = manager.recv(&mut [0u8; 64]);
    ensure!(
        more.as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "more notifications than READY and STOPPING: {more:?}"
    );
    Ok(())
}

#[test]
fn the_daemon_runs_from_its_config_file_alone() -> Result<()> {
    const METRICS: &str = "127.0.0.1:9661";
    let mut lab = Lab::new("blp3")?;
    let service = lab.service("web", false, &["main"], &[100])?;
    let b = &lab.balancer;
    let file = b.scratch("daemon.toml");
    // The lab's settings, every one from the file (conntrack_size 65536 is the lab's, not
    // the default, which the pinned data plane would refuse with a warning).
    let text = format!(
        "iface = \"{LB_IFACE}\"\nxdp_mode = \"native\"\nstate_dir = {:?}\nsocket = {:?}\n\
         pin_dir = {:?}\nconntrack_size = 65536\nflow_idle = 2\nretire_timeout = \"10m\"\n\
         metrics_listen = \"{METRICS}\"\n",
        b.state_dir(),
        b.socket(),
        b.pin_root(),
    );
    std::fs::write(&file, &text)?;
    let file_arg = file.to_string_lossy().into_owned();
    let bin = binary()?.to_string_lossy().into_owned();
    let alone = vec![
        bin.clone(),
        "daemon".into(),
        "--config".into(),
        file_arg.clone(),
    ];
    lab.balancer.spawn_argv(&alone, &[])?;
    lab.balancer.wait_answering()?;

    // The file's socket answers; its state dir and pins hold the service, which serves.
    let status = lab.balancer.status()?;
    ensure!(
        status.services.len() == 1 && status.services[0].name == "web",
        "{status:?}"
    );
    lab.client.ask_once(service, None)?;
    let lb_ns = lab.topology.lb_ns().to_string();
    let metrics = http::get(&lb_ns, METRICS.parse()?, "/metrics")?;
    ensure!(
        metrics.status == 200 && metrics.body.contains("balancer_backend_new_flows_total"),
        "metrics at the file's address: {metrics:?}"
    );
    let log = std::fs::read_to_string(lab.balancer.log_path())?;
    ensure!(
        !log.contains("ignored"),
        "the file's conntrack_size and xdp_mode are the pinned ones: {}",
        lab.balancer.log_tail()
    );

    // A flag on the command line wins over the file.
    const OTHER: &str = "127.0.0.1:9662";
    let mut flagged = alone.clone();
    flagged.extend(["--metrics-listen".to_string(), OTHER.to_string()]);
    lab.balancer.spawn_argv(&flagged, &[])?;
    lab.balancer.wait_answering()?;
    ensure!(http::get(&lb_ns, OTHER.parse()?, "/metrics")?.status == 200);
    ensure!(
        http::get(&lb_ns, METRICS.parse()?, "/metrics").is_err(),
        "the file's metrics address is still served"
    );

    // Bad files: one line naming the file (and key), exit 1, the running daemon untouched
    // (each refused start runs with the lab's flags too: were it not refused, it would
    // meet the running daemon's locks, never the host's interfaces).
    let before = lab.balancer.settings()?;
    let bad = lab.balancer.scratch("bad.toml");
    let refused = |config: &std::path::Path| {
        lab.balancer.run_daemon_to_exit(&DaemonFlags {
            extra: vec!["--config".into(), config.to_string_lossy().into_owned()],
            ..DaemonFlags::default()
        })
    };
    for (content, says) in [
        (
            format!("{text}colour = \"blue\"\n"),
            "unknown key `colour`".to_string(),
        ),
        (
            text.replace("flow_idle = 2", "flow_idle = \"2s\""),
            "flow_idle must be an integer".to_string(),
        ),
        (
            text.replace("retire_timeout = \"10m\"", "retire_timeout = \"soon\""),
            "retire_timeout: invalid value 'soon'".to_string(),
        ),
    ] {
        std::fs::write(&bad, &content)?;
        let out = refused(&bad)?;
        ensure!(
            out.code == Some(1)
                && out.stderr.trim().lines().count() == 1
                && out
                    .stderr
                    .starts_with(&format!("error: {}: {says}", bad.display())),
            "{says}: {out:?}"
        );
    }
    // No interface anywhere (run outside the lab: it needs none to be refused).
    let no_iface = lab.balancer.scratch("no-iface.toml");
    std::fs::write(&no_iface, "flow_idle = 2\n")?;
    let out = balancer(&["daemon", "--config", &no_iface.to_string_lossy()])?;
    ensure!(
        out.status.code() == Some(1)
            && String::from_utf8_lossy(&out.stderr)
                == format!(
                    "error: {}: no iface, and no --iface given\n",
                    no_iface.display()
                ),
        "no iface: {out:?}"
    );
    let missing = lab.balancer.scratch("missing.toml");
    let out = refused(&missing)?;
    ensure!(
        out.code == Some(1)
            && out.stderr.trim().lines().count() == 1
            && out.stderr.contains(&missing.display().to_string()),
        "a missing file: {out:?}"
    );
    ensure!(
        lab.balancer.settings()? == before,
        "a refused start changed the daemon"
    );
    lab.client.ask_once(service, None)?;
    Ok(())
}
