//! CLI changes against the real daemon, and how soon after the CLI returns the first new
//! flow follows them.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use balancer_tests::lab::Lab;

use super::probe::Prober;

/// Namespace prefix of this section's lab.
const PREFIX: &str = "bbcp";

/// Longest wait, after the CLI returned, for a new flow to follow a change.
pub const EFFECTIVE_TIMEOUT: Duration = Duration::from_secs(1);

/// The service: backend 0 alone in group `a`, backend 1 alone in group `b`.
const SERVICE: &str = "cp";
const GROUPS: [&str; 2] = ["a", "b"];

/// One operator command and the backend every new flow must reach once it took effect.
struct Change {
    args: Vec<String>,
    target: usize,
}

/// What one change cost.
pub struct Sample {
    /// From spawning the CLI to its exit.
    pub cli: Duration,
    /// From the CLI's exit to the end of the first probe that saw the change, if one did
    /// within [`EFFECTIVE_TIMEOUT`].
    pub effective: Option<Duration>,
    /// Whether the first probe already saw the change.
    pub first_probe: bool,
    /// How long the probe made just before the change took: the resolution of `effective`.
    pub probe: Duration,
}

/// The samples of both kinds of change.
pub struct Samples {
    /// `backend set-weight` changes.
    pub weight: Vec<Sample>,
    /// `flip` changes.
    pub flip: Vec<Sample>,
}

/// Starts a lab with the daemon, then makes `changes` weight changes and `changes` flips
/// (an even number of each, so each ends where it began).
pub fn measure(changes: usize) -> Result<Samples> {
    let lab = Lab::with_backends(PREFIX, GROUPS.len())?;
    lab.service(SERVICE, false, &GROUPS, &[100, 100])?;
    let mut prober = Prober::attach_to(&lab, GROUPS.len())?;
    let b0 = lab.topology.backend_v4(0).to_string();
    let changes = changes.next_multiple_of(2);

    // Group `a` holds the whole split. At weight 0 its backend cannot serve, so its share
    // falls to group `b`: toggling backend 0's weight moves every new flow.
    let weight = (0..changes).map(|i| {
        let (weight, target) = if i % 2 == 0 { ("0", 1) } else { ("100", 0) };
        Change {
            args: args(&["backend", "set-weight", SERVICE, &b0, weight]),
            target,
        }
    });
    let weight = run_changes(&lab, &mut prober, weight)?;

    let flip = (0..changes).map(|i| {
        let target = (i + 1) % 2;
        Change {
            args: args(&["flip", SERVICE, "--to", GROUPS[target]]),
            target,
        }
    });
    let flip = run_changes(&lab, &mut prober, flip)?;
    Ok(Samples { weight, flip })
}

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// Makes each change in turn, starting with every new flow on backend 0.
fn run_changes(
    lab: &Lab,
    prober: &mut Prober,
    changes: impl Iterator<Item = Change>,
) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    let mut before = 0;
    for change in changes {
        // A probe that could see the target before the change would measure nothing.
        let start = Instant::now();
        let reached = prober.new_flow()?;
        let probe = start.elapsed();
        if reached != Some(before) {
            bail!(
                "before `{}`, new flows do not reach backend {before}",
                change.args.join(" ")
            );
        }
        let args: Vec<&str> = change.args.iter().map(String::as_str).collect();
        let start = Instant::now();
        let out = lab.balancer.cli(&args)?;
        let returned = Instant::now();
        if out.code != Some(0) {
            bail!(
                "`balancer {}` failed: {}",
                args.join(" "),
                out.stderr.trim()
            );
        }
        let (effective, probes) = wait_effective(prober, change.target, returned)?;
        samples.push(Sample {
            cli: returned - start,
            effective,
            first_probe: probes == 1 && effective.is_some(),
            probe,
        });
        before = change.target;
    }
    Ok(samples)
}

/// Probes new flows until one reaches `target`: the time from `since` to the end of that
/// probe (None after [`EFFECTIVE_TIMEOUT`]), and the number of probes made.
fn wait_effective(
    prober: &mut Prober,
    target: usize,
    since: Instant,
) -> Result<(Option<Duration>, u32)> {
    let mut probes = 0;
    loop {
        probes += 1;
        let reached = prober.new_flow()? == Some(target);
        let elapsed = since.elapsed();
        if reached {
            return Ok((Some(elapsed), probes));
        }
        if elapsed > EFFECTIVE_TIMEOUT {
            return Ok((None, probes));
        }
    }
}
