//! This daemon as a member of a fleet: its store, its name, which stored revision its
//! state is, and whether it leads the fleet.

use std::{
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use super::remote::Remote;
use crate::state::State;

/// This daemon's place in a fleet. Its revision and staged state are changed only under
/// the controller's lock (by the executor), so that they always match the controller's
/// state; they are read anywhere.
pub struct Member {
    /// The fleet's store.
    pub remote: Arc<dyn Remote>,
    /// This host's name in the fleet (`--host-name`).
    pub host: String,
    /// The store as `--store` gave it.
    pub store: String,
    /// Where this host takes its peers' flow records (`--sync-listen`), published in its
    /// record.
    pub sync: Option<std::net::SocketAddr>,
    /// The stored revision the controller's state is (0: none yet).
    revision: AtomicI64,
    /// A state this daemon made itself (a timed step, at start an unstored state) and has
    /// not stored yet.
    staged: Mutex<Option<State>>,
    /// The time to live of the leader lease it campaigns with (`--leader-ttl`).
    pub leader_ttl: Duration,
    /// When this daemon started (Unix milliseconds): its data plane's counters that it
    /// reports count from then.
    pub started_ms: u64,
    /// The term it leads in and until when its lease surely lasts; none: it follows.
    leadership: Mutex<Option<(i64, Instant)>>,
}

/// The leader lease's time to live when `--leader-ttl` is not given.
pub const DEFAULT_LEADER_TTL: Duration = Duration::from_secs(3);

impl Member {
    /// A member named `host` of the fleet kept in `remote` (`store`), at no revision yet.
    pub fn new(remote: Arc<dyn Remote>, host: String, store: String) -> Self {
        Self {
            remote,
            host,
            store,
            sync: None,
            revision: AtomicI64::new(0),
            staged: Mutex::new(None),
            leader_ttl: DEFAULT_LEADER_TTL,
            started_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            leadership: Mutex::new(None),
        }
    }

    /// This member, publishing `sync` as its flow-sync address.
    pub fn syncing(self, sync: Option<std::net::SocketAddr>) -> Self {
        Self { sync, ..self }
    }

    /// The same member, campaigning with a leader lease of `ttl`.
    pub fn with_leader_ttl(self, ttl: Duration) -> Self {
        Self {
            leader_ttl: ttl,
            ..self
        }
    }

    /// The term this daemon leads the fleet in, while its lease surely lasts; none when it
    /// follows (or its lease may have expired: then another host may lead already).
    pub fn leading(&self) -> Option<i64> {
        match *self.leadership() {
            Some((term, until)) if Instant::now() < until => Some(term),
            _ => None,
        }
    }

    /// This daemon leads in `term` until `until` (its lease's renewal time plus its time to
    /// live).
    pub fn lead(&self, term: i64, until: Instant) {
        *self.leadership() = Some((term, until));
    }

    /// This daemon follows.
    pub fn follow(&self) {
        *self.leadership() = None;
    }

    fn leadership(&self) -> std::sync::MutexGuard<'_, Option<(i64, Instant)>> {
        self.leadership.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stored revision the controller's state is.
    pub fn revision(&self) -> i64 {
        self.revision.load(Ordering::SeqCst)
    }

    /// The controller's state is now stored revision `revision`: nothing is left to store.
    pub fn settle(&self, revision: i64) {
        self.revision.store(revision, Ordering::SeqCst);
        *self.staged() = None;
    }

    /// A staged state was stored as revision `revision`; what was staged since stays
    /// staged (it includes the stored one's changes).
    pub fn settle_stored(&self, revision: i64) {
        self.revision.store(revision, Ordering::SeqCst);
    }

    /// Marks `state` (the controller's, made by the daemon itself) to be stored.
    pub fn stage(&self, state: State) {
        *self.staged() = Some(state);
    }

    /// The state waiting to be stored, if any, and the revision it was made on.
    pub fn take_staged(&self) -> Option<(i64, State)> {
        self.staged().take().map(|s| (self.revision(), s))
    }

    /// Puts back a staged state that could not be stored, unless a newer one was staged
    /// meanwhile (it includes this one's changes) or the state moved on.
    pub fn restage(&self, base: i64, state: State) {
        let mut staged = self.staged();
        if staged.is_none() && self.revision() == base {
            *staged = Some(state);
        }
    }

    fn staged(&self) -> std::sync::MutexGuard<'_, Option<State>> {
        self.staged.lock().unwrap_or_else(|e| e.into_inner())
    }
}
