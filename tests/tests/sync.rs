//! Flow-state sync (`daemon --sync-listen`): two LB hosts on one segment, in a fleet on a
//! real etcd, the client's route to the VIPs through host A (a next hop switched with
//! `ip route replace`, as a router moves flows when an LB host joins, leaves or dies).
//! Long-lived connections are opened through A, the tables then changed so that they
//! choose other backends for new flows, and the route switched to B: with sync, B knows
//! every connection's backend and none is broken or moved; without it (the control run,
//! which shows the test can fail) connections break or move.

use std::{
    net::{SocketAddr, UdpSocket},
    thread,
    time::Duration,
};

use anyhow::{ensure, Context, Result};
use balancer_tests::{
    lab::Lab,
    netns,
    pair::{Pair, A, B, SYNC_PORT},
    traffic::{BackgroundReport, LongLived},
};
use balancer_user::api::{Status, SyncStatus};

/// Long-lived connections through A.
const CONNECTIONS: usize = 24;

/// Opens [`CONNECTIONS`] long-lived connections through A, changes the tables through A
/// (green only, b2 drained: new flows all go to b3), runs `before_move` once B follows,
/// then moves the client's route to B; reports what the connections saw over B.
fn move_connections(
    pair: &Pair,
    before_move: impl Fn(&Pair) -> Result<()>,
) -> Result<BackgroundReport> {
    let long = LongLived::open(&pair.lab.client, Lab::vip(false), CONNECTIONS, &[])?;
    // The lab's service sends new flows to blue (b0, b1): every connection is on a
    // backend the change takes new flows from.
    let first = long.original_backends().to_vec();
    ensure!(
        first.iter().all(|b| b == "b0" || b == "b1"),
        "connections on green before the change: {first:?}"
    );
    let pings = long.ping_in_background();
    pair.lab.balancer.ok(&["split", "web", "green=100"])?;
    pair.lab
        .balancer
        .ok(&["backend", "set-weight", "web", "198.18.0.103", "0"])?;
    pair.converged()?;
    before_move(pair)?;
    let forwarded = pair.b_packets()?;
    pair.route_via(B)?;
    thread::sleep(Duration::from_secs(3));
    let report = pings.stop();
    let over_b = pair.b_packets()? - forwarded;
    ensure!(
        over_b >= CONNECTIONS as u64,
        "B forwarded only {over_b} packets after the move: the connections did not cross it"
    );
    let answered = report
        .connections
        .iter()
        .filter(|c| c.exchanges > 0)
        .count();
    eprintln!(
        "{CONNECTIONS} connections moved to B ({over_b} packets through it): {} broken, {} \
         moved, {answered} answered",
        report.failed_connections(),
        report.moved_connections()
    );
    Ok(report)
}

/// The sync counters of a host's `status`.
fn sync_of(status: &Status) -> Result<SyncStatus> {
    status
        .sync
        .as_deref()
        .copied()
        .context("status shows no sync")
}

#[test]
fn with_sync_connections_moved_to_another_lb_host_keep_their_backends() -> Result<()> {
    let pair = Pair::new("syon", true)?;
    let report = move_connections(&pair, |pair| {
        // B knows every connection before the route moves (the bench measures how soon).
        pair.until("B inserted every connection's record", |pair| {
            Ok(sync_of(&pair.b.status()?)?.inserted >= CONNECTIONS as u64)
        })
    })?;
    ensure!(
        report.failed_connections() == 0 && report.moved_connections() == 0,
        "connections broken or moved with sync: {report:?}"
    );
    let [a, b] = pair.statuses()?;
    let (a, b) = (sync_of(&a)?, sync_of(&b)?);
    eprintln!("sync of A: {a:?}\nsync of B: {b:?}");
    ensure!(
        a.recorded >= CONNECTIONS as u64 && a.datagrams >= 1,
        "{a:?}"
    );
    ensure!(b.received >= CONNECTIONS as u64 && b.dropped == 0, "{b:?}");
    ensure!(a.overflows == 0 && b.overflows == 0, "{a:?} {b:?}");

    // A datagram from no peer of the fleet is dropped and counted; the sync goes on.
    netns::in_netns(pair.lab.topology.client_ns(), || {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        let to: SocketAddr = format!("{A}:{SYNC_PORT}").parse()?;
        socket.send_to(b"BSYN\x01\x00\x00\x01 not a record", to)?;
        anyhow::Ok(())
    })??;
    pair.until("A counts the stranger's datagram", |pair| {
        Ok(sync_of(&pair.lab.balancer.status()?)?.dropped == 1)
    })?;
    ensure!(pair.lab.balancer.ok(&["status"])?.contains("flow sync on "));
    Ok(())
}

#[test]
fn without_sync_connections_moved_to_another_lb_host_break_or_move() -> Result<()> {
    let pair = Pair::new("syoff", false)?;
    ensure!(pair.lab.balancer.status()?.sync.is_none());
    let report = move_connections(&pair, |_| Ok(()))?;
    ensure!(
        report.failed_connections() + report.moved_connections() >= CONNECTIONS / 4,
        "the control run broke or moved too few connections: the test could not fail: \
         {report:?}"
    );
    Ok(())
}
