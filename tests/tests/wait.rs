//! Waiting for releases as a pipeline does, against a real daemon: `--wait` on
//! `canary start` (timed, health-checked and analysis-gated canaries), `flip` and
//! `rollout`, and `balancer wait NAME`. The exit code tells how the release ended: 0
//! completed, 5 aborted, 6 rolled back, 7 still running at `--wait-timeout`.

use std::{
    io::Read as _,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use balancer_tests::{
    balancer::{binary, CliOutput},
    lab::{canary_start, Lab},
    traffic::NewConnections,
};
use balancer_user::{api::Health, release::canary::Outcome};

/// Backends b0, b1 are blue; b2, b3 are green.
const GROUPS: [&str; 4] = ["blue", "blue", "green", "green"];

/// Exit code of an aborted release.
const ABORTED: i32 = 5;
/// Exit code of a release that rolled back.
const ROLLED_BACK: i32 = 6;
/// Exit code of a wait past its --wait-timeout.
const TIMED_OUT: i32 = 7;

/// How long any wait of these tests may take at most.
const LIMIT: Duration = Duration::from_secs(30);

/// A CLI command running in the background, its standard output collected as it comes.
struct Background {
    child: Child,
    stdout: Arc<Mutex<String>>,
}

impl Background {
    /// Starts `balancer --socket SOCKET args...`.
    fn start(lab: &Lab, args: &[&str]) -> Result<Self> {
        let mut child = Command::new(binary()?)
            .arg("--socket")
            .arg(lab.balancer.socket())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut pipe = child.stdout.take().context("stdout")?;
        let stdout = Arc::new(Mutex::new(String::new()));
        let sink = stdout.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 1024];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        Ok(Self { child, stdout })
    }

    /// Waits (bounded) until standard output has a line containing `text`.
    fn wait_for_line(&self, text: &str) -> Result<()> {
        let start = Instant::now();
        while !self.stdout.lock().unwrap().contains(text) {
            ensure!(
                start.elapsed() < LIMIT,
                "no line with {text:?}: {}",
                self.stdout.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Waits (bounded) for the command to exit.
    fn finish(mut self) -> Result<CliOutput> {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if start.elapsed() > LIMIT {
                self.child.kill()?;
                bail!(
                    "still waiting after {LIMIT:?}: {}",
                    self.stdout.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            pipe.read_to_string(&mut stderr)?;
        }
        // The reader thread has the rest of standard output once the pipe closed.
        std::thread::sleep(Duration::from_millis(100));
        let stdout = self.stdout.lock().unwrap().clone();
        Ok(CliOutput {
            code: status.code(),
            stdout,
            stderr,
        })
    }
}

/// Requires exit code `code` and one error line on stderr starting with `start`.
fn ensure_failed(out: &CliOutput, code: i32, start: &str) -> Result<()> {
    let lines: Vec<&str> = out.stderr.trim().lines().collect();
    ensure!(
        out.code == Some(code) && lines.len() == 1 && lines[0].starts_with(start),
        "expected exit code {code} and one line starting with {start:?}: {out:?}"
    );
    Ok(())
}

#[test]
fn canary_start_wait_prints_each_step_and_exits_0_when_done() -> Result<()> {
    let lab = Lab::new("bwa1")?;
    lab.service("web", false, &GROUPS, &[100; 4])?;
    let out = lab
        .balancer
        .cli(&canary_start("50,100", "1s", &["--wait"]))?;
    ensure!(out.code == Some(0), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    let expected = [
        "canary web: started; step 1/2: 50.00% to green",
        "canary web: interval elapsed; step 2/2: 100.00% to green",
        "canary web: completed: every step done",
        "canary web completed: completed: every step done",
    ];
    ensure!(
        lines.len() == expected.len() && lines.iter().zip(expected).all(|(l, e)| l.ends_with(e)),
        "{lines:#?}"
    );
    // Once it returned, the canary is over.
    let canary = lab.balancer.status()?.services[0].canary.clone();
    ensure!(
        canary.as_ref().and_then(|c| c.outcome) == Some(Outcome::Completed),
        "{canary:?}"
    );
    // Nothing runs: `wait` gives the last release's outcome.
    let out = lab.balancer.ok(&["wait", "web"])?;
    ensure!(
        out.trim()
            == "nothing runs; the last release: canary web completed: completed: every step done",
        "{out}"
    );
    Ok(())
}

#[test]
fn canary_start_wait_exits_5_when_another_cli_aborts_it() -> Result<()> {
    let lab = Lab::new("bwa2")?;
    lab.service("web", false, &GROUPS, &[100; 4])?;
    let waiter = Background::start(&lab, &canary_start("10,100", "1m", &["--wait"]))?;
    waiter.wait_for_line("canary web: started")?;
    lab.balancer.ok(&["canary", "abort", "web"])?;
    let out = waiter.finish()?;
    ensure_failed(
        &out,
        ABORTED,
        "error: canary web aborted: aborted by the operator: 100% back to blue",
    )?;
    ensure!(
        out.stdout
            .lines()
            .last()
            .is_some_and(|l| l.ends_with("canary web: aborted by the operator: 100% back to blue")),
        "{out:?}"
    );
    // `wait` on the service now: the last outcome's code.
    ensure_failed(
        &lab.balancer.cli(&["wait", "web"])?,
        ABORTED,
        "error: nothing runs; the last release: canary web aborted",
    )
}

#[test]
fn canary_start_wait_exits_6_when_the_canary_rolls_back() -> Result<()> {
    let mut lab = Lab::new("bwa3")?;
    lab.service("web", false, &GROUPS, &[100; 4])?;
    lab.enable_checks("web", "tcp", 1, 2)?;
    lab.wait_until(LIMIT, "all up", |s| {
        s.backends.iter().all(|b| b.health == Some(Health::Up))
    })?;
    let waiter = Background::start(
        &lab,
        &canary_start("25,50,100", "30s", &["--auto-rollback", "--wait"]),
    )?;
    waiter.wait_for_line("canary web: started")?;
    // Green refuses connections: its checks fail, the canary rolls back by itself.
    lab.stop_server(2);
    lab.stop_server(3);
    let out = waiter.finish()?;
    ensure_failed(
        &out,
        ROLLED_BACK,
        "error: canary web rolled back: rolled back: ",
    )?;
    ensure!(
        out.stderr
            .contains("backends of green fail their health checks"),
        "{out:?}"
    );
    Ok(())
}

#[test]
fn a_wait_timeout_exits_7_and_the_release_goes_on_until_wait_sees_it_end() -> Result<()> {
    let lab = Lab::new("bwa4")?;
    lab.service("web", false, &GROUPS, &[100; 4])?;
    let out = lab.balancer.cli(&canary_start(
        "10,100",
        "10m",
        &["--wait", "--wait-timeout", "1s"],
    ))?;
    ensure_failed(
        &out,
        TIMED_OUT,
        "error: canary web did not end within 1s (--wait-timeout); it goes on",
    )?;
    ensure!(
        out.stdout
            .trim()
            .ends_with("canary web: started; step 1/2: 10.00% to green"),
        "{out:?}"
    );
    let running = |lab: &Lab| -> Result<bool> {
        Ok(lab.balancer.status()?.services[0]
            .canary
            .as_ref()
            .is_some_and(|c| c.running()))
    };
    ensure!(running(&lab)?, "the canary stopped with the wait");
    ensure_failed(
        &lab.balancer
            .cli(&["wait", "web", "--wait-timeout", "500ms"])?,
        TIMED_OUT,
        "error: canary web did not end within 500ms",
    )?;
    ensure!(running(&lab)?, "the canary stopped with the wait");
    // `balancer wait` follows it to its end.
    let waiter = Background::start(&lab, &["wait", "web"])?;
    waiter.wait_for_line("canary web: started")?;
    lab.balancer.ok(&["canary", "promote", "web"])?;
    let out = waiter.finish()?;
    ensure!(
        out.code == Some(0)
            && out.stdout.trim().lines().last()
                == Some("canary web promoted: promoted by the operator: 100% to the new group"),
        "{out:?}"
    );
    // --wait-timeout needs --wait.
    lab.balancer
        .refused(&canary_start("10,100", "1m", &["--wait-timeout", "1s"]))
}

#[test]
fn flip_wait_returns_after_the_flip_drain_and_wait_sees_a_flip_back() -> Result<()> {
    let lab = Lab::new("bwa5")?;
    lab.service("web", false, &GROUPS, &[100; 4])?;
    let out = lab.balancer.ok(&[
        "flip",
        "web",
        "--to",
        "green",
        "--drain-timeout",
        "2s",
        "--wait",
    ])?;
    let lines: Vec<&str> = out.lines().collect();
    ensure!(
        lines.len() == 2
            && lines[0]
                .starts_with("flip web: green takes every new flow; flip drain of blue until ")
            && lines[1] == "flip web: flip drain over, green takes every new flow",
        "{out}"
    );
    let drain = lab.balancer.status()?.services[0].flip_drain.clone();
    ensure!(
        drain.is_none(),
        "flip --wait returned during the drain: {drain:?}"
    );
    // No drain: nothing to wait for.
    let out = lab
        .balancer
        .ok(&["flip", "web", "--to", "blue", "--wait"])?;
    ensure!(out.trim() == "flip web: no flip drain to wait for", "{out}");

    // A flip back during the drain undoes the flip: `wait` exits 5.
    lab.balancer
        .ok(&["flip", "web", "--to", "green", "--drain-timeout", "10m"])?;
    let waiter = Background::start(&lab, &["wait", "web"])?;
    waiter.wait_for_line("flip drain of blue until")?;
    lab.balancer.ok(&["flip", "web", "--to", "blue"])?;
    ensure_failed(
        &waiter.finish()?,
        ABORTED,
        "error: flip web: the split changed before the flip drain's end: green no longer takes every new flow",
    )
}

#[test]
fn rollout_wait_exits_0_when_replaced_and_6_when_the_new_backend_never_serves() -> Result<()> {
    let mut lab = Lab::new("bwa6")?;
    // b0 and b1 in group main; b2 and b3 serve, outside the service.
    lab.service("web", false, &["main", "main"], &[100, 100])?;
    lab.enable_checks("web", "tcp", 1, 2)?;
    lab.wait_until(LIMIT, "all up", |s| {
        s.backends.iter().all(|b| b.health == Some(Health::Up))
    })?;
    let out = lab.start_rollout(&[(0, 2)], false, &["--wait"])?;
    let (b0, b2) = (lab.topology.backend_v4(0), lab.topology.backend_v4(2));
    ensure!(
        out.contains(&format!(
            "rollout web: pair 1/1: added {b2}, waiting for its health checks"
        )) && out.contains(&format!("rollout web: {b0} drained"))
            && out.trim().lines().last()
                == Some("rollout web completed: completed: every pair replaced"),
        "{out}"
    );
    // b3 refuses connections: it never passes its checks, the rollout removes it and b1
    // keeps serving.
    lab.stop_server(3);
    let b3 = lab.topology.backend_v4(3);
    let out = lab.balancer.cli(&[
        "rollout",
        "web",
        "--group",
        "main",
        "--ready-timeout",
        "1s",
        "--wait",
        "--replace",
        &format!("{}={b3}", lab.topology.backend_v4(1)),
    ])?;
    ensure_failed(
        &out,
        ROLLED_BACK,
        &format!(
            "error: rollout web failed: failed: {b3} did not pass its health checks within 1000 ms"
        ),
    )
}

/// Analysis windows short enough for a test (6 s of warm-up, the least, windows of 6 s, 20 new
/// flows), and `--wait`.
const FAST_ANALYSIS: [&str; 7] = [
    "--warmup",
    "6s",
    "--window",
    "6s",
    "--min-flows",
    "20",
    "--wait",
];

#[test]
fn canary_start_wait_exits_6_when_the_analysis_rolls_it_back() -> Result<()> {
    let mut lab = Lab::new("bwa7")?;
    let service = lab.service("web", false, &GROUPS, &[100; 4])?;
    // Green refuses connections: its handshakes fail, the analysis rolls the canary back.
    lab.stop_server(2);
    lab.stop_server(3);
    let stream = NewConnections::start(&lab.client, service);
    let out = lab
        .balancer
        .cli(&canary_start("50,100", "2s", &FAST_ANALYSIS))?;
    drop(stream);
    ensure_failed(
        &out,
        ROLLED_BACK,
        "error: canary web rolled back: rolled back: analysis: handshake-failures",
    )
}

#[test]
fn canary_start_wait_exits_0_when_the_analysis_passes_every_step() -> Result<()> {
    let lab = Lab::new("bwa8")?;
    let service = lab.service("web", false, &GROUPS, &[100; 4])?;
    let stream = NewConnections::start(&lab.client, service);
    let out = lab
        .balancer
        .cli(&canary_start("50,100", "2s", &FAST_ANALYSIS))?;
    stream.stop().ensure_served()?;
    ensure!(
        out.code == Some(0)
            && out.stdout.contains("analysis passed")
            && out.stdout.trim().lines().last()
                == Some("canary web completed: completed: every step done"),
        "{out:?}"
    );
    Ok(())
}
