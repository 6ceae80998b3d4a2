//! What the flow-state sync did, counted without a lock.

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicU64, Ordering},
};

use crate::api::SyncStatus;

/// The sync's counters since the daemon started.
#[derive(Debug, Default)]
pub struct Counters {
    /// Records read from the data plane's ring buffer (this host's new flows).
    pub recorded: AtomicU64,
    /// Datagrams sent (each to one peer).
    pub datagrams: AtomicU64,
    /// Bytes of those datagrams (UDP payload).
    pub bytes: AtomicU64,
    /// Datagrams that could not be sent.
    pub unsent: AtomicU64,
    /// Records received from peers.
    pub received: AtomicU64,
    /// Received records inserted into connection tracking.
    pub inserted: AtomicU64,
    /// Received records of flows this host already tracked (its own entry kept).
    pub kept: AtomicU64,
    /// Received datagrams dropped: from no known peer, malformed, or not inserted.
    pub dropped: AtomicU64,
}

/// Adds `n` to `counter`.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    /// What `status` shows, for a sync listening on `listen` with `peers` peers, the data
    /// plane having lost `overflows` records.
    pub fn status(&self, listen: SocketAddr, peers: usize, overflows: u64) -> SyncStatus {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        SyncStatus {
            listen,
            peers,
            recorded: read(&self.recorded),
            datagrams: read(&self.datagrams),
            bytes: read(&self.bytes),
            unsent: read(&self.unsent),
            received: read(&self.received),
            inserted: read(&self.inserted),
            kept: read(&self.kept),
            dropped: read(&self.dropped),
            overflows,
        }
    }
}
