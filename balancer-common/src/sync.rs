//! Flow-state sync between the LB hosts of a fleet: the record the data plane emits for
//! each new connection-tracking entry, which the daemon sends to its peers.

use bytemuck::{Pod, Zeroable};

use crate::FlowKey;

/// A new connection-tracking entry: the flow and the backend it was given. Backend
/// identities (index and epoch) are the same on every host of a fleet, whose state is
/// shared, so a peer can insert it as it is.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct FlowRecord {
    /// The flow, as the client sent it.
    pub key: FlowKey,
    /// Backend index.
    pub backend: u32,
    /// That backend's epoch.
    pub epoch: u32,
    /// `RECORD_*` bits.
    pub flags: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

/// [`FlowRecord::flags`] bit: a new connection on the 5-tuple of a closed flow, which
/// replaces the closed flow's entry (a peer replaces its entry too).
pub const RECORD_REOPENED: u32 = 1;

/// Bytes of the ring buffer the data plane writes records into: room for about 18,000
/// records (each takes 8 bytes of header besides its own 56) while the daemon reads.
pub const SYNC_RING_BYTES: u32 = 1 << 20;

/// Index in the sync counters: records lost because the ring buffer was full (the daemon
/// did not read them in time).
pub const SYNC_STAT_OVERFLOWS: u32 = 0;
/// Number of sync counters.
pub const SYNC_STAT_COUNT: u32 = 1;
