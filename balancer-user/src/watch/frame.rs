//! One refresh of the live view: a `status` answer with the rates since the previous one.
//! With `--json` each frame is one line of NDJSON.

use std::time::Instant;

use serde::Serialize;

use super::rates::{rates, ServiceRates};
use crate::api::Status;

/// One refresh.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Frame {
    /// When the answer came (Unix milliseconds, the CLI's clock).
    pub at_ms: u64,
    /// Milliseconds since the previous answer the rates are taken over; none in the first
    /// frame.
    pub interval_ms: Option<u64>,
    /// The daemon's answer.
    pub status: Status,
    /// Per service, the rates of its groups and backends.
    pub rates: Vec<ServiceRates>,
}

/// Turns successive answers into frames, keeping the previous one.
#[derive(Default)]
pub struct Sampler {
    previous: Option<(Status, Instant)>,
}

impl Sampler {
    /// The frame of `status`, which came at `at` (`at_ms` on the wall clock).
    pub fn frame(&mut self, status: Status, at: Instant, at_ms: u64) -> Frame {
        let elapsed = self
            .previous
            .as_ref()
            .map(|(_, then)| at.saturating_duration_since(*then));
        let previous = self.previous.as_ref().map(|(status, _)| status);
        let rates = rates(previous, &status, elapsed.unwrap_or_default());
        self.previous = Some((status.clone(), at));
        Frame {
            at_ms,
            interval_ms: elapsed.map(|e| u64::try_from(e.as_millis()).unwrap_or(u64::MAX)),
            status,
            rates,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::watch::rates::tests::{backend, status};

    #[test]
    fn the_second_frame_has_rates_over_the_time_between_answers() {
        let mut sampler = Sampler::default();
        let start = Instant::now();
        let first = sampler.frame(status(vec![backend("198.18.0.101", "blue", 10)]), start, 1);
        assert_eq!(first.interval_ms, None);
        assert_eq!(first.rates[0].backends[0].rates.new_flows, None);
        let later = start + Duration::from_millis(2000);
        let second = sampler.frame(status(vec![backend("198.18.0.101", "blue", 30)]), later, 2);
        assert_eq!(second.interval_ms, Some(2000));
        assert_eq!(second.rates[0].backends[0].rates.new_flows, Some(10.0));
        let line = serde_json::to_string(&second).unwrap();
        assert!(!line.contains('\n'), "{line}");
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(json["rates"][0]["backends"][0]["packets"], 100.0);
        assert_eq!(json["status"]["services"][0]["name"], "web");
    }
}
