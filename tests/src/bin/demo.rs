//! `cargo xtask demo`: a blue/green release through the real balancer, for
//! an operator to watch.
//!
//! Builds a namespace topology with backends blue0, blue1 (group blue) and
//! green0, green1 (group green), runs the daemon on its load balancer host
//! and moves the `web` service's new connections from blue to green in
//! steps of 25 points. Each step's share is measured with fresh
//! connections, while long-lived connections opened before the first step
//! keep talking and must stay on their original backends throughout.
//!
//! Runs as root and needs the daemon built (`cargo build -p
//! balancer-user`). Everything is removed on exit, also on error.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, Result};
use balancer_tests::balancer::Balancer;
use balancer_tests::topology::{Topology, TopologySpec, VIP4};
use balancer_tests::traffic::{
    BackendServer, BackgroundReport, Client, Distribution, LongLived, SERVICE_PORT,
};

/// The service being released.
const SERVICE: &str = "web";

/// The backend groups and their backends, in topology order.
const GROUPS: [(&str, [&str; 2]); 2] = [
    ("blue", ["blue0", "blue1"]),
    ("green", ["green0", "green1"]),
];

/// The rollout: the percentage of new connections per group of [`GROUPS`].
const STEPS: [[u32; 2]; 5] = [[100, 0], [75, 25], [50, 50], [25, 75], [0, 100]];

/// New connections made at each step to measure the shares.
const CONNECTIONS_PER_STEP: usize = 300;

/// Connections opened before the rollout and kept talking during it.
const LONG_LIVED_CONNECTIONS: usize = 20;

/// Largest tolerated gap, in percentage points, between a group's measured
/// and configured share.
const MAX_SHARE_GAP: f64 = 10.0;

fn main() -> ExitCode {
    match run() {
        Ok(problems) if problems.is_empty() => {
            println!("demo: success: every step within {MAX_SHARE_GAP} points, no long-lived connection broke or moved");
            ExitCode::SUCCESS
        }
        Ok(problems) => {
            for problem in problems {
                eprintln!("demo: FAILED: {problem}");
            }
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("demo: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the demo and returns what went wrong with the balancing. The
/// locals are dropped in reverse order: pings, balancer, servers, topology.
fn run() -> Result<Vec<String>> {
    println!(
        "demo: building namespaces: a client, a load balancer host and backends {}",
        backend_names().join(", ")
    );
    let topology = Topology::build(TopologySpec {
        prefix: "demo".to_owned(),
        backends: backend_names()
            .iter()
            .map(|name| name.to_string())
            .collect(),
        extra_clients: 0,
    })?;
    println!("demo: starting the backend servers (each answers with its name)");
    let _servers = BackendServer::start_all(&topology)?;
    println!("demo: starting the balancer daemon on {}", topology.lb_ns());
    let balancer = Balancer::start(&topology)?;
    let service = SocketAddr::new(VIP4, SERVICE_PORT);
    add_service(&balancer, &topology, service)?;
    set_split(&balancer, STEPS[0])?;

    let client = Client::new(topology.client_ns());
    println!(
        "demo: opening {LONG_LIVED_CONNECTIONS} long-lived connections, pinging each every 100 ms"
    );
    let long_lived = LongLived::open(&client, service, LONG_LIVED_CONNECTIONS, &[])?;
    println!(
        "demo: long-lived connections per backend: {}",
        count_per_backend(long_lived.original_backends())
    );
    let pings = long_lived.ping_in_background();

    println!("demo: moving new connections from blue to green, {CONNECTIONS_PER_STEP} new connections per step");
    let mut problems = Vec::new();
    for percents in STEPS {
        problems.extend(rollout_step(&balancer, &client, service, percents)?);
    }

    println!("demo: stopping the long-lived pings");
    problems.extend(check_long_lived(&pings.stop()));
    println!("demo: final `balancer status {SERVICE}`:");
    print!("{}", balancer.ok(&["status", SERVICE])?);
    println!("demo: removing the daemon, the servers and the namespaces");
    Ok(problems)
}

/// Adds the service and every backend, each to its group.
fn add_service(balancer: &Balancer, topology: &Topology, service: SocketAddr) -> Result<()> {
    println!("demo: adding service {SERVICE} on {service}/tcp with groups blue and green");
    balancer.ok(&[
        "service",
        "add",
        SERVICE,
        "--vip",
        &format!("{service}/tcp"),
    ])?;
    for (index, name) in backend_names().into_iter().enumerate() {
        let address = topology.backend_v4(index).to_string();
        balancer.ok(&[
            "backend",
            "add",
            SERVICE,
            &address,
            "--group",
            GROUPS[group_index(name)?].0,
        ])?;
    }
    Ok(())
}

/// Sets the split to `percents` (per group of [`GROUPS`]), returning the
/// `GROUP=PERCENT` arguments used.
fn set_split(balancer: &Balancer, percents: [u32; 2]) -> Result<Vec<String>> {
    let shares: Vec<String> = GROUPS
        .iter()
        .zip(percents)
        .map(|((group, _), percent)| format!("{group}={percent}"))
        .collect();
    let mut args = vec!["split", SERVICE];
    args.extend(shares.iter().map(String::as_str));
    balancer.ok(&args)?;
    Ok(shares)
}

/// Sets the split, measures it with new connections and prints both.
/// Returns a problem if a group's share is off by more than
/// [`MAX_SHARE_GAP`].
fn rollout_step(
    balancer: &Balancer,
    client: &Client,
    service: SocketAddr,
    percents: [u32; 2],
) -> Result<Option<String>> {
    let shares = set_split(balancer, percents)?;
    let distribution = client.distribution(service, CONNECTIONS_PER_STEP, &[])?;
    let measured = measured_shares(&distribution)?;
    let answered = distribution.answered();
    let measured_text: Vec<String> = GROUPS
        .iter()
        .zip(measured)
        .map(|((group, _), share)| format!("{group} {share:.1}%"))
        .collect();
    println!(
        "demo: split {} -> measured {} ({answered} connections)",
        shares.join(" "),
        measured_text.join(" ")
    );
    let largest_gap = measured
        .iter()
        .zip(percents)
        .map(|(share, percent)| (share - f64::from(percent)).abs())
        .fold(0.0, f64::max);
    Ok((largest_gap > MAX_SHARE_GAP).then(|| {
        format!(
            "split {} measured as {}: off by {largest_gap:.1} points",
            shares.join(" "),
            measured_text.join(" ")
        )
    }))
}

/// The percentage of answered connections per group of [`GROUPS`].
fn measured_shares(distribution: &Distribution) -> Result<[f64; 2]> {
    let mut per_group = [0usize; 2];
    for (backend, count) in &distribution.counts {
        per_group[group_index(backend)?] += count;
    }
    let answered = per_group.iter().sum::<usize>().max(1) as f64;
    Ok(per_group.map(|count| count as f64 * 100.0 / answered))
}

/// Prints how many long-lived connections survived on their original
/// backend, with the fate of the others; returns a problem unless all did.
fn check_long_lived(report: &BackgroundReport) -> Option<String> {
    let exchanges: usize = report.connections.iter().map(|c| c.exchanges).sum();
    let mut survived = 0;
    for (index, connection) in report.connections.iter().enumerate() {
        let original = &connection.original_backend;
        if let Some(failure) = &connection.failure {
            println!("demo: long-lived connection {index} (on {original}) broke: {failure}");
        } else if connection.answers_from_other_backends > 0 {
            println!(
                "demo: long-lived connection {index} moved: {} answers came from a backend other than {original}",
                connection.answers_from_other_backends
            );
        } else {
            survived += 1;
        }
    }
    let total = report.connections.len();
    println!(
        "demo: {survived} of {total} long-lived connections survived on their original backend ({exchanges} exchanges)"
    );
    (survived < total)
        .then(|| format!("{} long-lived connections broke or moved", total - survived))
}

/// The index in [`GROUPS`] of the group `backend` belongs to.
fn group_index(backend: &str) -> Result<usize> {
    GROUPS
        .iter()
        .position(|(_, members)| members.contains(&backend))
        .with_context(|| format!("backend {backend:?} is in no group"))
}

/// Every backend name, group by group.
fn backend_names() -> Vec<&'static str> {
    GROUPS
        .iter()
        .flat_map(|(_, members)| members)
        .copied()
        .collect()
}

/// `backends` counted per name, as `blue0 10, blue1 10`.
fn count_per_backend(backends: &[String]) -> String {
    let mut counts = BTreeMap::<&str, usize>::new();
    for backend in backends {
        *counts.entry(backend).or_default() += 1;
    }
    counts
        .iter()
        .map(|(backend, count)| format!("{backend} {count}"))
        .collect::<Vec<_>>()
        .join(", ")
}
