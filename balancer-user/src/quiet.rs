//! The wait of `fleet leave`: once this host's announcements are withdrawn, `status` every
//! [`POLL`] until the data plane has forwarded no packet to a VIP (the sum of every
//! backend's packet counter stands still) for `--quiet`: the router sends this host's
//! flows elsewhere. [`Quiet`] decides from the samples (pure); [`Busy`] is the wait that
//! timed out (exit 7, as a release's `--wait-timeout`).

use std::time::Duration;

use crate::{api::Status, client::Client, operation::Operation, wait::POLL};

/// The data plane still forwarded packets to a VIP at `--wait-timeout`.
#[derive(Debug, thiserror::Error)]
#[error("packets still reach this host's VIPs after {} (--wait-timeout): it stays out of the fleet; `balancer status` shows its counters", humantime::format_duration(*.after))]
pub struct Busy {
    /// The timeout.
    pub after: Duration,
}

/// Follows the packet count until it stood still for the quiet time.
#[derive(Debug)]
pub struct Quiet {
    quiet: Duration,
    /// The last count, and when it was first seen.
    last: Option<(u64, Duration)>,
}

impl Quiet {
    /// Waits for `quiet` without a forwarded packet.
    pub fn new(quiet: Duration) -> Self {
        Self { quiet, last: None }
    }

    /// Takes the count `packets` seen at `at` (since the wait began). Once it has not
    /// moved for the quiet time: when it was first seen at that count (the last packet was
    /// forwarded before, within one poll).
    pub fn still(&mut self, packets: u64, at: Duration) -> Option<Duration> {
        match self.last {
            Some((count, since)) if count == packets => {
                (at.saturating_sub(since) >= self.quiet).then_some(since)
            }
            _ => {
                self.last = Some((packets, at));
                None
            }
        }
    }
}

/// Every packet the data plane forwarded to a backend of any service.
pub fn forwarded(status: &Status) -> u64 {
    status
        .services
        .iter()
        .flat_map(|s| &s.backends)
        .map(|b| b.packets)
        .sum()
}

/// Asks `status` every [`POLL`] until no packet was forwarded for `quiet`, or fails with
/// [`Busy`] after `timeout`; returns when the packets stopped (since the wait began, to
/// within one poll).
pub async fn run(client: &Client, quiet: Duration, timeout: Duration) -> anyhow::Result<Duration> {
    let start = tokio::time::Instant::now();
    let mut tracker = Quiet::new(quiet);
    let status = Operation::Status { service: None };
    loop {
        let answer = client.run(&status).await?;
        let status: Status = serde_json::from_slice(&answer)?;
        let at = start.elapsed();
        if let Some(since) = tracker.still(forwarded(&status), at) {
            return Ok(since);
        }
        if at >= timeout {
            return Err(Busy { after: timeout }.into());
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_only_after_the_count_stood_still_long_enough() {
        let s = Duration::from_secs;
        let mut quiet = Quiet::new(s(5));
        assert_eq!(quiet.still(10, s(0)), None);
        assert_eq!(quiet.still(20, s(1)), None);
        assert_eq!(quiet.still(20, s(5)), None);
        assert_eq!(quiet.still(20, s(6)), Some(s(1)));
        // A packet restarts the quiet time.
        assert_eq!(quiet.still(21, s(7)), None);
        assert_eq!(quiet.still(21, s(11)), None);
        assert_eq!(quiet.still(21, s(12)), Some(s(7)));
    }
}
