//! Health checks end to end: HTTP checks decide on the answer's status (not on the open
//! port), a backend flapping at the auto-rollback threshold rolls a canary back exactly
//! when the threshold is reached (and not below it), and a pin to a group whose backends
//! are all down sends its clients along the split until the group serves again.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use balancer_tests::lab::Lab;
use balancer_user::{
    api::{Health, ServiceStatus},
    basis_points::BasisPoints,
    release::canary::Outcome,
};

/// How long a health change may take to show on a loaded machine (checks run every
/// 200 ms; the figures are a bound, not a measurement).
const HEALTH_LIMIT: Duration = Duration::from_secs(5);

fn health_of(service: &ServiceStatus, backend: usize) -> Option<Health> {
    service.backends[backend].health
}

fn all_up(service: &ServiceStatus) -> bool {
    (0..service.backends.len()).all(|i| health_of(service, i) == Some(Health::Up))
}

/// Shares of the split in basis points, in group order.
fn split_of(service: &ServiceStatus) -> Vec<u16> {
    service.split.iter().map(|g| g.percent.get()).collect()
}

#[test]
fn http_checks_take_out_a_backend_that_answers_an_error_and_bring_it_back() -> Result<()> {
    let lab = Lab::new("blh1")?;
    let service = lab.service("web", false, &["main"; 4], &[100; 4])?;
    lab.enable_checks("web", "http:/healthz", 2, 2)?;
    lab.wait_until(HEALTH_LIMIT, "all up", all_up)?;

    // b1 still accepts connections and answers the line protocol; only its HTTP answer
    // says it is unwell.
    lab.set_http_status(1, 503)?;
    lab.wait_until(HEALTH_LIMIT, "b1 down", |s| {
        health_of(s, 1) == Some(Health::Down)
    })?;
    let status = lab.balancer.status()?;
    let b1 = &status.services[0].backends[1];
    ensure!(
        b1.health_error.as_deref() == Some("http status 503 Service Unavailable")
            && b1.effective_share == 0.0,
        "{b1:?}"
    );
    let dist = lab.client.distribution(service, 200, &[])?;
    ensure!(
        !dist.counts.contains_key("b1") && dist.counts.len() == 3,
        "{dist:?}"
    );

    // A redirection counts as healthy.
    lab.set_http_status(1, 302)?;
    lab.wait_until(HEALTH_LIMIT, "b1 up again", |s| {
        health_of(s, 1) == Some(Health::Up)
    })?;
    let dist = lab.client.distribution(service, 200, &[])?;
    ensure!(dist.counts.len() == 4, "{dist:?}");

    // A bad path is refused with one line and changes nothing.
    let before = lab.balancer.settings()?;
    lab.balancer
        .refused(&["service", "set", "web", "--health", "http:healthz"])?;
    ensure!(
        lab.balancer.settings()? == before,
        "a refused check changed"
    );
    Ok(())
}

/// Takes backend `i` down with HTTP 503 and waits until the daemon sees it down.
fn fail(lab: &Lab, i: usize) -> Result<()> {
    lab.set_http_status(i, 503)?;
    lab.wait_until(HEALTH_LIMIT, &format!("b{i} down"), |s| {
        health_of(s, i) == Some(Health::Down)
    })?;
    Ok(())
}

/// Brings backend `i` back with HTTP 200 and waits until the daemon sees it up.
fn heal(lab: &Lab, i: usize) -> Result<()> {
    lab.set_http_status(i, 200)?;
    lab.wait_until(HEALTH_LIMIT, &format!("b{i} up"), |s| {
        health_of(s, i) == Some(Health::Up)
    })?;
    Ok(())
}

#[test]
fn a_canary_rolls_back_when_flapping_reaches_the_threshold_and_not_below() -> Result<()> {
    // b0 is blue; b1..b4 are green. Threshold 50%: two of the four green backends.
    let lab = Lab::with_backends("blh2", 5)?;
    let groups = ["blue", "green", "green", "green", "green"];
    lab.service("web", false, &groups, &[100; 5])?;
    lab.enable_checks("web", "http:/healthz", 1, 1)?;
    lab.wait_until(HEALTH_LIMIT, "all up", all_up)?;
    lab.start_canary(
        "10,20",
        "10m",
        &["--auto-rollback", "--rollback-threshold", "50"],
    )?;
    let running = |s: &ServiceStatus| s.canary.as_ref().is_some_and(|c| c.outcome.is_none());

    // One backend flapping is 25% at worst: the canary goes on at its step.
    for _ in 0..3 {
        fail(&lab, 1)?;
        heal(&lab, 1)?;
    }
    let status = lab.balancer.status()?;
    let web = &status.services[0];
    ensure!(
        running(web) && split_of(web) == [9000, 1000],
        "flapping below the threshold stopped the canary: {:?}",
        web.canary
    );

    // A second backend down for good, the first flapping: the first time both are down
    // (50%) the canary rolls back.
    fail(&lab, 2)?;
    ensure!(
        running(&lab.balancer.status()?.services[0]),
        "25% rolled back"
    );
    lab.set_http_status(1, 503)?;
    lab.wait_until(HEALTH_LIMIT, "rollback", |s| {
        s.canary
            .as_ref()
            .is_some_and(|c| c.outcome == Some(Outcome::RolledBack))
    })?;
    let status = lab.balancer.status()?;
    let web = &status.services[0];
    let canary = web.canary.as_ref().context("canary")?;
    ensure!(
        canary.decisions.last().map(|d| d.what.as_str())
            == Some(
                "rolled back: 2 of 4 backends of green fail their health checks (threshold 50.00%)"
            ),
        "{:?}",
        canary.decisions
    );
    ensure!(split_of(web) == [10_000, 0], "{:?}", web.split);

    // Green recovering does not restart a canary that rolled back.
    heal(&lab, 1)?;
    heal(&lab, 2)?;
    std::thread::sleep(Duration::from_millis(600));
    let status = lab.balancer.status()?;
    let web = &status.services[0];
    ensure!(
        split_of(web) == [10_000, 0]
            && web.canary.as_ref().and_then(|c| c.outcome) == Some(Outcome::RolledBack),
        "{web:?}"
    );
    Ok(())
}

#[test]
fn a_pin_to_a_group_with_every_backend_down_follows_the_split_until_it_serves() -> Result<()> {
    let lab = Lab::with_extra_clients("blh3", 1)?;
    let service = lab.service("web", false, &["blue", "blue", "green", "green"], &[100; 4])?;
    let tester = lab.topology.extra_client_v4(0);
    lab.balancer.ok(&[
        "pin",
        "add",
        "web",
        &format!("{tester}/32"),
        "--group",
        "green",
    ])?;
    lab.enable_checks("web", "http:/healthz", 1, 1)?;
    lab.wait_until(HEALTH_LIMIT, "all up", all_up)?;
    let reached = |count: usize| -> Result<Vec<String>> {
        (0..count)
            .map(|_| lab.client.ask_once(service, Some(tester)))
            .collect()
    };
    let answers = reached(20)?;
    ensure!(
        answers.iter().all(|b| b == "b2" || b == "b3"),
        "the pin did not reach green: {answers:?}"
    );

    fail(&lab, 2)?;
    fail(&lab, 3)?;
    let answers = reached(20)?;
    ensure!(
        answers.iter().all(|b| b == "b0" || b == "b1"),
        "a pin to a group without a serving backend must follow the split: {answers:?}"
    );
    let status = lab.balancer.status()?;
    ensure!(
        split_of(&status.services[0]) == [BasisPoints::ALL.get(), 0],
        "the split changed: {:?}",
        status.services[0].split
    );

    // One green backend serves again: the pin takes the tester back there.
    heal(&lab, 3)?;
    let answers = reached(20)?;
    ensure!(
        answers.iter().all(|b| b == "b3"),
        "the pin did not return to green's serving backend: {answers:?}"
    );
    Ok(())
}

#[test]
fn a_restarted_daemon_starts_from_the_stored_health() -> Result<()> {
    let mut lab = Lab::new("blh4")?;
    let service = lab.service("web", false, &["main"; 4], &[100; 4])?;
    lab.enable_checks("web", "http:/healthz", 1, 2)?;
    lab.wait_until(HEALTH_LIMIT, "all up", all_up)?;
    fail(&lab, 1)?;
    let before = lab.balancer.status()?.services[0].backends[1].clone();
    lab.balancer.kill9()?;
    lab.balancer.restart()?;
    // The first answer of the restarted daemon already has b1 down, since the same time.
    let after = lab.balancer.status()?.services[0].backends[1].clone();
    ensure!(
        after.health == Some(Health::Down)
            && after.health_changed_at_ms == before.health_changed_at_ms
            && after.health_error == before.health_error
            && after.effective_share == 0.0,
        "before the restart {before:?}, after {after:?}"
    );
    let dist = lab.client.distribution(service, 100, &[])?;
    ensure!(!dist.counts.contains_key("b1"), "{dist:?}");
    Ok(())
}

#[test]
fn checks_turned_on_for_a_serving_service_take_no_backend_out_until_it_fails() -> Result<()> {
    let lab = Lab::new("blh5")?;
    let service = lab.service("web", false, &["main"; 4], &[100; 4])?;
    // Slow checks: a backend that started down would stay out for seconds.
    lab.balancer.ok(&[
        "service",
        "set",
        "web",
        "--health",
        "tcp",
        "--health-interval",
        "3s",
        "--rise",
        "2",
    ])?;
    let status = lab.balancer.status()?;
    ensure!(
        all_up(&status.services[0]),
        "{:?}",
        status.services[0].backends
    );
    let dist = lab.client.distribution(service, 40, &[])?;
    ensure!(
        dist.counts.len() == 4,
        "new connections reach every backend: {dist:?}"
    );
    ensure!(lab.balancer.status()?.counters.dropped == 0, "none dropped");
    Ok(())
}
