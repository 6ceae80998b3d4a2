//! The event history with the real daemon and CLI: a flip made with the CLI shows in
//! `events --follow` as the operator's (uid 0); a canary's steps and backends' health
//! changes are the daemon's; `events NAME` shows one service; the history survives a
//! restart and its numbering goes on; bad arguments give one line; `--log-format json`
//! writes JSON lines.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc::{self, Receiver},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use balancer_tests::{
    balancer::{binary, Balancer, DaemonFlags, DaemonOptions},
    lab::Lab,
};
use balancer_user::{
    api::Health,
    history::{Event, Who},
    release::canary::Outcome,
};

/// Backends b0, b1 are blue; b2, b3 are green.
const GROUPS: [&str; 4] = ["blue", "blue", "green", "green"];

/// How long an event may take to show, or a follower to stop.
const LIMIT: Duration = Duration::from_secs(10);

/// `balancer --socket SOCKET args...` in the background, its standard output piped.
fn spawn_cli(balancer: &Balancer, args: &[&str]) -> Result<Child> {
    Command::new(binary()?)
        .arg("--socket")
        .arg(balancer.socket())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start balancer {}", args.join(" ")))
}

/// `balancer events --follow ...` running, its lines read as they come.
struct Follower {
    child: Child,
    lines: Receiver<String>,
}

impl Follower {
    fn start(balancer: &Balancer, args: &[&str]) -> Result<Self> {
        let mut child = spawn_cli(balancer, args)?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Self { child, lines })
    }

    /// Reads lines until one that `wanted` takes, for at most [`LIMIT`].
    fn wait_for(&self, what: &str, wanted: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if wanted(&line) => return Ok(line),
                Ok(_) => {}
                Err(_) => bail!("{what} not shown within {LIMIT:?}"),
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `events ARGS --json`, parsed.
fn events(balancer: &Balancer, args: &[&str]) -> Result<Vec<Event>> {
    let text = balancer.ok(&[&["events", "--json"][..], args].concat())?;
    text.lines()
        .map(|line| serde_json::from_str(line).with_context(|| format!("not an event: {line}")))
        .collect()
}

/// The first event whose `what` is `what`.
fn find<'a>(events: &'a [Event], what: &str) -> Result<&'a Event> {
    events
        .iter()
        .find(|e| e.what == what)
        .with_context(|| format!("no event {what:?} in {events:#?}"))
}

#[test]
fn a_flip_made_with_the_cli_shows_in_events_follow_as_uid_0() -> Result<()> {
    let lab = Lab::new("bhi1")?;
    lab.service("web", false, &GROUPS, &[100; 4])?;
    let follower = Follower::start(&lab.balancer, &["events", "--follow"])?;
    // What happened before it started comes first.
    follower.wait_for("the service's creation", |line| {
        line.contains("  uid 0  web  service added (198.19.0.1:80/tcp, connection affinity)")
    })?;
    lab.balancer.ok(&["flip", "web", "--to", "green"])?;
    let line = follower.wait_for("the flip", |line| line.contains("flipped to green"))?;
    ensure!(
        line.ends_with(
            "  uid 0  web  flipped to green  \
             (split: blue=100.00% green=0.00% -> split: blue=0.00% green=100.00%)"
        ),
        "{line}"
    );
    let events = events(&lab.balancer, &["web"])?;
    let flip = find(&events, "flipped to green")?;
    ensure!(
        flip.who == Who::Uid(0) && flip.service.as_deref() == Some("web"),
        "{flip:?}"
    );
    // A refused flip is no event.
    lab.balancer.refused(&["flip", "web", "--to", "green"])?;
    let after = self::events(&lab.balancer, &["web"])?;
    ensure!(after == events, "a refused change was recorded: {after:#?}");
    drop(follower);

    // A follower whose reader goes away stops, though no event comes.
    let mut child = spawn_cli(&lab.balancer, &["--timeout", "5s", "events", "--follow"])?;
    let mut first = String::new();
    let mut stdout = BufReader::new(child.stdout.take().context("no stdout")?);
    stdout.read_line(&mut first)?;
    ensure!(first.contains("daemon started"), "{first}");
    drop(stdout);
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("events --follow still runs {LIMIT:?} after its reader went away");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    ensure!(status.success(), "events --follow ended with {status}");

    // Bad arguments: one line each, nothing changed.
    for bad in [
        &["events", "a b"][..],
        &["events", "web", "dns"],
        &["events", "--bogus"],
        &["daemon", "--iface", "eth0", "--log-format", "xml"],
    ] {
        lab.balancer.refused(bad)?;
    }
    ensure!(self::events(&lab.balancer, &["web"])? == events);
    Ok(())
}

#[test]
fn steps_and_health_changes_are_the_daemons_each_service_has_its_own_and_a_restart_keeps_them(
) -> Result<()> {
    let options = DaemonOptions {
        extra: vec!["--log-format".into(), "json".into()],
        ..DaemonOptions::default()
    };
    let mut lab = Lab::with_options("bhi2", options)?;
    lab.service("web", false, &GROUPS, &[100; 4])?;
    lab.enable_checks("web", "tcp", 1, 1)?;
    let all_up = |s: &balancer_user::api::ServiceStatus| {
        s.backends.iter().all(|b| b.health == Some(Health::Up))
    };
    lab.wait_until(LIMIT, "every backend up", all_up)?;
    lab.start_canary("50,100", "1s", &[])?;
    lab.wait_until(LIMIT, "the canary's end", |s| {
        s.canary
            .as_ref()
            .is_some_and(|c| c.outcome == Some(Outcome::Completed))
    })?;
    let b3 = lab.topology.backend_v4(3);
    lab.stop_server(3);
    lab.wait_until(LIMIT, "b3 down", |s| {
        s.backends[3].health == Some(Health::Down)
    })?;
    lab.start_server(3)?;
    lab.wait_until(LIMIT, "b3 up again", |s| {
        s.backends[3].health == Some(Health::Up)
    })?;
    // A second service, after the first (`wait_until` watches the first in name order).
    lab.udp_service("dns", false, &["main"], &[100])?;

    let web = events(&lab.balancer, &["web"])?;
    let by = |what: &str| find(&web, what).map(|e| e.who);
    ensure!(
        by("canary started from blue to green: steps 50.00%,100.00% every 1s")? == Who::Uid(0)
            && by("canary: started; step 1/2: 50.00% to green")? == Who::Uid(0),
        "the canary's start is the operator's: {web:#?}"
    );
    let step = find(&web, "canary: interval elapsed; step 2/2: 100.00% to green")?;
    ensure!(
        step.who == Who::Daemon
            && step
                .after
                .as_deref()
                .is_some_and(|a| a.contains("split: blue=0.00% green=100.00%")),
        "{step:?}"
    );
    ensure!(by("canary: completed: every step done")? == Who::Daemon);
    let down = web
        .iter()
        .find(|e| e.what.starts_with(&format!("backend {b3} down")))
        .with_context(|| format!("no health event of {b3}: {web:#?}"))?;
    ensure!(
        down.who == Who::Daemon
            && down.before.as_deref() == Some(&*format!("backend {b3}: up"))
            && down.after.as_deref() == Some(&*format!("backend {b3}: down")),
        "{down:?}"
    );
    // Checks turned on for serving backends keep them up: b3's return is the only rise.
    let up = format!("backend {b3} up");
    ensure!(by(&up)? == Who::Daemon, "{up}");
    let ups = web
        .iter()
        .filter(|e| e.what.starts_with("backend ") && e.what.ends_with(" up"))
        .count();
    ensure!(ups == 1, "one backend came up, b3: {web:#?}");
    ensure!(web.iter().all(|e| e.service.as_deref() == Some("web")));
    let dns = events(&lab.balancer, &["dns"])?;
    ensure!(
        !dns.is_empty() && dns.iter().all(|e| e.service.as_deref() == Some("dns")),
        "{dns:#?}"
    );

    // A restart keeps every event, and numbering goes on after them.
    let before = events(&lab.balancer, &[])?;
    ensure!(
        before.windows(2).all(|w| w[0].seq < w[1].seq),
        "not in order: {before:#?}"
    );
    lab.balancer.terminate()?;
    lab.balancer.start_with(&DaemonFlags::default())?;
    let b0 = lab.topology.backend_v4(0).to_string();
    lab.balancer
        .ok(&["backend", "set-weight", "web", &b0, "7"])?;
    let after = events(&lab.balancer, &[])?;
    ensure!(
        after.starts_with(&before),
        "events lost or changed by the restart: {after:#?}"
    );
    // (Leaving out health changes, which a loaded machine may add at any time.)
    let new: Vec<&str> = after[before.len()..]
        .iter()
        .map(|e| e.what.as_str())
        .filter(|what| !what.starts_with("backend "))
        .collect();
    let weight = format!("weight of {b0} set to 7");
    ensure!(
        new == [
            "daemon terminated: the data plane stays up",
            "daemon started: the running data plane taken over",
            &weight
        ],
        "after the restart: {new:?}"
    );
    ensure!(after.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
    println!("{}", lab.balancer.ok(&["events"])?);

    // The log is JSON lines.
    let log = std::fs::read_to_string(lab.balancer.log_path())?;
    let mut messages = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let record: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        messages.push(
            record["fields"]["message"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
    }
    ensure!(
        messages.iter().any(|m| m == "backend health changed")
            && messages.iter().any(|m| m == "data plane ready"),
        "{messages:?}"
    );
    Ok(())
}
