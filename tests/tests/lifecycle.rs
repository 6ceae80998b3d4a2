//! The daemon's life on a host (issue 10): what it refuses to start on, a second daemon,
//! a teardown without a daemon, an interface that was deleted and re-created, flags a
//! pinned data plane keeps, and a CLI whose reader goes away.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use balancer_tests::{
    balancer::{
        binary, run_cli, CliOutput, DaemonFlags, VethPass, XdpMode, FAULT, LB_IFACE, REFUSED,
    },
    lab::Lab,
    netns,
    traffic::LongLived,
};

/// Requires exit code `code`, nothing on standard output and exactly one line on standard
/// error, starting with `error:` and containing `expected`.
fn one_line_error(out: &CliOutput, code: i32, expected: &str) -> Result<()> {
    let lines: Vec<&str> = out.stderr.trim().lines().collect();
    ensure!(
        out.code == Some(code)
            && lines.len() == 1
            && lines[0].starts_with("error:")
            && lines[0].contains(expected)
            && out.stdout.is_empty(),
        "expected exit code {code} and one error line with {expected:?}: {out:?}"
    );
    Ok(())
}

/// Whether the daemon's log holds a line containing `text`.
fn logged(lab: &Lab, text: &str) -> Result<bool> {
    Ok(std::fs::read_to_string(lab.balancer.log_path())?.contains(text))
}

/// `ip -details link show eth0` in the LB namespace.
fn lb_link(lab: &Lab) -> Result<String> {
    netns::run(
        lab.topology.lb_ns(),
        &["ip", "-d", "link", "show", LB_IFACE],
    )
}

/// What is left under a pin root: the entries of each of its directories.
fn pinned_under(root: &Path) -> Vec<PathBuf> {
    let dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    dirs.iter()
        .flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten().flatten())
        .map(|entry| entry.path())
        .collect()
}

#[test]
fn a_missing_state_file_does_not_wipe_a_running_data_plane() -> Result<()> {
    let mut lab = Lab::new("blf1")?;
    let service = lab.weighted_service("web", false, &[100; 4])?;
    let mut long_lived = LongLived::open(&lab.client, service, 20, &[])?;
    let original = long_lived.original_backends().to_vec();

    // A restart with a mistyped --state-dir: refused in one line, nothing touched.
    lab.balancer.kill9()?;
    let mistyped = lab.balancer.scratch("mistyped");
    let wrong = DaemonFlags {
        state_dir: Some(mistyped.clone()),
        ..DaemonFlags::default()
    };
    let out = lab.balancer.run_daemon_to_exit(&wrong)?;
    one_line_error(&out, REFUSED, "--empty-state")?;
    ensure!(
        out.stderr
            .contains(&mistyped.join("state.json").display().to_string())
            && out.stderr.contains("serves 1 VIP"),
        "the refusal names neither the state file nor what is served: {out:?}"
    );
    ensure!(
        !mistyped.exists(),
        "the refused daemon created {mistyped:?}"
    );
    ensure!(
        long_lived.ping_all()? == original,
        "established connections lost their backends"
    );
    let dist = lab.client.distribution(service, 200, &[])?;
    ensure!(dist.counts.len() == 4, "new flows: {:?}", dist.counts);

    // Told to, it takes the data plane over with no services.
    let told = DaemonFlags {
        extra: vec!["--empty-state".into()],
        ..wrong
    };
    lab.balancer.start_with(&told)?;
    ensure!(
        lab.balancer.status()?.services.is_empty(),
        "services after --empty-state"
    );
    ensure!(
        logged(&lab, "(--empty-state); its 1 VIP(s) are removed")?,
        "the takeover is not in the log:\n{}",
        lab.balancer.log_tail()
    );
    ensure!(
        lab.client.ask_once(service, None).is_err(),
        "the VIP is still balanced"
    );
    Ok(())
}

#[test]
fn a_second_daemon_on_the_same_interface_pins_or_state_refuses() -> Result<()> {
    let lab = Lab::new("blf2")?;
    let service = lab.weighted_service("web", false, &[100; 4])?;
    let settings = lab.balancer.settings()?;
    let state = std::fs::read(lab.balancer.state_file())?;
    // Another interface of the LB host, for a daemon of its own.
    netns::run(
        lab.topology.lb_ns(),
        &[
            "ip",
            "link",
            "add",
            "blf2other",
            "type",
            "veth",
            "peer",
            "name",
            "blf2peer",
        ],
    )?;
    let socket = lab.balancer.scratch("second.sock");
    let other_pins = PathBuf::from("/sys/fs/bpf/balancer-blf2-second");
    std::fs::remove_dir_all(&other_pins).ok();
    let lb_ns = lab.topology.lb_ns();
    let cases = [
        (
            "same everything",
            lb_ns,
            DaemonFlags::default(),
            format!("interface {LB_IFACE} already has a balancer daemon"),
        ),
        (
            // The client's namespace has an eth0 of its own.
            "same pins and state, another namespace",
            lab.topology.client_ns(),
            DaemonFlags::default(),
            format!(
                "the data plane pinned at {} already has a balancer daemon",
                lab.balancer
                    .pin_root()
                    .join(format!(
                        "v{}",
                        balancer_user::dataplane::bpffs::LAYOUT_VERSION
                    ))
                    .join(LB_IFACE)
                    .display()
            ),
        ),
        (
            "same state directory",
            lb_ns,
            DaemonFlags {
                iface: Some("blf2other".into()),
                pin_dir: Some(other_pins.clone()),
                ..DaemonFlags::default()
            },
            format!(
                "state directory {} is used by another balancer daemon",
                lab.balancer.state_dir().display()
            ),
        ),
        (
            "same interface",
            lb_ns,
            DaemonFlags {
                pin_dir: Some(other_pins.clone()),
                state_dir: Some(lab.balancer.scratch("second-state")),
                ..DaemonFlags::default()
            },
            format!("interface {LB_IFACE} already has a balancer daemon"),
        ),
    ];
    for (case, ns, flags, expected) in cases {
        let flags = DaemonFlags {
            socket: Some(socket.clone()),
            ..flags
        };
        let out = lab.balancer.run_daemon_to_exit_in(ns, &flags)?;
        one_line_error(&out, REFUSED, &expected).context(case)?;
        ensure!(
            !socket.exists(),
            "{case}: the second daemon left its socket"
        );
        ensure!(
            pinned_under(&other_pins).is_empty(),
            "{case}: the second daemon pinned {:?}",
            pinned_under(&other_pins)
        );
    }
    ensure!(
        !lab.balancer.scratch("second-state").exists(),
        "a refused daemon created its state directory"
    );
    // The daemon that got as far as locking blf2other let go of its lock file.
    let left: Vec<_> = std::fs::read_dir("/run/balancer")?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("blf2other."))
        .collect();
    ensure!(left.is_empty(), "lock files left: {left:?}");
    std::fs::remove_dir_all(&other_pins).ok();

    // The first daemon did not notice.
    ensure!(lab.balancer.settings()? == settings, "status changed");
    ensure!(
        std::fs::read(lab.balancer.state_file())? == state,
        "state file changed"
    );
    let dist = lab.client.distribution(service, 200, &[])?;
    ensure!(dist.counts.len() == 4, "new flows: {:?}", dist.counts);
    let b0 = lab.topology.backend_v4(0).to_string();
    lab.balancer
        .ok(&["backend", "set-weight", "web", &b0, "50"])?;
    Ok(())
}

#[test]
fn teardown_without_a_daemon_detaches_and_unpins() -> Result<()> {
    let mut lab = Lab::new("blf3")?;
    let service = lab.weighted_service("web", false, &[100; 4])?;
    lab.client.ask_once(service, None)?;
    let pin_root = lab
        .balancer
        .pin_root()
        .to_str()
        .context("pin root")?
        .to_string();
    let teardown = ["teardown", "--iface", LB_IFACE, "--pin-dir", &pin_root];

    // A daemon runs on those pins, though not on the socket given: refused, nothing removed.
    let elsewhere = lab.balancer.scratch("elsewhere.sock");
    let out = run_cli(&binary()?, &elsewhere, &teardown)?;
    one_line_error(&out, REFUSED, "is served by a running daemon")?;
    ensure!(lb_link(&lab)?.contains("prog/xdp"), "XDP program gone");
    lab.client.ask_once(service, None)?;
    lab.balancer.status()?;

    // No daemon at all: the CLI removes the pins itself.
    lab.balancer.kill9()?;
    let said = lab.balancer.ok(&teardown)?;
    ensure!(said.contains("no daemon was running"), "{said}");
    ensure!(
        pinned_under(lab.balancer.pin_root()).is_empty(),
        "pins left: {:?}",
        pinned_under(lab.balancer.pin_root())
    );
    // The kernel detaches the program once it drops the unpinned link, just after.
    let deadline = Instant::now() + Duration::from_secs(5);
    while lb_link(&lab)?.contains("prog/xdp") {
        ensure!(
            Instant::now() < deadline,
            "XDP program still attached: {}",
            lb_link(&lab)?
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure!(
        lab.client.ask_once(service, None).is_err(),
        "the VIP is still balanced after teardown"
    );
    // Nothing left to remove: said in one line.
    one_line_error(&lab.balancer.cli(&teardown)?, REFUSED, "nothing is pinned")?;
    Ok(())
}

/// An interface deleted and re-created under the daemon (`kill_first`: while it is not
/// running): the restarted daemon attaches anew, and connection tracking survived.
fn survives_an_interface_flap(prefix: &str, kill_first: bool) -> Result<()> {
    let mut lab = Lab::new(prefix)?;
    let service = lab.weighted_service("web", false, &[100; 4])?;
    let mut long_lived = LongLived::open(&lab.client, service, 20, &[])?;
    let original = long_lived.original_backends().to_vec();
    // From now on new flows go to b0 only: flows on b1..b3 reach them only through
    // connection tracking.
    for i in 1..4 {
        let addr = lab.topology.backend_v4(i).to_string();
        lab.balancer
            .ok(&["backend", "set-weight", "web", &addr, "0"])?;
    }
    if kill_first {
        lab.balancer.kill9()?;
    }
    lab.flap_lb_interface()?;
    ensure!(
        !lb_link(&lab)?.contains("prog/xdp"),
        "the new interface has a program"
    );
    lab.balancer.restart()?;
    ensure!(
        logged(&lab, "was severed (its interface was deleted)")?,
        "the new attachment is not in the log:\n{}",
        lab.balancer.log_tail()
    );
    let dist = lab.client.distribution(service, 100, &[])?;
    ensure!(
        dist.counts.keys().all(|b| b == "b0"),
        "new flows: {:?}",
        dist.counts
    );
    ensure!(
        long_lived.ping_all()? == original,
        "established connections lost their backends"
    );
    Ok(())
}

#[test]
fn a_recreated_interface_is_attached_anew_keeping_connection_tracking() -> Result<()> {
    survives_an_interface_flap("blf4", false)
}

#[test]
fn a_recreated_interface_is_attached_anew_after_kill_9() -> Result<()> {
    survives_an_interface_flap("blf5", true)
}

#[test]
fn bad_interfaces_pin_nothing() -> Result<()> {
    let lab = Lab::new("blf6")?;
    let service = lab.weighted_service("web", false, &[100; 4])?;
    let escape = Path::new("/sys/fs/bpf/blf6x");
    std::fs::remove_dir_all(escape).ok();
    let state_dir = lab.balancer.scratch("bad-state");
    for (iface, expected) in [
        ("nosuch0", "no interface named \"nosuch0\""),
        ("../../blf6x", "bad interface name \"../../blf6x\""),
        ("sixteen-bytes-00", "bad interface name"),
    ] {
        let flags = DaemonFlags {
            iface: Some(iface.into()),
            socket: Some(lab.balancer.scratch("bad.sock")),
            state_dir: Some(state_dir.clone()),
            ..DaemonFlags::default()
        };
        let out = lab.balancer.run_daemon_to_exit(&flags)?;
        one_line_error(&out, REFUSED, expected).context(iface)?;
        ensure!(!escape.exists(), "{iface}: {escape:?} was created");
        let pinned: Vec<_> = pinned_under(lab.balancer.pin_root())
            .into_iter()
            .filter(|p| !p.ends_with(LB_IFACE))
            .collect();
        ensure!(pinned.is_empty(), "{iface}: pinned {pinned:?}");
        ensure!(!state_dir.exists(), "{iface}: state directory created");
    }

    // An interface that runs another XDP program: the attach fails (a fault, one line), and
    // the maps this start created are unpinned again.
    let lb_ns = lab.topology.lb_ns();
    netns::run(
        lb_ns,
        &[
            "ip", "link", "add", "blf6a", "type", "veth", "peer", "name", "blf6b",
        ],
    )?;
    netns::run(lb_ns, &["ip", "link", "set", "blf6a", "up"])?;
    let _other_program = VethPass::attach(lb_ns, "blf6a")?;
    let out = lab.balancer.run_daemon_to_exit(&DaemonFlags {
        iface: Some("blf6a".into()),
        socket: Some(lab.balancer.scratch("busy.sock")),
        state_dir: Some(lab.balancer.scratch("busy-state")),
        ..DaemonFlags::default()
    })?;
    one_line_error(&out, FAULT, "attach the XDP program")?;
    let pinned: Vec<_> = pinned_under(lab.balancer.pin_root())
        .into_iter()
        .filter(|p| !p.ends_with(LB_IFACE))
        .collect();
    ensure!(pinned.is_empty(), "a failed attach left {pinned:?}");
    lab.balancer.status()?;
    let dist = lab.client.distribution(service, 200, &[])?;
    ensure!(dist.counts.len() == 4, "new flows: {:?}", dist.counts);
    Ok(())
}

#[test]
fn flags_a_pinned_data_plane_keeps_are_ignored_with_a_warning() -> Result<()> {
    let mut lab = Lab::new("blf8")?;
    let service = lab.weighted_service("web", false, &[100; 4])?;
    // Flags a pinned data plane keeps: ignored, with one warning each naming what is kept.
    lab.balancer.start_with(&DaemonFlags {
        conntrack_size: Some(1024),
        mode: Some(XdpMode::Skb),
        ..DaemonFlags::default()
    })?;
    for warning in [
        "--conntrack-size 1024 ignored: the pinned connection tracking holds 65536 flows",
        "--xdp-mode skb ignored: the pinned program runs in native mode",
    ] {
        ensure!(
            logged(&lab, warning)?,
            "no warning {warning:?} in the log:\n{}",
            lab.balancer.log_tail()
        );
    }
    let link = lb_link(&lab)?;
    ensure!(
        link.contains("prog/xdp ") && !link.contains("xdpgeneric"),
        "not in native mode: {link}"
    );
    let dist = lab.client.distribution(service, 200, &[])?;
    ensure!(dist.counts.len() == 4, "new flows: {:?}", dist.counts);
    Ok(())
}

/// Runs the CLI with `args` and standard output a pipe nobody reads any more; bounded.
fn cli_into_closed_pipe(socket: &Path, args: &[&str]) -> Result<CliOutput> {
    let (reader, writer) = std::io::pipe()?;
    drop(reader);
    let mut child = Command::new(binary()?)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            child.kill()?;
            child.wait()?;
            bail!("`balancer {}` did not exit", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output()?;
    Ok(CliOutput {
        code: out.status.code(),
        stdout: String::new(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

#[test]
fn a_reader_that_goes_away_ends_the_cli_quietly() -> Result<()> {
    let lab = Lab::new("blf7")?;
    lab.weighted_service("web", false, &[100; 4])?;
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["service", "list"],
        &["export"],
    ] {
        let out = cli_into_closed_pipe(&lab.balancer.socket(), args)?;
        ensure!(
            out.code == Some(0) && out.stderr.is_empty(),
            "`balancer {}` into a closed pipe: {out:?}",
            args.join(" ")
        );
    }
    Ok(())
}

#[test]
fn a_binary_of_another_map_layout_refuses_and_leaves_the_data_plane_alone() -> Result<()> {
    use aya::maps::{Array, IterableMap, MapData, MapInfo};

    let mut lab = Lab::new("blf9")?;
    let service = lab.weighted_service("web", false, &[100; 4])?;
    let mut long_lived = LongLived::open(&lab.client, service, 20, &[])?;
    let original = long_lived.original_backends().to_vec();
    lab.balancer.kill9()?;
    // The previous layout's data plane pinned for the same interface, as an older binary
    // leaves it: its directory and a map pinned in it.
    let ours = balancer_user::dataplane::bpffs::LAYOUT_VERSION;
    let theirs = ours - 1;
    let other = lab
        .balancer
        .pin_root()
        .join(format!("v{theirs}"))
        .join("eth0");
    std::fs::create_dir_all(other.join("maps"))?;
    let pinned = other.join("maps").join("VIPS");
    let map = Array::<MapData, u32>::create(4, 0).context("create a map")?;
    IterableMap::map(&map).pin(&pinned)?;
    let id = MapInfo::from_pin(&pinned)?.id();
    drop(map);
    let out = lab.balancer.run_daemon_to_exit(&DaemonFlags::default())?;
    one_line_error(&out, REFUSED, "balancer teardown --iface eth0")?;
    ensure!(
        out.stderr.contains(&format!("map layout v{theirs}"))
            && out.stderr.contains(&format!("uses layout v{ours}"))
            && out.stderr.contains(&other.display().to_string())
            && out.stderr.contains("then start this one"),
        "the refusal does not name both layouts, the pins and what to do: {out:?}"
    );
    ensure!(
        MapInfo::from_pin(&pinned)?.id() == id,
        "the older data plane's map was touched"
    );
    ensure!(
        long_lived.ping_all()? == original,
        "established connections lost their backends"
    );
    let dist = lab.client.distribution(service, 100, &[])?;
    ensure!(dist.counts.len() == 4, "new flows: {:?}", dist.counts);
    // The other layout gone (what its binary's teardown does: unpin), the daemon starts
    // and finds its own data plane as it was.
    std::fs::remove_file(&pinned)?;
    std::fs::remove_dir(other.join("maps"))?;
    std::fs::remove_dir(&other)?;
    std::fs::remove_dir(other.parent().expect("version directory"))?;
    lab.balancer.restart()?;
    ensure!(long_lived.ping_all()? == original, "after the restart");
    Ok(())
}
