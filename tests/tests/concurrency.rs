//! Changes that race each other and a canary's timer: none is lost, and the state file,
//! the daemon's answers and the data plane agree afterwards.

use std::{sync::Barrier, thread};

use anyhow::{ensure, Result};
use balancer_tests::{
    balancer::{binary, run_cli},
    lab::Lab,
};

/// Backends b0, b1 are blue; b2, b3 are green.
const GROUPS: [&str; 4] = ["blue", "blue", "green", "green"];

#[test]
fn twenty_concurrent_changes_and_a_canary_step_lose_nothing() -> Result<()> {
    let mut lab = Lab::new("blc1")?;
    let service = lab.service("web", false, &GROUPS, &[100; 4])?;
    // A canary stepping every second while the changes land.
    lab.start_canary("10,20,30,40,50", "1s", &[])?;
    let addr = |i: usize| lab.topology.backend_v4(i).to_string();
    let weights = [
        (addr(0), "7"),
        (addr(1), "0"),
        (addr(2), "300"),
        (addr(3), "0"),
    ];
    let mut changes: Vec<Vec<String>> = weights
        .iter()
        .map(|(a, w)| {
            vec![
                "backend".into(),
                "set-weight".into(),
                "web".into(),
                a.clone(),
                w.to_string(),
            ]
        })
        .collect();
    let pins: Vec<(String, &str)> = (0..16)
        .map(|i| (format!("198.18.{}.0/24", 100 + i), GROUPS[i % 4]))
        .collect();
    for (cidr, group) in &pins {
        changes.push(
            ["pin", "add", "web", cidr, "--group", group]
                .map(String::from)
                .to_vec(),
        );
    }
    assert_eq!(changes.len(), 20);
    let (bin, socket) = (binary()?, lab.balancer.socket());
    let start = Barrier::new(changes.len());
    let outputs = thread::scope(|scope| {
        let handles: Vec<_> = changes
            .iter()
            .map(|args| {
                let (bin, socket, start) = (&bin, &socket, &start);
                scope.spawn(move || {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    start.wait();
                    run_cli(bin, socket, &args).map(|out| (args.join(" "), out))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a CLI thread panicked"))
            .collect::<Result<Vec<_>>>()
    })?;
    for (args, out) in &outputs {
        ensure!(out.code == Some(0), "`balancer {args}` failed: {out:?}");
    }
    // The canary went on stepping through them, to its last step.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let canary = loop {
        let canary = lab.balancer.status()?.services[0]
            .canary
            .clone()
            .expect("canary");
        if canary.step == 4 || std::time::Instant::now() > deadline {
            break canary;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let steps = canary
        .decisions
        .iter()
        .filter(|d| d.what.contains("/5: "))
        .count();
    ensure!(
        canary.step == 4 && steps == 5,
        "canary lost a step: {canary:?}"
    );

    // Every change is there.
    let settings = lab.balancer.settings()?;
    let web = &settings[0];
    for (a, w) in &weights {
        let backend = web
            .backends
            .iter()
            .find(|b| b.addr.to_string() == *a)
            .unwrap();
        ensure!(
            backend.weight.to_string() == *w,
            "{a}: weight {} not {w}",
            backend.weight
        );
    }
    let mut have: Vec<(String, String)> = web
        .pins
        .iter()
        .map(|p| (p.cidr.clone(), p.group.clone()))
        .collect();
    let mut want: Vec<(String, String)> = pins
        .iter()
        .map(|(c, g)| (c.clone(), g.to_string()))
        .collect();
    have.sort();
    want.sort();
    ensure!(have == want, "pins lost: have {have:?}, want {want:?}");
    // The data plane follows them: no new flow reaches a backend of weight 0.
    let dist = lab.client.distribution(service, 400, &[])?;
    ensure!(
        !dist.counts.contains_key("b1") && !dist.counts.contains_key("b3"),
        "weight-0 backends got new flows: {:?}",
        dist.counts
    );
    // And the state file holds exactly what the daemon answered.
    lab.balancer.restart()?;
    ensure!(
        lab.balancer.settings()? == settings,
        "a restart changed the settings"
    );
    Ok(())
}
