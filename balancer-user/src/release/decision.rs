//! What a release strategy did and why, kept with its progress and shown by `status`.
//! Every decision recorded in a state that a change carries out is also an event of the
//! history (`history::narrate` finds the new ones in the canary's and rollout's lists).

use serde::{Deserialize, Serialize};

/// One recorded decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Unix milliseconds.
    pub at_ms: u64,
    /// What was done and why.
    pub what: String,
}

/// Appends a decision to `log`.
pub(crate) fn record(log: &mut Vec<Decision>, at_ms: u64, what: String) {
    log.push(Decision { at_ms, what });
}
