//! The controller's store in a fleet: the state file stays the daemon's last copy (so a
//! daemon started while etcd is down forwards with it), and each state the controller
//! saves is staged for the fleet's store, which the executor writes off the lock.

use std::sync::Arc;

use super::member::Member;
use crate::{
    controller::ports::Store,
    health::HealthRecord,
    state::{FileStore, State, StoreError},
};

/// The state file, and the fleet's store behind it.
pub struct CacheStore {
    file: FileStore,
    member: Arc<Member>,
}

impl CacheStore {
    /// The copy in `file` of `member`'s fleet state.
    pub fn new(file: FileStore, member: Arc<Member>) -> Self {
        Self { file, member }
    }
}

impl Store for CacheStore {
    fn load(&self) -> Result<State, StoreError> {
        self.file.load()
    }

    fn save(&self, state: &State) -> Result<(), StoreError> {
        self.file.save(state)?;
        self.member.stage(state.clone());
        Ok(())
    }

    fn load_health(&self) -> Result<HealthRecord, StoreError> {
        self.file.load_health()
    }

    fn save_health(&self, record: &HealthRecord) -> Result<(), StoreError> {
        self.file.save_health(record)
    }
}
