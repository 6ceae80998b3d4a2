//! What the analysis measures: the signals of one group, summed over its backends, and
//! their growth over a window.

use balancer_common::{HANDSHAKE_BOUNDS_NS, HANDSHAKE_BUCKETS};
use serde::{Deserialize, Serialize};

use super::plan::{Signal, HANDSHAKE_QUANTILE, LONGEST_HANDSHAKE_MS};

/// Counters of one group at one moment (they only grow while the daemon runs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// New flows.
    pub new_flows: u64,
    /// Handshakes not completed (and UDP flows of one datagram).
    pub handshake_failures: u64,
    /// Connections closed by the client's reset.
    pub resets: u64,
    /// SYNs sent again.
    pub syn_retransmits: u64,
    /// Replies with RST (services whose replies pass the LB; else 0).
    #[serde(default)]
    pub backend_resets: u64,
    /// Handshakes timed, by bucket of the data plane's `HANDSHAKE_BOUNDS_NS` (not
    /// cumulative; services whose replies pass the LB, else all 0).
    #[serde(default)]
    pub handshake_buckets: [u64; HANDSHAKE_BUCKETS],
}

impl Sample {
    /// Adds one backend's counters.
    pub fn add(&mut self, other: &Sample) {
        self.new_flows += other.new_flows;
        self.handshake_failures += other.handshake_failures;
        self.resets += other.resets;
        self.syn_retransmits += other.syn_retransmits;
        self.backend_resets += other.backend_resets;
        for (sum, more) in self
            .handshake_buckets
            .iter_mut()
            .zip(other.handshake_buckets)
        {
            *sum += more;
        }
    }

    /// The growth since `base`; none when a counter went back (the daemon restarted and
    /// began counting unanswered handshakes anew, or backends were replaced).
    pub fn since(&self, base: &Sample) -> Option<Sample> {
        Some(Sample {
            new_flows: self.new_flows.checked_sub(base.new_flows)?,
            handshake_failures: self
                .handshake_failures
                .checked_sub(base.handshake_failures)?,
            resets: self.resets.checked_sub(base.resets)?,
            syn_retransmits: self.syn_retransmits.checked_sub(base.syn_retransmits)?,
            backend_resets: self.backend_resets.checked_sub(base.backend_resets)?,
            handshake_buckets: {
                let mut grown = [0; HANDSHAKE_BUCKETS];
                for (i, g) in grown.iter_mut().enumerate() {
                    *g = self.handshake_buckets[i].checked_sub(base.handshake_buckets[i])?;
                }
                grown
            },
        })
    }

    /// The value of `signal`: a ratio in percent of new flows (none without new flows), or
    /// the handshake time in milliseconds (none without handshakes).
    pub fn value(&self, signal: Signal) -> Option<f64> {
        let count = match signal {
            Signal::HandshakeFailures => self.handshake_failures,
            Signal::Resets => self.resets,
            Signal::SynRetransmits => self.syn_retransmits,
            Signal::BackendResets => self.backend_resets,
            Signal::HandshakeTime => return self.handshake_ms(),
        };
        (self.new_flows > 0).then(|| 100.0 * count as f64 / self.new_flows as f64)
    }

    /// Handshakes timed.
    pub fn handshakes(&self) -> u64 {
        self.handshake_buckets.iter().sum()
    }

    /// The [`HANDSHAKE_QUANTILE`] of the handshake times, milliseconds, estimated from the
    /// buckets as Prometheus' `histogram_quantile` does (linearly within the bucket it
    /// falls in; in the last bucket, which has no upper bound, its lower bound:
    /// [`LONGEST_HANDSHAKE_MS`]); none without handshakes.
    pub fn handshake_ms(&self) -> Option<f64> {
        let total = self.handshakes();
        if total == 0 {
            return None;
        }
        let rank = HANDSHAKE_QUANTILE * total as f64;
        let mut below = 0;
        for (i, &count) in self.handshake_buckets.iter().enumerate() {
            let Some(&upper) = HANDSHAKE_BOUNDS_NS.get(i) else {
                break;
            };
            if count > 0 && (below + count) as f64 >= rank {
                let lower = i.checked_sub(1).map_or(0, |j| HANDSHAKE_BOUNDS_NS[j]);
                let within = (rank - below as f64) / count as f64;
                let ns = lower as f64 + within * (upper - lower) as f64;
                return Some(ns / 1e6);
            }
            below += count;
        }
        Some(LONGEST_HANDSHAKE_MS)
    }
}

/// The old and the new group, read at the same moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    /// The old group (the baseline).
    pub from: Sample,
    /// The new group (the canary).
    pub to: Sample,
}

impl Pair {
    /// The growth of both since `base`; none when a counter went back.
    pub fn since(&self, base: &Pair) -> Option<Pair> {
        Some(Pair {
            from: self.from.since(&base.from)?,
            to: self.to.since(&base.to)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_and_ratios() {
        let base = Sample {
            new_flows: 100,
            handshake_failures: 1,
            resets: 2,
            syn_retransmits: 0,
            ..Sample::default()
        };
        let now = Sample {
            new_flows: 300,
            handshake_failures: 5,
            resets: 2,
            syn_retransmits: 1,
            ..Sample::default()
        };
        let grown = now.since(&base).unwrap();
        assert_eq!(grown.new_flows, 200);
        assert_eq!(grown.value(Signal::HandshakeFailures), Some(2.0));
        assert_eq!(grown.value(Signal::Resets), Some(0.0));
        assert_eq!(grown.value(Signal::SynRetransmits), Some(0.5));
        assert_eq!(base.since(&now), None, "a counter that went back");
        assert_eq!(Sample::default().value(Signal::Resets), None);
    }

    /// A sample of `new_flows` with handshakes `(bucket, count)`.
    fn timed(new_flows: u64, buckets: &[(usize, u64)]) -> Sample {
        let mut sample = Sample {
            new_flows,
            ..Sample::default()
        };
        for &(bucket, count) in buckets {
            sample.handshake_buckets[bucket] = count;
        }
        sample
    }

    #[test]
    fn reply_signals_grow_and_add_up() {
        let base = Sample {
            backend_resets: 1,
            ..timed(100, &[(0, 10), (12, 1)])
        };
        let now = Sample {
            backend_resets: 5,
            ..timed(300, &[(0, 100), (12, 1)])
        };
        let grown = now.since(&base).unwrap();
        assert_eq!(grown.value(Signal::BackendResets), Some(2.0));
        assert_eq!((grown.handshakes(), grown.handshake_buckets[0]), (90, 90));
        let gone = Sample {
            handshake_buckets: [0; HANDSHAKE_BUCKETS],
            ..now
        };
        assert_eq!(gone.since(&base), None, "handshakes that went back");
        let mut sum = base;
        sum.add(&now);
        assert_eq!((sum.backend_resets, sum.handshakes()), (6, 112));
    }

    #[test]
    fn the_handshake_time_is_the_ninetieth_percentile_of_the_buckets() {
        // No handshakes: no time (not 0 ms).
        assert_eq!(timed(100, &[]).value(Signal::HandshakeTime), None);
        // All within the first bucket (up to 100 µs): 90% of the way through it.
        let fast = timed(100, &[(0, 50)]).handshake_ms().unwrap();
        assert!((fast - 0.09).abs() < 1e-9, "{fast}");
        // 80 fast ones and 20 slow ones of the bucket (250 ms, 1 s]: the 90th of 100 is
        // the 10th of the 20 slow ones, half-way through their bucket.
        let tail = timed(100, &[(0, 80), (11, 20)]).handshake_ms().unwrap();
        assert!((tail - 625.0).abs() < 1e-9, "{tail}");
        // One slow handshake in 20 does not move it.
        let stray = timed(100, &[(0, 19), (12, 1)]).handshake_ms().unwrap();
        assert!(stray < 0.1, "{stray}");
        // Handshakes above 1 s (after a dropped SYN) read as the longest time told apart.
        let slow = timed(100, &[(0, 5), (12, 45)]).value(Signal::HandshakeTime);
        assert_eq!(slow, Some(LONGEST_HANDSHAKE_MS));
    }
}
