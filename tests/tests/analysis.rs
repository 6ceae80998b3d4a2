//! Analysis-gated canaries end to end with the real daemon and CLI: a new group whose
//! backends refuse connections is rolled back by the analysis within two windows, with the
//! measured ratios in `status`; a healthy one completes; a step without traffic holds and
//! then fails; a Prometheus query gate (against a real Prometheus scraping the daemon) and
//! a webhook gate, each once passing and once failing.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use balancer_tests::{
    balancer::DaemonOptions,
    lab::{blue_green_group, Lab},
    prometheus::Prometheus,
    traffic::NewConnections,
    webhook::Webhook,
};
use balancer_user::{api::ServiceStatus, release::canary::Outcome};

/// Analysis windows short enough for a test: 6 s of warm-up (the least), windows of 6 s, 20 new flows.
const FAST: &[&str] = &["--warmup", "6s", "--window", "6s", "--min-flows", "20"];

/// Where the daemon serves its metrics inside the LB namespace.
const METRICS: &str = "127.0.0.1:9652";

/// Where the webhook receiver listens inside the LB namespace.
const WEBHOOK: &str = "127.0.0.1:9653";

fn outcome(s: &ServiceStatus) -> Option<Outcome> {
    s.canary.as_ref().and_then(|c| c.outcome)
}

/// A lab with web = blue, blue, green, green and every new flow on blue.
fn blue_only(lab: &Lab) -> Result<std::net::SocketAddr> {
    let service = lab.service("web", false, &["blue", "blue", "green", "green"], &[100; 4])?;
    lab.balancer.ok(&["split", "web", "blue=100"])?;
    Ok(service)
}

/// The last decision of web's canary.
fn last_decision(lab: &Lab) -> Result<String> {
    let status = lab.balancer.status()?;
    let canary = status.services[0].canary.clone().context("no canary")?;
    Ok(canary.decisions.last().context("no decision")?.what.clone())
}

/// New connections after a rollback reach blue only.
fn all_on_blue(lab: &Lab, service: std::net::SocketAddr) -> Result<()> {
    for _ in 0..20 {
        let backend = lab.client.ask_once(service, None)?;
        ensure!(
            blue_green_group(&backend) == "blue",
            "{backend} after the rollback"
        );
    }
    Ok(())
}

#[test]
fn a_new_group_that_refuses_connections_is_rolled_back_within_two_windows() -> Result<()> {
    let mut lab = Lab::new("bla1")?;
    let service = blue_only(&lab)?;
    lab.stop_server(2);
    lab.stop_server(3);
    let stream = NewConnections::start(&lab.client, service);
    lab.start_canary("50,100", "2s", FAST)?;
    // A client port whose connection green refused: its SYN stays in connection tracking.
    let refused_port = (41_000..41_100)
        .find(|&port| lab.client.ask_from_port(service, port).is_err())
        .context("no connection reached green")?;
    // Warm-up, two windows, and the once-a-second count of unanswered handshakes.
    let took = lab.wait_until(Duration::from_secs(21), "an analysis rollback", |s| {
        outcome(s) == Some(Outcome::RolledBack)
    })?;
    let report = stream.stop();
    println!("rolled back after {took:?}; traffic: {report:?}");
    let status = lab.balancer.status()?;
    let canary = status.services[0].canary.clone().context("no canary")?;
    ensure!(
        canary.step == 0,
        "no step was taken: {:?}",
        canary.decisions
    );
    let last = canary
        .analysis
        .as_ref()
        .and_then(|a| a.last.clone())
        .context("no window")?;
    let failures = &last.readings[0];
    ensure!(
        failures.value > failures.limit && last.counted.to.new_flows >= 20,
        "the refused handshakes are over the limit: {last:?}"
    );
    let text = lab.balancer.ok(&["status"])?;
    ensure!(
        text.contains("rolled back: analysis: handshake-failures")
            && text.contains("> limit 0.50% (blue 0.00%)"),
        "status shows the reason and the ratios: {text}"
    );
    // The client's next connection from that port is a new connection: blue serves it.
    let backend = lab.client.ask_from_port(service, refused_port)?;
    ensure!(
        blue_green_group(&backend) == "blue",
        "{backend} from port {refused_port}"
    );
    let events = lab.balancer.ok(&["events", "web"])?;
    ensure!(
        events.lines().any(|l| l
            .contains("daemon  web  canary: rolled back: analysis: handshake-failures")
            && l.contains("> limit 0.50% (blue 0.00%)")),
        "the event history has the rollback with the ratios: {events}"
    );
    all_on_blue(&lab, service)
}

#[test]
fn a_healthy_canary_completes_and_a_silent_one_holds_then_fails() -> Result<()> {
    let lab = Lab::new("bla2")?;
    let service = blue_only(&lab)?;
    let stream = NewConnections::start(&lab.client, service);
    lab.start_canary("50,100", "2s", FAST)?;
    lab.wait_until(Duration::from_secs(25), "completion", |s| {
        outcome(s) == Some(Outcome::Completed)
    })?;
    let report = stream.stop();
    report.ensure_served()?;
    let status = lab.balancer.status()?;
    let canary = status.services[0].canary.clone().context("no canary")?;
    let whats: Vec<&str> = canary.decisions.iter().map(|d| d.what.as_str()).collect();
    ensure!(
        whats
            .iter()
            .any(|w| w.starts_with("analysis: window passed: handshake-failures 0.00%"))
            && whats.contains(&"interval elapsed, analysis passed; step 2/2: 100.00% to green"),
        "{whats:?}"
    );

    // No traffic at all: each window has no verdict; the second in a row fails.
    lab.balancer.ok(&["split", "web", "blue=100"])?;
    lab.start_canary(
        "50,100",
        "1s",
        &[
            "--warmup",
            "6s",
            "--window",
            "5s",
            "--min-flows",
            "10",
            "--max-inconclusive",
            "2",
        ],
    )?;
    let held = lab.wait_until(Duration::from_secs(4), "a held step", |s| {
        s.canary
            .as_ref()
            .is_some_and(|c| c.step == 0 && c.outcome.is_none())
    });
    held?;
    let took = lab.wait_until(Duration::from_secs(22), "a rollback without data", |s| {
        outcome(s) == Some(Outcome::RolledBack)
    })?;
    let why = last_decision(&lab)?;
    println!("rolled back after {took:?}: {why}");
    ensure!(
        why.starts_with(
            "rolled back: analysis: 2 windows in a row without a verdict: green 0 new flows"
        ) && took >= Duration::from_secs(14),
        "{why} after {took:?}"
    );
    let status = lab.balancer.status()?;
    let canary = status.services[0].canary.clone().context("no canary")?;
    ensure!(
        canary.decisions.iter().any(|d| d
            .what
            .contains("holding, window without a verdict (1 of 2)")),
        "the first empty window held the step: {:?}",
        canary.decisions
    );
    all_on_blue(&lab, service)
}

/// Writes an analysis file for `lab` and returns its path.
fn analysis_file(name: &str, gates: &str) -> Result<String> {
    let path = std::env::temp_dir().join(format!("balancer-analysis-{name}.toml"));
    let text =
        format!("warmup = \"6s\"\nwindow = \"6s\"\nmin_flows = 20\nmax_inconclusive = 3\n{gates}");
    std::fs::write(&path, text)?;
    Ok(path.display().to_string())
}

#[test]
fn a_prometheus_gate_fails_one_canary_and_passes_the_next() -> Result<()> {
    let lab = Lab::with_options(
        "bla3",
        DaemonOptions {
            extra: vec!["--metrics-listen".into(), METRICS.into()],
            ..DaemonOptions::default()
        },
    )?;
    let service = blue_only(&lab)?;
    let prometheus = Prometheus::start(lab.topology.lb_ns(), "bla3", &[METRICS.parse()?])?;
    let url = prometheus.url();
    // Green's weights sum to 200: a bound of 100 fails, one of 1000 passes.
    let query = "sum(balancer_backend_weight{service=\\\"web\\\",group=\\\"green\\\"})";
    let failing = analysis_file(
        "bla3-fail",
        &format!("[[prometheus]]\nurl = \"{url}\"\nquery = \"{query}\"\nmax = 100\n"),
    )?;
    let passing = analysis_file(
        "bla3-pass",
        &format!("[[prometheus]]\nurl = \"{url}\"\nquery = \"{query}\"\nmax = 1000\n"),
    )?;
    let stream = NewConnections::start(&lab.client, service);
    lab.start_canary("50,100", "2s", &["--analysis", &failing])?;
    lab.wait_until(Duration::from_secs(25), "a rollback by the gate", |s| {
        outcome(s) == Some(Outcome::RolledBack)
    })?;
    let why = last_decision(&lab)?;
    ensure!(
        why.contains(&format!(
            "prometheus {}: 200 > max 100",
            query.replace('\\', "")
        )) && why.contains("handshake-failures 0.00% <= limit"),
        "{why}"
    );
    lab.start_canary("50,100", "2s", &["--analysis", &passing])?;
    lab.wait_until(
        Duration::from_secs(25),
        "completion with the gate's go",
        |s| outcome(s) == Some(Outcome::Completed),
    )?;
    stream.stop().ensure_served()?;
    let status = lab.balancer.status()?;
    let canary = status.services[0].canary.clone().context("no canary")?;
    let gates = canary
        .analysis
        .and_then(|a| a.last)
        .map(|l| l.gates)
        .unwrap_or_default();
    ensure!(
        gates.len() == 1 && gates[0].detail == "200 within bounds",
        "{gates:?}"
    );
    // The last window, as Prometheus scraped it: a pass, green without handshake failures
    // under a limit of 0.5%.
    std::thread::sleep(Duration::from_secs(2));
    let verdict = prometheus.query(
        "balancer_canary_analysis_verdict{service=\"web\"} == 1",
        None,
    )?;
    ensure!(
        verdict.len() == 1 && verdict[0].labels["verdict"] == "pass",
        "{verdict:?}"
    );
    let ratio = prometheus.query(
        "balancer_canary_analysis_ratio{service=\"web\",signal=\"handshake-failures\",group=\"green\"}",
        None,
    )?;
    let limit = prometheus.query(
        "balancer_canary_analysis_limit{service=\"web\",signal=\"handshake-failures\"}",
        None,
    )?;
    ensure!(
        ratio.len() == 1 && ratio[0].value == 0.0 && limit.len() == 1 && limit[0].value == 0.005,
        "{ratio:?} {limit:?}"
    );
    Ok(())
}

#[test]
fn a_webhook_says_no_to_one_canary_and_go_to_the_next() -> Result<()> {
    let lab = Lab::new("bla4")?;
    let service = blue_only(&lab)?;
    let webhook = Webhook::start(lab.topology.lb_ns(), WEBHOOK.parse()?)?;
    let file = analysis_file(
        "bla4",
        &format!(
            "[[webhook]]\nurl = \"{}\"\nbefore = \"promotion\"\n",
            webhook.url()
        ),
    )?;
    let stream = NewConnections::start(&lab.client, service);
    webhook.answer_with(503);
    lab.start_canary("50,100", "2s", &["--analysis", &file])?;
    lab.wait_until(Duration::from_secs(25), "a rollback by the webhook", |s| {
        outcome(s) == Some(Outcome::RolledBack)
    })?;
    let why = last_decision(&lab)?;
    ensure!(
        why.starts_with(
            "rolled back: analysis: webhook said no: webhook http://127.0.0.1:9653/gate: HTTP 503"
        ),
        "{why}"
    );
    webhook.answer_with(200);
    lab.start_canary("50,100", "2s", &["--analysis", &file])?;
    lab.wait_until(
        Duration::from_secs(25),
        "completion with the webhook's go",
        |s| outcome(s) == Some(Outcome::Completed),
    )?;
    stream.stop().ensure_served()?;
    let bodies = webhook.bodies();
    ensure!(bodies.len() == 2, "asked once per canary: {bodies:?}");
    let body = &bodies[1];
    ensure!(
        body["service"] == "web"
            && body["phase"] == "promotion"
            && body["to"] == "green"
            && body["percent"] == "100.00"
            && body["last_window"]["verdict"] == "pass",
        "the rollout's context: {body}"
    );
    Ok(())
}

#[test]
fn a_rollout_removes_a_new_backend_whose_handshakes_fail_and_keeps_the_old_one() -> Result<()> {
    let lab = Lab::with_backends("bla5", 5)?;
    let service = lab.service("web", false, &["main"; 4], &[100; 4])?;
    lab.enable_checks("web", "tcp", 1, 2)?;
    // Backend 4 passes its health checks (on its own address) but resets every connection
    // to the VIP: a release whose new version listens on the wrong address.
    let reject = format!(
        "add table inet bla5; \
         add chain inet bla5 input {{ type filter hook input priority 0; }}; \
         add rule inet bla5 input ip daddr {} tcp dport {} reject with tcp reset",
        service.ip(),
        service.port()
    );
    balancer_tests::netns::run(lab.topology.backend_ns(4), &["nft", &reject])?;
    let stream = NewConnections::start(&lab.client, service);
    lab.start_rollout(
        &[(0, 4)],
        false,
        &[
            "--analyze",
            "--warmup",
            "6s",
            "--window",
            "6s",
            "--min-flows",
            "10",
        ],
    )?;
    lab.wait_until(Duration::from_secs(30), "the rollout's end", |s| {
        s.rollout.as_ref().is_some_and(|r| r.outcome.is_some())
    })?;
    let report = stream.stop();
    println!(
        "traffic: {} answered, {} failed",
        report.answered, report.failed
    );
    let status = lab.balancer.status()?;
    let rollout = status.services[0].rollout.clone().context("no rollout")?;
    let (old, new) = (lab.topology.backend_v4(0), lab.topology.backend_v4(4));
    let why = &rollout.decisions.last().context("no decision")?.what;
    ensure!(
        rollout.outcome == Some(balancer_user::release::rollout::RolloutOutcome::Failed)
            && why.starts_with(&format!("failed: {new}: analysis: handshake-failures"))
            && why.ends_with(&format!("removed {new}, {old} keeps serving")),
        "{rollout:?}"
    );
    let backends = &status.services[0].backends;
    ensure!(
        !backends.iter().any(|b| b.addr == new)
            && backends
                .iter()
                .any(|b| b.addr == old && b.weight == 100 && b.drain.is_none()),
        "the new backend is gone, the old one serves at its weight: {backends:?}"
    );
    for _ in 0..20 {
        lab.client.ask_once(service, None)?;
    }
    Ok(())
}
