//! What the analysis measures: the client-side signals of one group, summed over its
//! backends, and their growth over a window.

use serde::{Deserialize, Serialize};

use super::plan::Signal;

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
}

impl Sample {
    /// Adds one backend's counters.
    pub fn add(&mut self, other: &Sample) {
        self.new_flows += other.new_flows;
        self.handshake_failures += other.handshake_failures;
        self.resets += other.resets;
        self.syn_retransmits += other.syn_retransmits;
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
        })
    }

    /// The count of `signal`.
    pub fn get(&self, signal: Signal) -> u64 {
        match signal {
            Signal::HandshakeFailures => self.handshake_failures,
            Signal::Resets => self.resets,
            Signal::SynRetransmits => self.syn_retransmits,
        }
    }

    /// `signal` per new flow, in percent; none without new flows.
    pub fn percent(&self, signal: Signal) -> Option<f64> {
        (self.new_flows > 0).then(|| 100.0 * self.get(signal) as f64 / self.new_flows as f64)
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
        };
        let now = Sample {
            new_flows: 300,
            handshake_failures: 5,
            resets: 2,
            syn_retransmits: 1,
        };
        let grown = now.since(&base).unwrap();
        assert_eq!(grown.new_flows, 200);
        assert_eq!(grown.percent(Signal::HandshakeFailures), Some(2.0));
        assert_eq!(grown.percent(Signal::Resets), Some(0.0));
        assert_eq!(grown.percent(Signal::SynRetransmits), Some(0.5));
        assert_eq!(base.since(&now), None, "a counter that went back");
        assert_eq!(Sample::default().percent(Signal::Resets), None);
    }
}
