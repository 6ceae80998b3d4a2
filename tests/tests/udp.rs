//! UDP services end to end, where a flow that moves is not reset but silently answered by
//! another backend: long-lived UDP flows must keep their backend through weight changes, a
//! flip and its rollback, while new flows follow the tables.

use std::{collections::BTreeMap, net::SocketAddr};

use anyhow::{ensure, Result};
use balancer_tests::{lab::Lab, traffic::Client};

/// Asks `service` over UDP once from each client port of `ports` (ranges of the phases
/// of a test do not overlap, so each ask is a new flow); counts the answers per backend.
/// Every ask must be answered.
fn udp_distribution(
    client: &Client,
    service: SocketAddr,
    ports: std::ops::Range<u16>,
) -> Result<BTreeMap<String, usize>> {
    let mut counts = BTreeMap::new();
    for port in ports {
        *counts
            .entry(client.ask_udp_from_port(service, port)?)
            .or_insert(0) += 1;
    }
    Ok(counts)
}

#[test]
fn udp_flows_keep_their_backend_through_weight_changes_and_flips() -> Result<()> {
    for (prefix, v6) in [("blu4", false), ("blu6", true)] {
        let lab = Lab::new(prefix)?;
        let service = lab.udp_service(
            "dns",
            v6,
            &["blue", "blue", "green", "green"],
            &[100, 300, 100, 100],
        )?;
        // New flows follow the weights of the live group (blue: b0 25%, b1 75%).
        let counts = udp_distribution(&lab.client, service, 20_000..22_000)?;
        let b1 = counts.get("b1").copied().unwrap_or(0) as f64 / 20.0;
        println!("{prefix}: {counts:?}, b1 {b1:.1}%");
        ensure!(
            counts.keys().all(|b| b == "b0" || b == "b1"),
            "{prefix}: green at 0% got new flows: {counts:?}"
        );
        ensure!(
            (b1 - 75.0).abs() <= 5.0,
            "{prefix}: b1 got {b1:.1}%, weight says 75%"
        );

        // Long-lived UDP flows, talking every 100 ms through every change below.
        let long_lived =
            balancer_tests::traffic::LongLived::open_udp(&lab.client, service, 40, &[])?;
        let originals: Vec<String> = long_lived.original_backends().to_vec();
        ensure!(
            originals.iter().any(|b| b == "b0") && originals.iter().any(|b| b == "b1"),
            "{prefix}: the long-lived flows should start on both blue backends: {originals:?}"
        );
        let pings = long_lived.ping_in_background();

        let b1_addr = if v6 {
            lab.topology.backend_v6(1)
        } else {
            lab.topology.backend_v4(1)
        };
        lab.balancer
            .ok(&["backend", "set-weight", "dns", &b1_addr.to_string(), "0"])?;
        let counts = udp_distribution(&lab.client, service, 22_000..22_200)?;
        ensure!(
            counts.keys().all(|b| b == "b0"),
            "{prefix}: after b1's weight 0, new flows went to {counts:?}"
        );
        lab.balancer.ok(&["flip", "dns", "--to", "green"])?;
        let counts = udp_distribution(&lab.client, service, 22_200..22_400)?;
        ensure!(
            counts.keys().all(|b| b == "b2" || b == "b3") && counts.len() == 2,
            "{prefix}: after the flip, new flows went to {counts:?}"
        );
        lab.balancer.ok(&["flip", "dns", "--to", "blue"])?;
        let counts = udp_distribution(&lab.client, service, 22_400..22_600)?;
        ensure!(
            counts.keys().all(|b| b == "b0"),
            "{prefix}: after the rollback, new flows went to {counts:?}"
        );
        std::thread::sleep(std::time::Duration::from_secs(1));
        let report = pings.stop();
        ensure!(
            report.failed_connections() == 0 && report.moved_connections() == 0,
            "{prefix}: long-lived UDP flows broke or moved: {report:?}"
        );
        ensure!(
            report.connections.iter().all(|c| c.exchanges >= 10),
            "{prefix}: long-lived UDP flows did not keep talking: {report:?}"
        );
    }
    Ok(())
}
