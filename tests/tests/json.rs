//! `--json` on every read command: the real binary's output against a running daemon,
//! parsed into the API's types (`status`, `service list`, `pin list`, `rollout status`).

use anyhow::{ensure, Context, Result};
use balancer_tests::lab::Lab;
use balancer_user::{
    api::{PinEntry, ServiceEntry, Status},
    release::rollout::Rollout,
};

/// `balancer ARGS... --json`, parsed as `T`.
fn json<T: serde::de::DeserializeOwned>(lab: &Lab, args: &[&str]) -> Result<T> {
    let text = lab.balancer.ok(&[args, &["--json"]].concat())?;
    serde_json::from_str(&text).with_context(|| format!("{args:?} --json printed {text}"))
}

#[test]
fn every_read_command_prints_json_of_the_apis_types() -> Result<()> {
    let lab = Lab::new("blj1")?;
    lab.service("web", false, &["main", "main"], &[100, 100])?;
    lab.balancer
        .ok(&["pin", "add", "web", "198.18.2.0/24", "--group", "main"])?;

    let status: Status = json(&lab, &["status"])?;
    ensure!(
        status.services.len() == 1 && status.services[0].backends.len() == 2,
        "{status:?}"
    );
    let named: Status = json(&lab, &["status", "web"])?;
    ensure!(named.services == status.services, "{named:?}");

    let services: Vec<ServiceEntry> = json(&lab, &["service", "list"])?;
    ensure!(
        services.len() == 1
            && services[0].name == "web"
            && services[0].vip == status.services[0].vip
            && services[0].affinity == status.services[0].affinity,
        "service list: {services:?}"
    );

    let pins: Vec<PinEntry> = json(&lab, &["pin", "list"])?;
    ensure!(
        pins == [PinEntry {
            service: "web".into(),
            cidr: "198.18.2.0/24".into(),
            group: "main".into(),
        }],
        "pin list: {pins:?}"
    );
    let pins_of_web: Vec<PinEntry> = json(&lab, &["pin", "list", "web"])?;
    ensure!(pins_of_web == pins, "pin list web: {pins_of_web:?}");

    // No rollout yet: null.
    let none: Option<Rollout> = json(&lab, &["rollout", "status", "web"])?;
    ensure!(none.is_none(), "rollout before any: {none:?}");

    // A rollout of b1 by b2: the object of `status --json`.
    lab.enable_checks("web", "tcp", 1, 1)?;
    lab.start_rollout(&[(1, 2)], false, &["--drain-timeout", "1s"])?;
    let rollout: Option<Rollout> = json(&lab, &["rollout", "status", "web"])?;
    let rollout = rollout.context("no rollout after rollout start")?;
    let (b1, b2) = (lab.topology.backend_v4(1), lab.topology.backend_v4(2));
    ensure!(
        rollout.group == "main" && rollout.pairs == [(b1, b2)],
        "rollout status: {rollout:?}"
    );
    let status: Status = json(&lab, &["status"])?;
    let shown = status.services[0].rollout.as_ref().context("no rollout")?;
    ensure!(
        (&shown.group, &shown.pairs) == (&rollout.group, &rollout.pairs),
        "status shows another rollout: {shown:?}"
    );

    // A service that does not exist: refused in one line, as without --json.
    lab.balancer
        .refused(&["rollout", "status", "nope", "--json"])?;
    Ok(())
}
