//! What a Prometheus scrape of the daemon's `/metrics` costs with many backends: the real
//! daemon with `--metrics-listen`, one service of N backends (static neighbours, no hosts),
//! and `GET /metrics` timed from the LB namespace.

use std::time::Instant;

use anyhow::{ensure, Result};
use balancer_tests::{balancer::DaemonOptions, http, lab::Lab};

use crate::stats::Spread;

/// Namespace prefix of this measurement's lab.
const PREFIX: &str = "bbms";

/// Where the daemon serves its metrics inside the LB namespace.
const METRICS: &str = "127.0.0.1:9651";

/// What scraping cost.
pub struct ScrapeCost {
    /// Backends of the service.
    pub backends: usize,
    /// Wall time of one `GET /metrics`, connect to last byte (ms).
    pub time: Spread,
    /// Size of the answer's body (bytes).
    pub bytes: usize,
    /// Lines of the answer's body.
    pub lines: usize,
}

/// Starts a lab whose daemon serves metrics, gives one service `backends` backends in two
/// groups, and times `scrapes` scrapes.
pub fn measure(backends: usize, scrapes: usize) -> Result<ScrapeCost> {
    let lab = Lab::with_options(
        PREFIX,
        DaemonOptions {
            extra: vec!["--metrics-listen".into(), METRICS.into()],
            ..DaemonOptions::default()
        },
    )?;
    large_service(&lab, backends)?;
    let ns = lab.topology.lb_ns().to_string();
    let first = scrape(&ns)?;
    ensure!(
        first.matches("balancer_backend_new_flows_total{").count() == backends,
        "the metrics do not list {backends} backends"
    );
    let times = (0..scrapes)
        .map(|_| {
            let start = Instant::now();
            scrape(&ns)?;
            Ok(start.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ScrapeCost {
        backends,
        time: Spread::of(times),
        bytes: first.len(),
        lines: first.lines().count(),
    })
}

/// Gives `lab`'s daemon service `web` of `backends` backends (static neighbours, no hosts
/// behind them) in two groups, blue 75 % and green 25 %.
pub fn large_service(lab: &Lab, backends: usize) -> Result<()> {
    let addrs = lab.unanswering_backends(backends)?;
    let group = |half: &[std::net::Ipv4Addr]| {
        half.iter()
            .map(|a| format!("{{ addr = \"{a}\" }}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (blue, green) = addrs.split_at(backends / 2);
    let config = format!(
        "[[service]]\nname = \"web\"\nvip = \"198.19.0.10:80/tcp\"\n\
         [[service.group]]\nname = \"blue\"\npercent = \"75\"\nbackends = [{}]\n\
         [[service.group]]\nname = \"green\"\npercent = \"25\"\nbackends = [{}]\n",
        group(blue),
        group(green)
    );
    let file = lab.balancer.socket().with_file_name("large.toml");
    std::fs::write(&file, config)?;
    lab.balancer.ok(&["apply", "-f", &file.to_string_lossy()])?;
    Ok(())
}

/// `GET /metrics` inside namespace `ns`: the body.
fn scrape(ns: &str) -> Result<String> {
    let answer = http::get(ns, METRICS.parse()?, "/metrics")?;
    ensure!(answer.status == 200, "scrape failed: {answer:?}");
    Ok(answer.body)
}
