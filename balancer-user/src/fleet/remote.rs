//! The fleet's store as a daemon sees it: read the state and its revision, swap it if the
//! revision is still the one a change was prepared on, watch it, and the hosts' records.
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
        down: bool,
    }

    /// An in-memory store.
    #[derive(Clone)]
    pub struct FakeRemote {
        held: Arc<Mutex<Held>>,
        changed: watch::Sender<i64>,
    }

    impl Default for FakeRemote {
        fn default() -> Self {
            Self {
                held: Arc::default(),
                changed: watch::channel(0).0,
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
            Box::pin(async move {
                let mut held = self.held()?;
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
            })
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
                held.hosts.insert(host, record);
                Ok(())
            })
        }

        fn hosts(&self) -> Call<'_, Vec<Vec<u8>>> {
            Box::pin(async move { Ok(self.held()?.hosts.values().cloned().collect()) })
        }
    }
}
