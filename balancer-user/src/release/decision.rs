//! What a release strategy did and why, kept with its progress and shown by `status`.

use serde::{Deserialize, Serialize};

/// One recorded decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Unix milliseconds.
    pub at_ms: u64,
    /// What was done and why.
    pub what: String,
}

/// The most decisions one strategy keeps: the first (how it started) and the latest.
pub const MAX_DECISIONS: usize = 256;

/// Appends a decision to `log`; beyond [`MAX_DECISIONS`] the oldest but the first goes.
pub(crate) fn record(log: &mut Vec<Decision>, at_ms: u64, what: String) {
    if log.len() >= MAX_DECISIONS {
        log.remove(1);
    }
    log.push(Decision { at_ms, what });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_keeps_the_first_and_the_latest() {
        let mut log = Vec::new();
        for i in 0..MAX_DECISIONS as u64 + 10 {
            record(&mut log, i, format!("{i}"));
        }
        assert_eq!(log.len(), MAX_DECISIONS);
        assert_eq!(log[0].what, "0");
        assert_eq!(log[1].what, "11");
        assert_eq!(log.last().unwrap().at_ms, MAX_DECISIONS as u64 + 9);
    }
}
