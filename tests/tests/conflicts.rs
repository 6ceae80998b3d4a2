//! Operator changes that used to fight each other, reproduced with the real daemon and
//! CLI: a flip during a canary (a later step used to undo the flip) and a flip drain left
//! pending after the operator went back (it used to forget the live group's flows, and
//! their backends' neighbours reset them).

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use balancer_tests::{lab::Lab, traffic::LongLived};
use balancer_user::release::canary::Outcome;

/// Backends b0, b1 are blue; b2, b3 are green.
const GROUPS: [&str; 4] = ["blue", "blue", "green", "green"];

#[test]
fn a_flip_during_a_canary_ends_it_and_no_later_step_undoes_the_flip() -> Result<()> {
    let mut lab = Lab::new("blx1")?;
    let service = lab.service("web", false, &GROUPS, &[100; 4])?;
    lab.start_canary("10,50,100", "1s", &[])?;
    ensure!(lab.shown_split()? == ["blue=90", "green=10"]);
    lab.balancer.ok(&["flip", "web", "--to", "blue"])?;
    // Two intervals later no step came back.
    std::thread::sleep(Duration::from_millis(2500));
    ensure!(
        lab.shown_split()? == ["blue=100", "green=0"],
        "a canary step undid the flip: {:?}",
        lab.shown_split()?
    );
    let status = lab.balancer.status()?;
    let canary = status.services[0].canary.as_ref().context("no canary")?;
    ensure!(
        canary.outcome == Some(Outcome::Overridden)
            && canary.decisions.last().map(|d| d.what.as_str())
                == Some(
                    "ended by the operator's flip to blue: the split is the operator's from now on"
                ),
        "{canary:?}"
    );
    let dist = lab.client.distribution(service, 100, &[])?;
    ensure!(
        dist.counts.keys().all(|b| b == "b0" || b == "b1"),
        "new flows after the flip: {dist:?}"
    );
    // The daemon restarted keeps it that way.
    lab.balancer.restart()?;
    std::thread::sleep(Duration::from_millis(1500));
    ensure!(lab.shown_split()? == ["blue=100", "green=0"]);
    Ok(())
}

#[test]
fn a_pending_flip_drain_never_forgets_the_flows_of_the_group_that_is_live_again() -> Result<()> {
    let lab = Lab::new("blx2")?;
    let service = lab.service("web", false, &GROUPS, &[100; 4])?;
    let long_lived = LongLived::open(&lab.client, service, 30, &[])?;
    let on_b1 = long_lived.count_on("b1");
    ensure!(
        on_b1 > 0,
        "no connection on b1: {:?}",
        long_lived.original_backends()
    );
    let pings = long_lived.ping_in_background();
    lab.balancer
        .ok(&["flip", "web", "--to", "green", "--drain-timeout", "2s"])?;
    // Back to blue by hand, then b1 leaves the table: had the drain still been pending,
    // blue's flows would be balanced afresh at its deadline, and b1's onto b0, which
    // resets them.
    lab.balancer.ok(&["split", "web", "blue=100", "green=0"])?;
    let b1 = lab.topology.backend_v4(1).to_string();
    lab.balancer
        .ok(&["backend", "set-weight", "web", &b1, "0"])?;
    ensure!(
        lab.balancer.status()?.services[0].flip_drain.is_none(),
        "the flip drain is still pending"
    );
    std::thread::sleep(Duration::from_millis(3000));
    let report = pings.stop();
    ensure!(
        report.failed_connections() == 0 && report.moved_connections() == 0,
        "{on_b1} connections on b1; after the drain's deadline: {report:?}"
    );
    Ok(())
}
