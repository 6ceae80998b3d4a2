//! Release operations under load: long-lived connections talking every 100 ms and a
//! steady stream of new connections while the operator changes the data plane.

use anyhow::{ensure, Result};
use balancer_tests::{
    lab::Lab,
    traffic::{LongLived, NewConnections},
};

/// Backends b0, b1 are blue; b2, b3 are green.
const GROUPS: [&str; 4] = ["blue", "blue", "green", "green"];

#[test]
fn blue_green_flip_and_rollback_under_load() -> Result<()> {
    let lab = Lab::new("blr1")?;
    let service = lab.service("web", false, &GROUPS, &[100; 4])?;
    let long_lived = LongLived::open(&lab.client, service, 50, &[])?;
    ensure!(
        long_lived
            .original_backends()
            .iter()
            .all(|b| b == "b0" || b == "b1"),
        "blue was not live before the flip"
    );
    let pings = long_lived.ping_in_background();
    let stream = NewConnections::start(&lab.client, service);

    for (target, members) in [("green", ["b2", "b3"]), ("blue", ["b0", "b1"])] {
        lab.balancer.ok(&["flip", "web", "--to", target])?;
        // Every connection made after the command returned lands on the target group.
        let dist = lab.client.distribution(service, 100, &[])?;
        ensure!(
            dist.errors == 0,
            "{} failed connections after flip",
            dist.errors
        );
        ensure!(
            dist.counts.keys().all(|b| members.contains(&b.as_str())),
            "flip to {target}: new connections reached {:?}",
            dist.counts
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }

    // Flipping to the live group is refused with one line, and changes nothing.
    let before = lab.balancer.status()?.services[0].split.clone();
    let out = lab.balancer.cli(&["flip", "web", "--to", "blue"])?;
    ensure!(
        out.code != Some(0) && out.stderr.trim().lines().count() == 1,
        "{out:?}"
    );
    let out = lab.balancer.cli(&["flip", "web", "--to", "purple"])?;
    ensure!(
        out.code != Some(0) && out.stderr.trim().lines().count() == 1,
        "{out:?}"
    );
    ensure!(
        lab.balancer.status()?.services[0].split == before,
        "refused flip changed the split"
    );

    let streamed = stream.stop();
    let report = pings.stop();
    ensure!(
        streamed.failed == 0 && streamed.answered > 20,
        "new connections: {streamed:?}"
    );
    ensure!(
        report.failed_connections() == 0 && report.moved_connections() == 0,
        "established connections broke or moved: {report:?}"
    );
    Ok(())
}
