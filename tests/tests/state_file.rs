//! The state file under faults: a daemon never starts on (or writes over) a file that
//! does not load, the data plane keeps forwarding meanwhile, and `kill -9` at any moment
//! of a stream of changes leaves a file that loads and holds every acknowledged change.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use anyhow::{ensure, Context, Result};
use balancer_tests::{lab::Lab, traffic::LongLived};
use balancer_user::state::FileStore;

#[test]
fn a_daemon_refuses_a_state_file_that_does_not_load_and_leaves_it_and_the_traffic_alone(
) -> Result<()> {
    let mut lab = Lab::new("blx3")?;
    let service = lab.service("web", false, &["main"; 4], &[100; 4])?;
    let pings = LongLived::open(&lab.client, service, 20, &[])?.ping_in_background();
    let path = lab.balancer.state_file();
    let good = std::fs::read_to_string(&path)?;
    let before = lab.balancer.settings()?;
    lab.balancer.kill9()?;
    for bad in [
        good[..good.len() / 2].to_string(),
        "garbage".to_string(),
        r#"{"format": 1, "next_epoch": 1, "services": []}"#.to_string(),
    ] {
        std::fs::write(&path, &bad)?;
        let logged = std::fs::read_to_string(lab.balancer.log_path()).unwrap_or_default();
        let started = lab.balancer.restart();
        ensure!(started.is_err(), "the daemon started on {bad:?}");
        let log = std::fs::read_to_string(lab.balancer.log_path())?;
        let log = log.get(logged.len()..).unwrap_or_default();
        let expected = format!("error: state file {} is unreadable", path.display());
        let errors: Vec<&str> = log.lines().filter(|l| l.starts_with("error:")).collect();
        ensure!(
            errors.len() == 1 && errors[0].starts_with(&expected),
            "not one line naming the file: {log}"
        );
        ensure!(
            std::fs::read_to_string(&path)? == bad,
            "the daemon wrote over the file"
        );
        // The data plane forwards meanwhile.
        lab.client.distribution(service, 40, &[])?;
    }
    std::fs::write(&path, &good)?;
    lab.balancer.restart()?;
    ensure!(
        lab.balancer.settings()? == before,
        "the good file's state differs"
    );
    let report = pings.stop();
    ensure!(
        report.failed_connections() == 0 && report.moved_connections() == 0,
        "{report:?}"
    );
    Ok(())
}

#[test]
fn kill_9_during_a_stream_of_changes_never_leaves_a_state_file_that_does_not_load() -> Result<()> {
    const KILLS: u64 = 12;
    let mut lab = Lab::new("blx4")?;
    lab.service("web", false, &["main"; 2], &[100; 2])?;
    let addr = lab.topology.backend_v4(0).to_string();
    let path = lab.balancer.state_file();
    let socket = lab.balancer.socket();
    let binary = balancer_tests::balancer::binary()?;
    let stop = Arc::new(AtomicBool::new(false));
    // The last acknowledged weight, and the weights asked for since (any of which the
    // daemon may have stored before it was killed, without answering).
    let weights = Arc::new(Mutex::new((100u16, Vec::<u16>::new())));
    let changer = std::thread::spawn({
        let (stop, weights) = (Arc::clone(&stop), Arc::clone(&weights));
        move || -> Result<u64> {
            let mut acknowledged = 0;
            let mut weight = 1u16;
            while !stop.load(Ordering::Relaxed) {
                weights.lock().expect("lock").1.push(weight);
                let args = ["backend", "set-weight", "web", &addr, &weight.to_string()];
                let out = balancer_tests::balancer::run_cli(&binary, &socket, &args)?;
                if out.code == Some(0) {
                    *weights.lock().expect("lock") = (weight, Vec::new());
                    acknowledged += 1;
                } else {
                    std::thread::sleep(Duration::from_millis(20));
                }
                weight = weight % 1000 + 1;
            }
            Ok(acknowledged)
        }
    });
    let outcome = (|| -> Result<()> {
        for kill in 0..KILLS {
            // Kill at a different moment of the stream each time.
            std::thread::sleep(Duration::from_millis(40 + 37 * kill));
            lab.balancer.kill9()?;
            let (acknowledged, asked) = weights.lock().expect("lock").clone();
            let state = FileStore::new(&path)
                .load()
                .with_context(|| format!("after kill {kill}"))?;
            let stored = state.services["web"].groups[0].backends[0].weight;
            ensure!(
                stored == acknowledged || asked.contains(&stored),
                "kill {kill}: stored weight {stored}, acknowledged {acknowledged}, asked since {asked:?}"
            );
            lab.balancer.restart()?;
        }
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    let acknowledged = changer.join().expect("changer panicked")?;
    outcome?;
    ensure!(
        acknowledged > KILLS,
        "only {acknowledged} changes went through"
    );
    println!("{acknowledged} acknowledged changes across {KILLS} kills");
    Ok(())
}
