//! What a live view costs the daemon: its CPU time (user + system, from /proc/PID/stat)
//! over equal windows, alternately idle and with one `balancer status --watch --json`
//! running (one `status` a second), with one service of N backends.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use balancer_tests::{balancer::binary, lab::Lab};

use super::scrape::large_service;
use crate::stats::Spread;

/// Namespace prefix of this measurement's lab.
const PREFIX: &str = "bbmw";

/// How long the watch may take to print its first frame.
const FIRST_FRAME: Duration = Duration::from_secs(10);

/// What watching cost.
pub struct WatchCost {
    /// Backends of the service.
    pub backends: usize,
    /// Length of each window.
    pub window: Duration,
    /// The daemon's CPU while nothing asks it anything, % of one core.
    pub idle: Spread,
    /// The daemon's CPU while one watch runs, % of one core.
    pub watched: Spread,
    /// The watch's own CPU, % of one core.
    pub client: Spread,
    /// Refreshes the watch printed per window.
    pub refreshes: Spread,
}

/// Starts a lab, gives one service `backends` backends and measures `rounds` pairs of
/// `window`s.
pub fn measure(backends: usize, window: Duration, rounds: usize) -> Result<WatchCost> {
    let lab = Lab::new(PREFIX)?;
    large_service(&lab, backends)?;
    let daemon = lab.balancer.pid().context("the daemon does not run")?;
    let comm = std::fs::read_to_string(format!("/proc/{daemon}/comm"))?;
    ensure!(
        comm.trim() == "balancer",
        "process {daemon} is {comm:?}, not the daemon"
    );
    let (mut idle, mut watched, mut client, mut refreshes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        idle.push(percent(cpu_during(daemon, window)?, window));
        let watch = Watch::start(&lab)?;
        let client_before = cpu_time(watch.pid())?;
        let frames_before = watch.frames();
        let daemon_cpu = cpu_during(daemon, window)?;
        let client_cpu = cpu_time(watch.pid())?.saturating_sub(client_before);
        let frames = watch.frames() - frames_before;
        watch.stop()?;
        ensure!(frames > 0, "the watch printed no frame in {window:?}");
        watched.push(percent(daemon_cpu, window));
        client.push(percent(client_cpu, window));
        refreshes.push(frames as f64);
    }
    Ok(WatchCost {
        backends,
        window,
        idle: Spread::of(idle),
        watched: Spread::of(watched),
        client: Spread::of(client),
        refreshes: Spread::of(refreshes),
    })
}

/// `balancer status --watch --json` running, its frames counted as they come.
struct Watch {
    child: Child,
    frames: Arc<AtomicUsize>,
}

impl Watch {
    /// Starts it and waits for its first frame.
    fn start(lab: &Lab) -> Result<Self> {
        let mut child = Command::new(binary()?)
            .arg("--socket")
            .arg(lab.balancer.socket())
            .args(["status", "--watch", "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let frames = Arc::new(AtomicUsize::new(0));
        let counter = frames.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(_) => counter.fetch_add(1, Ordering::Relaxed),
                    Err(_) => break,
                };
            }
        });
        let watch = Self { child, frames };
        let start = Instant::now();
        while watch.frames() == 0 {
            if start.elapsed() > FIRST_FRAME {
                bail!("`status --watch` printed nothing within {FIRST_FRAME:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(watch)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn frames(&self) -> usize {
        self.frames.load(Ordering::Relaxed)
    }

    fn stop(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

/// The CPU time `pid` uses while `window` passes.
fn cpu_during(pid: u32, window: Duration) -> Result<Duration> {
    let start = cpu_time(pid)?;
    std::thread::sleep(window);
    Ok(cpu_time(pid)?.saturating_sub(start))
}

/// The user + system CPU time of process `pid` (all its threads) so far.
fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name, in parentheses, may hold spaces: fields count from after it.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("no command name in /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (the state) is fields[0]: utime is field 14, stime 15.
    let ticks = |n: usize| -> Result<u64> {
        Ok(fields
            .get(n - 3)
            .with_context(|| format!("no field {n} in /proc/{pid}/stat"))?
            .parse()?)
    };
    // SAFETY: sysconf reads a constant of the system; no memory is passed.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ensure!(per_second > 0, "no clock tick rate");
    let total = ticks(14)? + ticks(15)?;
    Ok(Duration::from_secs_f64(total as f64 / per_second as f64))
}

/// `cpu` over `window` as a percentage of one core.
fn percent(cpu: Duration, window: Duration) -> f64 {
    cpu.as_secs_f64() / window.as_secs_f64() * 100.0
}
