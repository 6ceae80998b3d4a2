//! `--wait` (on `canary start`, `rollout`, `flip`) and `balancer wait NAME`: poll `status`
//! every 500 ms, print a progress line per decision or phase change, and end with the
//! release: exit 0 when it completed, [`ABORTED`], [`ROLLED_BACK`] or [`TIMED_OUT`]
//! otherwise (`main.rs` lists every exit code).

pub mod track;

use std::time::{Duration, Instant};

use crate::{api::Status, client::Client, error::Refused, operation::Operation};
use track::{Ended, Ending, Kind, Tracker};

/// Exit code of a release the operator stopped (abort, or a split, flip or apply that
/// overrode it).
pub const ABORTED: u8 = 5;
/// Exit code of a release that went back by itself (a canary's automatic rollback on
/// health checks or analysis, a rollout whose new backend never became healthy or had
/// worse signals).
pub const ROLLED_BACK: u8 = 6;
/// Exit code of a wait that gave up at `--wait-timeout` (the release goes on).
pub const TIMED_OUT: u8 = 7;

/// Time between two `status` calls of a wait.
pub const POLL: Duration = Duration::from_millis(500);

/// What to wait for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// The service.
    pub service: String,
    /// Which release.
    pub kind: Kind,
    /// Give up after this long; none: wait until it ends.
    pub timeout: Option<Duration>,
}

/// A wait that did not end with a completed release: one line and its exit code.
#[derive(Debug, thiserror::Error)]
pub enum Unfinished {
    /// The operator stopped the release.
    #[error("{0}")]
    Aborted(String),
    /// The release went back by itself.
    #[error("{0}")]
    RolledBack(String),
    /// The timeout came first.
    #[error("{what} did not end within {} (--wait-timeout); it goes on: `balancer wait {service}` waits again", humantime::format_duration(*.after))]
    TimedOut {
        /// What was waited for.
        what: String,
        /// Its service.
        service: String,
        /// The timeout.
        after: Duration,
    },
}

impl Unfinished {
    /// The error of a release that ended as `ended` says; none when it completed.
    pub fn of(ended: Ended) -> Option<Self> {
        match ended.ending {
            Ending::Completed => None,
            Ending::Aborted => Some(Unfinished::Aborted(ended.what)),
            Ending::RolledBack => Some(Unfinished::RolledBack(ended.what)),
        }
    }

    /// The CLI's exit code: [`ABORTED`], [`ROLLED_BACK`] or [`TIMED_OUT`].
    pub fn exit_code(&self) -> u8 {
        match self {
            Unfinished::Aborted(_) => ABORTED,
            Unfinished::RolledBack(_) => ROLLED_BACK,
            Unfinished::TimedOut { .. } => TIMED_OUT,
        }
    }
}

/// Waits as `waiting` says, handing each progress line (and, when it completed, the final
/// one) to `print`.
pub async fn run(
    client: &Client,
    waiting: Waiting,
    mut print: impl FnMut(&str) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let operation = Operation::Status {
        service: Some(waiting.service.clone()),
    };
    let mut tracker: Option<Tracker> = None;
    loop {
        let answer = client.run(&operation).await?;
        let status: Status = serde_json::from_slice(&answer)?;
        let service = status
            .services
            .iter()
            .find(|s| s.name == waiting.service)
            .ok_or_else(|| Refused::Request(format!("no service {:?}", waiting.service)))?;
        let tracker = match &mut tracker {
            Some(tracker) => tracker,
            None => tracker.insert(Tracker::new(waiting.kind, service)?),
        };
        let step = tracker.step(service);
        for line in &step.lines {
            print(line)?;
        }
        if let Some(ended) = step.ended {
            let completed = ended.what.clone();
            return match Unfinished::of(ended) {
                None => print(&completed),
                Some(unfinished) => Err(unfinished.into()),
            };
        }
        if let Some(after) = waiting.timeout.filter(|t| start.elapsed() >= *t) {
            return Err(Unfinished::TimedOut {
                what: tracker.describe(),
                service: waiting.service.clone(),
                after,
            }
            .into());
        }
        let mut pause = POLL;
        if let Some(timeout) = waiting.timeout {
            pause = pause.min(timeout.saturating_sub(start.elapsed()));
        }
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_unfinished_wait_has_its_own_exit_code() {
        let ended = |ending| Ended {
            ending,
            what: "canary web aborted: aborted by the operator".into(),
        };
        assert!(Unfinished::of(ended(Ending::Completed)).is_none());
        let aborted = Unfinished::of(ended(Ending::Aborted)).unwrap();
        assert_eq!(aborted.exit_code(), 5);
        assert_eq!(
            aborted.to_string(),
            "canary web aborted: aborted by the operator"
        );
        let rolled_back = Unfinished::of(ended(Ending::RolledBack)).unwrap();
        assert_eq!(rolled_back.exit_code(), 6);
        let timed_out = Unfinished::TimedOut {
            what: "canary web".into(),
            service: "web".into(),
            after: Duration::from_secs(90),
        };
        assert_eq!(timed_out.exit_code(), 7);
        assert_eq!(
            timed_out.to_string(),
            "canary web did not end within 1m 30s (--wait-timeout); it goes on: `balancer wait web` waits again"
        );
        // Distinct from each other and from 1 refused, 2 usage, 3 unreachable, 4 fault.
        let mut codes = vec![1, 2, 3, 4, ABORTED, ROLLED_BACK, TIMED_OUT];
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), 7);
    }
}
