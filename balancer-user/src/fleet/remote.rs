//! The fleet's store as a daemon sees it: read the state and its revision, swap it if the
//! revision is still the one a change was prepared on, watch it, the hosts' records, the
//! leader's election, the hosts' health checks and the fleet's view of them.
//! [`super::etcd::Etcd`] is the real one; tests use [`fake::FakeRemote`].

use std::{future::Future, pin::Pin};

use tokio::sync::mpsc;

use super::FleetError;

/// A call to the store, answered later.
pub type Call<'a, T> = Pin<Box<dyn Future<Output = Result<T, FleetError>> + Send + 'a>>;

/// The stored state document at a revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The state key's mod revision (0: none stored yet).
    pub revision: i64,
    /// The document (JSON of the state), none when none is stored.
    pub document: Option<Vec<u8>>,
}

/// What a compare-and-swap did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Swap {
    /// Written: the new revision.
    Done(i64),
    /// Not written: the state had moved on to this revision.
    Moved(i64),
    /// Not written: the writer's term is over (another host leads, or none does).
    Fenced,
}

/// Where the fleet's leadership stands after a campaign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Campaign {
    /// This host leads in `term` (the leader key's create revision, which fences its
    /// writes); its lease lasts at least `ttl` seconds from the campaign's start.
    Leading {
        /// The leader key's create revision.
        term: i64,
        /// The lease's time to live granted by the store, in seconds.
        ttl: i64,
    },
    /// This host does not lead: `leader` does (none: the key is free, being taken).
    Following {
        /// The leader's name.
        leader: Option<String>,
    },
}

/// The fleet's store.
pub trait Remote: Send + Sync {
    /// The stored state and its revision.
    fn read(&self) -> Call<'_, Stored>;
    /// Stores `document` if the state's revision is still `expected` (0: none stored yet),
    /// in one transaction.
    fn swap(&self, expected: i64, document: Vec<u8>) -> Call<'_, Swap>;
    /// Sends every stored state after revision `after` to `to`, in order, until the watch
    /// breaks (an error) or `to` is closed (done).
    fn watch(&self, after: i64, to: mpsc::Sender<Stored>) -> Call<'_, ()>;
    /// Stores this host's record under its lease (made anew when it expired).
    fn announce(&self, host: &str, record: Vec<u8>) -> Call<'_, ()>;
    /// Every live host's record.
    fn hosts(&self) -> Call<'_, Vec<Vec<u8>>>;
    /// Signals `to` whenever a host's record appears (a host joins) or goes (its lease
    /// ended), a signal already waiting being enough, until the watch breaks (an error) or
    /// `to` is closed (done). A record renewed is no signal.
    fn watch_hosts(&self, to: mpsc::Sender<()>) -> Call<'_, ()>;
    /// Keeps this host's leader lease alive (a new one of `ttl` seconds when it has none or
    /// it expired) and, where no host holds the leader key, takes it for `host` under that
    /// lease, in one transaction that creates the key only if it is absent.
    fn campaign(&self, host: &str, ttl: i64) -> Call<'_, Campaign>;
    /// The host that holds the leader key, if one does.
    fn leader(&self) -> Call<'_, Option<String>>;
    /// Gives up this host's leader lease (and with it the leader key, if it holds it), so
    /// that another host takes over at once.
    fn resign(&self, host: &str) -> Call<'_, ()>;
    /// Like [`Remote::swap`], and only while the leader key is still the one of `term`
    /// (same transaction): [`Swap::Fenced`] when it is not.
    fn swap_fenced(&self, expected: i64, term: i64, document: Vec<u8>) -> Call<'_, Swap>;
    /// Stores this host's health checks under its record's lease.
    fn report(&self, host: &str, checks: Vec<u8>) -> Call<'_, ()>;
    /// Every live host's checks.
    fn reports(&self) -> Call<'_, Vec<Vec<u8>>>;
    /// The fleet's view of its backends' health, if one is stored.
    fn health(&self) -> Call<'_, Option<Vec<u8>>>;
    /// Stores the fleet's view of its backends' health while the leader key is still the
    /// one of `term` (same transaction); false when it is not (nothing stored).
    fn rule(&self, term: i64, view: Vec<u8>) -> Call<'_, bool>;
}

/// An in-memory store for tests, with the same compare-and-swap rule as etcd's.
#[cfg(test)]
pub mod fake {
    use std::{
        collections::BTreeMap,
        sync::{Arc, Mutex},
    };

    use tokio::sync::watch;

    use super::*;

    /// What the fake holds.
    #[derive(Debug, Default)]
    struct Held {
        /// The store's revision: each write adds one.
        revision: i64,
        state: Option<(i64, Vec<u8>)>,
        hosts: BTreeMap<String, Vec<u8>>,
        /// The leader key: its holder and term.
        leader: Option<(String, i64)>,
        checks: BTreeMap<String, Vec<u8>>,
        health: Option<Vec<u8>>,
        down: bool,
    }

    /// An in-memory store.
    #[derive(Clone)]
    pub struct FakeRemote {
        held: Arc<Mutex<Held>>,
        changed: watch::Sender<i64>,
        /// How many hosts' records appeared so far.
        joined: watch::Sender<u64>,
    }

    impl Default for FakeRemote {
        fn default() -> Self {
            Self {
                held: Arc::default(),
                changed: watch::channel(0).0,
                joined: watch::channel(0).0,
            }
        }
    }

    impl FakeRemote {
        /// Makes every call fail as an unreachable etcd does (`true`), or answer again.
        pub fn set_down(&self, down: bool) {
            self.held.lock().unwrap().down = down;
        }

        fn held(&self) -> Result<std::sync::MutexGuard<'_, Held>, FleetError> {
            let held = self.held.lock().unwrap();
            match held.down {
                true => Err(FleetError::Unavailable("connection refused".into())),
                false => Ok(held),
            }
        }

        /// Lets the leader's lease expire, as when its daemon died: the key is deleted.
        pub fn expire_leader(&self) {
            let mut held = self.held.lock().unwrap();
            held.revision += 1;
            held.leader = None;
        }

        /// Whether `term` is the leader key's.
        fn holds(held: &Held, term: i64) -> bool {
            held.leader.as_ref().is_some_and(|(_, t)| *t == term)
        }

        /// The compare-and-swap, fenced by `term` when one is given.
        fn swap_if(
            &self,
            expected: i64,
            term: Option<i64>,
            document: Vec<u8>,
        ) -> Result<Swap, FleetError> {
            let mut held = self.held()?;
            if term.is_some_and(|term| !Self::holds(&held, term)) {
                return Ok(Swap::Fenced);
            }
            let current = Self::stored(&held).revision;
            if current != expected {
                return Ok(Swap::Moved(current));
            }
            held.revision += 1;
            let revision = held.revision;
            held.state = Some((revision, document));
            drop(held);
            self.changed.send_replace(revision);
            Ok(Swap::Done(revision))
        }

        fn stored(held: &Held) -> Stored {
            Stored {
                revision: held.state.as_ref().map_or(0, |(r, _)| *r),
                document: held.state.as_ref().map(|(_, d)| d.clone()),
            }
        }
    }

    impl Remote for FakeRemote {
        fn read(&self) -> Call<'_, Stored> {
            Box::pin(async move { Ok(Self::stored(&*self.held()?)) })
        }

        fn swap(&self, expected: i64, document: Vec<u8>) -> Call<'_, Swap> {
            Box::pin(async move { self.swap_if(expected, None, document) })
        }

        fn watch(&self, after: i64, to: mpsc::Sender<Stored>) -> Call<'_, ()> {
            Box::pin(async move {
                let mut changed = self.changed.subscribe();
                let mut seen = after;
                loop {
                    let stored = Self::stored(&*self.held()?);
                    if stored.revision > seen {
                        seen = stored.revision;
                        if to.send(stored).await.is_err() {
                            return Ok(());
                        }
                    }
                    if changed.changed().await.is_err() {
                        return Ok(());
                    }
                }
            })
        }

        fn announce(&self, host: &str, record: Vec<u8>) -> Call<'_, ()> {
            let host = host.to_string();
            Box::pin(async move {
                let mut held = self.held()?;
                held.revision += 1;
                let new = held.hosts.insert(host, record).is_none();
                drop(held);
                if new {
                    self.joined.send_modify(|n| *n += 1);
                }
                Ok(())
            })
        }

        fn hosts(&self) -> Call<'_, Vec<Vec<u8>>> {
            Box::pin(async move { Ok(self.held()?.hosts.values().cloned().collect()) })
        }

        fn watch_hosts(&self, to: mpsc::Sender<()>) -> Call<'_, ()> {
            Box::pin(async move {
                let mut joined = self.joined.subscribe();
                drop(self.held()?);
                while joined.changed().await.is_ok() {
                    if let Err(mpsc::error::TrySendError::Closed(())) = to.try_send(()) {
                        return Ok(());
                    }
                }
                Ok(())
            })
        }

        fn campaign(&self, host: &str, ttl: i64) -> Call<'_, Campaign> {
            let host = host.to_string();
            Box::pin(async move {
                let mut held = self.held()?;
                if held.leader.is_none() {
                    held.revision += 1;
                    held.leader = Some((host.clone(), held.revision));
                }
                Ok(match &held.leader {
                    Some((leader, term)) if *leader == host => {
                        Campaign::Leading { term: *term, ttl }
                    }
                    other => Campaign::Following {
                        leader: other.as_ref().map(|(leader, _)| leader.clone()),
                    },
                })
            })
        }

        fn resign(&self, host: &str) -> Call<'_, ()> {
            let host = host.to_string();
            Box::pin(async move {
                let mut held = self.held()?;
                if held
                    .leader
                    .as_ref()
                    .is_some_and(|(leader, _)| *leader == host)
                {
                    held.revision += 1;
                    held.leader = None;
                }
                Ok(())
            })
        }

        fn leader(&self) -> Call<'_, Option<String>> {
            Box::pin(async move { Ok(self.held()?.leader.as_ref().map(|(l, _)| l.clone())) })
        }

        fn swap_fenced(&self, expected: i64, term: i64, document: Vec<u8>) -> Call<'_, Swap> {
            Box::pin(async move { self.swap_if(expected, Some(term), document) })
        }

        fn report(&self, host: &str, checks: Vec<u8>) -> Call<'_, ()> {
            let host = host.to_string();
            Box::pin(async move {
                let mut held = self.held()?;
                held.revision += 1;
                held.checks.insert(host, checks);
                Ok(())
            })
        }

        fn reports(&self) -> Call<'_, Vec<Vec<u8>>> {
            Box::pin(async move { Ok(self.held()?.checks.values().cloned().collect()) })
        }

        fn health(&self) -> Call<'_, Option<Vec<u8>>> {
            Box::pin(async move { Ok(self.held()?.health.clone()) })
        }

        fn rule(&self, term: i64, view: Vec<u8>) -> Call<'_, bool> {
            Box::pin(async move {
                let mut held = self.held()?;
                if !Self::holds(&held, term) {
                    return Ok(false);
                }
                held.revision += 1;
                held.health = Some(view);
                Ok(true)
            })
        }
    }
}
