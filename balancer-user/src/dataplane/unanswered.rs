//! Unanswered flows: flows that sent only their first packet and nothing else within
//! [`HANDSHAKE_WINDOW`] of their last packet. For TCP, a handshake the client never
//! completed: its SYN (and retransmits) got no SYN-ACK, or one the client did not accept, or
//! a reset — the backend did not answer well. For UDP, a flow of a single datagram.
//!
//! The pending table holds such a flow until a newer flow takes its slot; the daemon looks
//! at it once a second ([`Unanswered::pass`]) and counts each flow once, when its window
//! has passed. A flow whose slot was taken before its window passed (a flood of new flows)
//! is not counted.

use std::{collections::HashMap, time::Duration};

use super::FlowCounts;

/// How long after its last packet a flow that sent only its first packet counts as
/// unanswered. Covers a SYN's first retransmits (Linux: after 1 s and 3 s) and a slow
/// answer.
pub const HANDSHAKE_WINDOW: Duration = Duration::from_secs(5);

/// One flow of the pending table, as a pass sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingFlow {
    /// Its slot.
    pub slot: usize,
    /// The slot's write number: tells one flow of a slot from the next.
    pub written: u64,
    /// Its backend: (index, epoch).
    pub backend: (u32, u32),
    /// Its window has passed.
    pub expired: bool,
}

/// Unanswered flows counted so far, per backend.
#[derive(Debug, Default)]
pub struct Unanswered {
    /// Slots whose flow was counted, with that flow's write number.
    counted: HashMap<usize, u64>,
    /// Per (index, epoch).
    totals: FlowCounts,
}

impl Unanswered {
    /// Counts the expired flows of `pending` (every flow of one pass over the pending
    /// table) that no earlier pass counted, and forgets the slots that hold another flow
    /// now.
    pub fn pass(&mut self, pending: &[PendingFlow]) {
        let mut counted = HashMap::new();
        for flow in pending {
            let before = self.counted.get(&flow.slot) == Some(&flow.written);
            if before || flow.expired {
                counted.insert(flow.slot, flow.written);
            }
            if flow.expired && !before {
                *self.totals.entry(flow.backend).or_default() += 1;
            }
        }
        self.counted = counted;
    }

    /// Unanswered flows per (index, epoch) so far.
    pub fn totals(&self) -> &FlowCounts {
        &self.totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(slot: usize, written: u64, expired: bool) -> PendingFlow {
        PendingFlow {
            slot,
            written,
            backend: (3, 1),
            expired,
        }
    }

    #[test]
    fn a_flow_counts_once_when_its_window_passes() {
        let mut unanswered = Unanswered::default();
        unanswered.pass(&[flow(0, 1, false)]);
        assert!(unanswered.totals().is_empty(), "not yet");
        unanswered.pass(&[flow(0, 1, true)]);
        unanswered.pass(&[flow(0, 1, true)]);
        assert_eq!(unanswered.totals()[&(3, 1)], 1);
        // A SYN retransmit made it young again, then it expired again: the same flow.
        unanswered.pass(&[flow(0, 1, false)]);
        unanswered.pass(&[flow(0, 1, true)]);
        assert_eq!(unanswered.totals()[&(3, 1)], 1);
    }

    #[test]
    fn the_next_flow_of_a_slot_counts_on_its_own() {
        let mut unanswered = Unanswered::default();
        unanswered.pass(&[flow(0, 1, true), flow(1, 1, true)]);
        assert_eq!(unanswered.totals()[&(3, 1)], 2);
        // Slot 0 now holds another flow; slot 1 was emptied (promoted or forgotten).
        unanswered.pass(&[flow(0, 2, true)]);
        assert_eq!(unanswered.totals()[&(3, 1)], 3);
        // A later flow in slot 1 counts too.
        unanswered.pass(&[flow(0, 2, true), flow(1, 2, true)]);
        assert_eq!(unanswered.totals()[&(3, 1)], 4);
    }

    #[test]
    fn a_promoted_flow_is_never_counted() {
        let mut unanswered = Unanswered::default();
        unanswered.pass(&[flow(0, 1, false)]);
        // Promoted: gone from the pending table before its window passed.
        unanswered.pass(&[]);
        assert!(unanswered.totals().is_empty());
    }
}
