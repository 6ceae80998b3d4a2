//! The daemon's Prometheus metrics, scraped every second by a real Prometheus server in the
//! LB namespace, during a canary step: the shipped dashboard's queries run against it, and
//! its rate of new flows per group matches the connections the test made within 10%. And
//! `--metrics-listen` on an address in use: refused in one line, nothing disturbed.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{ensure, Context, Result};
use balancer_tests::{
    balancer::{DaemonFlags, DaemonOptions},
    http,
    lab::{blue_green_group, Lab},
    netns,
    prometheus::{Prometheus, Sample},
    traffic::LongLived,
};
use serde_json::Value;

/// Where the daemon serves its metrics inside the LB namespace.
const METRICS: &str = "127.0.0.1:9651";

/// The rate window the dashboard's `$__rate_interval` stands for in this test.
const WINDOW_S: f64 = 20.0;

/// New connections per second, and for how long.
const RATE: f64 = 50.0;
const TRAFFIC: Duration = Duration::from_secs(30);

/// Each query of the shipped dashboard, with its panel's title, for service `service`.
fn dashboard_queries(service: &str) -> Result<Vec<(String, String)>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../dashboards/balancer.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().context("panels")? {
        let title = panel["title"].as_str().context("title")?;
        for target in panel["targets"].as_array().context("targets")? {
            let expr = target["expr"].as_str().context("expr")?;
            let expr = expr
                .replace("$service", service)
                .replace("$__rate_interval", &format!("{WINDOW_S}s"));
            queries.push((title.to_string(), expr));
        }
    }
    Ok(queries)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

#[test]
fn prometheus_rates_of_new_flows_per_group_match_the_traffic_of_a_canary_step() -> Result<()> {
    let lab = Lab::with_options(
        "blm1",
        DaemonOptions {
            extra: vec!["--metrics-listen".into(), METRICS.into()],
            ..DaemonOptions::default()
        },
    )?;
    let service = lab.service("web", false, &["blue", "blue", "green", "green"], &[100; 4])?;
    lab.start_canary("25,100", "1h", &[])?;
    let prometheus = Prometheus::start(lab.topology.lb_ns(), "blm1", &[METRICS.parse()?])?;

    // Steady new connections; each answer names its backend, so its group.
    let interval = Duration::from_secs_f64(1.0 / RATE);
    let start = Instant::now();
    let mut answered: Vec<(f64, &'static str)> = Vec::new();
    let mut next = start;
    while start.elapsed() < TRAFFIC {
        let backend = lab.client.ask_once(service, None)?;
        answered.push((unix_now(), blue_green_group(&backend)));
        next += interval;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    // The window ends 3 s before the traffic did, and the scrapes after it are in.
    let at = unix_now() - 3.0;
    std::thread::sleep(Duration::from_secs(2));
    let mut sent: BTreeMap<&str, f64> = BTreeMap::new();
    for (when, group) in &answered {
        if *when > at - WINDOW_S && *when <= at {
            *sent.entry(group).or_default() += 1.0 / WINDOW_S;
        }
    }
    println!("sent per second in the window: {sent:?}");
    ensure!(
        sent.get("green").copied().unwrap_or(0.0) > 5.0,
        "the canary step should give green about a quarter: {sent:?}"
    );

    let queries = dashboard_queries("web")?;
    let mut rates = None;
    for (title, expr) in &queries {
        let samples = prometheus.query(expr, Some(at))?;
        println!("{title}: {expr}\n  -> {samples:?}");
        if title == "New flows/s by group" {
            rates = Some(samples);
        }
    }
    let rates: Vec<Sample> = rates.context("the dashboard has no new-flows panel")?;
    for group in ["blue", "green"] {
        let measured = rates
            .iter()
            .find(|s| s.labels.get("group").map(String::as_str) == Some(group))
            .map(|s| s.value)
            .with_context(|| format!("no rate for {group}: {rates:?}"))?;
        let expected = sent[group];
        ensure!(
            (measured - expected).abs() <= 0.1 * expected,
            "{group}: Prometheus says {measured:.2} new flows/s, the test sent {expected:.2}/s"
        );
    }
    // The canary's state and share, as gauges.
    let canary = prometheus.query("balancer_canary_share{service=\"web\",to=\"green\"}", None)?;
    ensure!(
        canary.len() == 1 && (canary[0].value - 0.25).abs() < 1e-9,
        "canary share: {canary:?}"
    );
    let running = prometheus.query("balancer_canary_state{service=\"web\"} == 1", None)?;
    ensure!(
        running.len() == 1 && running[0].labels["state"] == "running",
        "canary state: {running:?}"
    );
    Ok(())
}

#[test]
fn a_metrics_address_in_use_is_refused_in_one_line_and_the_data_plane_keeps_forwarding(
) -> Result<()> {
    let mut lab = Lab::new("blm2")?;
    let service = lab.weighted_service("web", false, &[100; 4])?;
    let mut long_lived = LongLived::open(&lab.client, service, 10, &[])?;
    let original = long_lived.original_backends().to_vec();
    let with_metrics = DaemonFlags {
        extra: vec!["--metrics-listen".into(), METRICS.into()],
        ..DaemonFlags::default()
    };

    // Something else holds the address: the restarted daemon refuses, in one line.
    lab.balancer.kill9()?;
    let lb_ns = lab.topology.lb_ns().to_string();
    let taken = netns::in_netns(&lb_ns, || std::net::TcpListener::bind(METRICS))??;
    let out = lab.balancer.run_daemon_to_exit(&with_metrics)?;
    ensure!(
        out.code.is_some_and(|c| c != 0)
            && out.stderr.trim().lines().count() == 1
            && out.stderr.contains(METRICS),
        "not a one-line refusal naming {METRICS}: {out:?}"
    );
    ensure!(
        long_lived.ping_all()? == original,
        "connections moved while no daemon ran"
    );

    // Freed, the daemon serves the metrics.
    drop(taken);
    lab.balancer.start_with(&with_metrics)?;
    let answer = http::get(&lb_ns, METRICS.parse()?, "/metrics")?;
    ensure!(
        answer.status == 200
            && answer
                .head
                .contains("content-type: text/plain; version=0.0.4")
            && answer
                .body
                .contains("# TYPE balancer_backend_new_flows_total counter")
            && answer.body.contains("balancer_build_info{version="),
        "not the metrics: {answer:?}"
    );
    ensure!(
        long_lived.ping_all()? == original,
        "connections moved across the restart"
    );
    Ok(())
}
