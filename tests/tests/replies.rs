//! Reply-side signals in the canary analysis, end to end on the routed `nat` lab (the
//! backends' replies pass the LB): a canary whose new group drops the first SYN of every
//! connection, as a backend whose accept queue is full does (the client sends it again a
//! second later), is rolled back by a `handshake-time` check, the verdict naming the
//! signal and its times; with both groups healthy the same plan promotes the canary. A
//! `handshake-time` check on a service whose replies do not pass the LB (`ipip`) is refused
//! in one line.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use balancer_tests::{
    lab::canary_start,
    routed::{Mode, RoutedLab},
    traffic::{NewConnections, StreamReport},
};
use balancer_user::{
    api::ServiceStatus,
    release::{analysis::Signal, canary::Outcome},
};

/// The plan of both canaries: the new group's handshake time (90th percentile) at most 5 ×
/// the old group's, or 50 ms, whichever is larger — the floor keeps a scheduling hiccup of
/// a fraction of a millisecond on a busy test host from failing a healthy group, and is
/// far below the second a dropped SYN costs.
const PLAN: &str = r#"
warmup = "6s"
window = "6s"
min_flows = 10
max_inconclusive = 3

[[check]]
signal = "handshake-time"
max_factor = 5.0
max_ms = 50
"#;

/// Clients opening new connections at once (each waits a second for green).
const STREAMS: usize = 4;

/// Warm-up, a window or two, and the next status.
const VERDICT_WITHIN: Duration = Duration::from_secs(30);

/// A `nat` lab with service web: backend 0 in group blue (all new flows), backend 1 in
/// group green; returns it with the service's address and the analysis file.
fn lab(prefix: &str) -> Result<(RoutedLab, SocketAddr, String)> {
    let lab = RoutedLab::for_mode(prefix, Mode::Nat, 2)?;
    let web = lab.mode_service(
        Mode::Nat,
        "web",
        false,
        "tcp",
        &[],
        &[("blue", 100), ("green", 100)],
    )?;
    lab.balancer.ok(&["split", "web", "blue=100"])?;
    let file = lab.balancer.scratch("analysis.toml");
    std::fs::write(&file, PLAN).context("write the analysis file")?;
    let file = file.to_str().context("analysis file path")?.to_string();
    Ok((lab, web, file))
}

/// Runs [`STREAMS`] streams of new connections to `service` until `done` holds for web's
/// status (polled every 100 ms) or [`VERDICT_WITHIN`] passes; returns web's status then
/// and what the streams saw.
fn under_load(
    lab: &RoutedLab,
    service: SocketAddr,
    done: impl Fn(&ServiceStatus) -> bool,
) -> Result<(ServiceStatus, Vec<StreamReport>)> {
    let streams: Vec<NewConnections> = (0..STREAMS)
        .map(|_| NewConnections::start(&lab.client, service))
        .collect();
    let started = Instant::now();
    let status = loop {
        let services = lab.balancer.status()?.services;
        let status = services
            .into_iter()
            .find(|s| s.name == "web")
            .context("web in status")?;
        if done(&status) || started.elapsed() > VERDICT_WITHIN {
            break status;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let reports = streams.into_iter().map(NewConnections::stop).collect();
    Ok((status, reports))
}

fn ended(s: &ServiceStatus) -> bool {
    s.canary.as_ref().is_some_and(|c| c.outcome.is_some())
}

#[test]
fn a_canary_whose_backend_drops_first_syns_is_rolled_back_on_its_handshake_time() -> Result<()> {
    let (lab, web, file) = lab("brep1")?;
    // A paced listener with a one-connection accept queue drops SYNs too, but under test
    // load the slot an accept frees goes to a fresh SYN far more often than to a
    // retransmit, so the handshakes that complete are mostly fast: the drop is made
    // certain instead.
    lab.drop_first_syns(1)?;
    lab.balancer
        .ok(&canary_start("50,100", "2s", &["--analysis", &file]))?;
    let (status, reports) = under_load(&lab, web, ended)?;
    println!("traffic: {reports:?}");
    let canary = status.canary.clone().context("no canary")?;
    ensure!(
        canary.outcome == Some(Outcome::RolledBack) && canary.step == 0,
        "rolled back at the first step: {:?}",
        canary.decisions
    );
    let last = canary
        .analysis
        .as_ref()
        .and_then(|a| a.last.clone())
        .context("no window")?;
    let time = &last.readings[0];
    let (value, baseline) = (
        time.value.context("green's time")?,
        time.baseline.context("blue's time")?,
    );
    ensure!(
        time.signal == Signal::HandshakeTime && value >= 900.0 && baseline < 50.0,
        "green's dropped SYNs cost it a second, blue answers at once: {last:?}"
    );
    let why = &canary.decisions.last().context("no decision")?.what;
    println!("{why}");
    ensure!(
        why.starts_with("rolled back: analysis: handshake-time ")
            && why.contains(" > limit 50.00 ms (blue "),
        "the verdict names the signal and the times: {why}"
    );
    // Green's answers show handshakes timed from the client's first SYN: a second or more.
    let green = status
        .backends
        .iter()
        .find(|b| b.group == "green")
        .context("green's backend")?;
    let answers = green.answers.clone().context("green's answers")?;
    let slow: u64 = answers
        .handshake_buckets
        .iter()
        .filter(|(bound, _)| bound.is_none())
        .map(|(_, count)| count)
        .sum();
    ensure!(slow > 0, "handshakes above 1 s: {answers:?}");
    let text = lab.balancer.ok(&["status"])?;
    ensure!(
        text.contains("rolled back: analysis: handshake-time"),
        "status shows the reason: {text}"
    );
    Ok(())
}

#[test]
fn a_canary_whose_groups_answer_alike_is_promoted_by_the_same_plan() -> Result<()> {
    let (lab, web, file) = lab("brep2")?;
    // The plan on a service whose replies do not pass the LB: refused in one line.
    let backends = [("blue", 100), ("green", 100)];
    lab.mode_service(Mode::Ipip, "plain", false, "tcp", &[], &backends)?;
    let plain = [
        "canary",
        "start",
        "plain",
        "--from",
        "blue",
        "--to",
        "green",
        "--steps",
        "50,100",
        "--interval",
        "2s",
        "--analysis",
        &file,
    ];
    let out = lab.balancer.cli(&plain)?;
    ensure!(
        out.code == Some(1)
            && out.stderr.trim().lines().count() == 1
            && out.stderr.contains("checks handshake-time")
            && out.stderr.contains("forwards by ipip"),
        "{out:?}"
    );
    let settings = lab.balancer.settings()?;
    let plain = settings
        .iter()
        .find(|s| s.name == "plain")
        .context("plain")?;
    ensure!(plain.canary.is_none(), "no canary: {:?}", plain.canary);
    lab.balancer
        .ok(&canary_start("50,100", "2s", &["--analysis", &file]))?;
    let (status, reports) = under_load(&lab, web, ended)?;
    let canary = status.canary.clone().context("no canary")?;
    ensure!(
        canary.outcome == Some(Outcome::Completed),
        "completed: {:?}",
        canary.decisions
    );
    let whats: Vec<&str> = canary.decisions.iter().map(|d| d.what.as_str()).collect();
    ensure!(
        whats
            .iter()
            .any(|w| w.starts_with("analysis: window passed: handshake-time ")),
        "a window passed on the handshake time: {whats:?}"
    );
    for report in reports {
        report.ensure_served()?;
    }
    Ok(())
}
