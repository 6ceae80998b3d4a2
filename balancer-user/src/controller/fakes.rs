//! Fakes of the controller's ports for unit tests: a data plane that keeps the live image
//! of every service and can fail its n-th write, a store that can fail, neighbours that
//! answer from a rule, and a rig that starts a controller on them with a manual clock.

use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use balancer_common::{Backend, BackendStats, VipInfo, VipKey};

use super::{
    ports::{Neighbors, Plane, Store},
    Controller, Ports, Settings,
};
use crate::{
    clock::ManualClock,
    compile::compile,
    dataplane::{DataPlaneError, FlowCounts, GlobalCounters, ServiceImage},
    health::HealthRecord,
    neighbor::{NeighborError, NextHop},
    state::{tests::ip, State, StoreError},
};

/// The hash seed of the rig's controller.
const SEED: u64 = 7;

/// The retire timeout of controllers on fakes.
pub(crate) const RETIRE_TIMEOUT: Duration = Duration::from_secs(3600);

/// What the fake data plane holds.
#[derive(Default)]
pub(crate) struct Maps {
    pub(crate) backends: BTreeMap<u32, Backend>,
    pub(crate) vips: Vec<(VipKey, VipInfo)>,
    /// The live image of each service slot.
    pub(crate) live: BTreeMap<u32, ServiceImage>,
    /// Writes so far.
    pub(crate) writes: usize,
    /// The write (counted from 0) that fails once.
    fail_write: Option<usize>,
    /// Flows forgotten, by (index, epoch).
    pub(crate) forgotten: Vec<(u32, u32)>,
    /// Active flows the plane reports, by (index, epoch).
    pub(crate) active: FlowCounts,
}

#[derive(Clone, Default)]
pub(crate) struct FakePlane(Arc<Mutex<Maps>>);

impl FakePlane {
    pub(crate) fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.0.lock().unwrap()
    }

    /// Counts a write; fails it if it is the one to fail.
    fn write(&self) -> Result<(), DataPlaneError> {
        let mut maps = self.maps();
        let n = maps.writes;
        maps.writes += 1;
        if maps.fail_write == Some(n) {
            maps.fail_write = None;
            return Err(DataPlaneError::Io {
                context: format!("injected failure of write {n}"),
                source: std::io::Error::from_raw_os_error(libc::ENOMEM),
            });
        }
        Ok(())
    }

    /// Makes the `n`-th write from now fail once.
    pub(crate) fn fail_after(&self, n: usize) {
        let mut maps = self.maps();
        maps.fail_write = Some(maps.writes + n);
    }
}

impl Plane for FakePlane {
    fn reattached(&self) -> bool {
        false
    }
    fn backend(&self, index: u32) -> Result<Backend, DataPlaneError> {
        Ok(self
            .maps()
            .backends
            .get(&index)
            .copied()
            .unwrap_or_default())
    }
    fn set_backend(&mut self, index: u32, b: &Backend, _: bool) -> Result<(), DataPlaneError> {
        self.write()?;
        self.maps().backends.insert(index, *b);
        Ok(())
    }
    fn clear_backend(&mut self, index: u32) -> Result<(), DataPlaneError> {
        self.write()?;
        self.maps().backends.remove(&index);
        Ok(())
    }
    fn vips(&self) -> Result<Vec<(VipKey, VipInfo)>, DataPlaneError> {
        Ok(self.maps().vips.clone())
    }
    fn remove_vip(&mut self, vip: &VipKey) -> Result<(), DataPlaneError> {
        self.write()?;
        self.maps().vips.retain(|(k, _)| k != vip);
        Ok(())
    }
    fn write_service(
        &mut self,
        slot: u32,
        vip: VipKey,
        image: &ServiceImage,
    ) -> Result<(), DataPlaneError> {
        self.write()?;
        let mut maps = self.maps();
        maps.live.insert(slot, image.clone());
        maps.vips.retain(|(k, _)| *k != vip);
        maps.vips.push((vip, VipInfo { service: slot }));
        Ok(())
    }
    fn backend_counters(&self, _: u32) -> Result<BackendStats, DataPlaneError> {
        Ok(BackendStats::default())
    }
    fn global_counters(&self) -> Result<GlobalCounters, DataPlaneError> {
        Ok(GlobalCounters::default())
    }
    fn active_flows(&self, _: Duration) -> Result<FlowCounts, DataPlaneError> {
        Ok(self.maps().active.clone())
    }
    fn forget_flows(&mut self, backends: &HashSet<(u32, u32)>) -> Result<u64, DataPlaneError> {
        self.maps().forgotten.extend(backends.iter().copied());
        Ok(0)
    }
    fn close_idle_vip_ports(&mut self, _: Duration) -> Result<Vec<(u16, u8)>, DataPlaneError> {
        Ok(Vec::new())
    }
    fn teardown(self: Box<Self>) -> Result<(), DataPlaneError> {
        Ok(())
    }
}

#[derive(Clone, Default)]
pub(crate) struct FakeStore(
    Arc<Mutex<(Option<State>, usize, bool)>>,
    Arc<Mutex<HealthRecord>>,
);

impl FakeStore {
    pub(crate) fn holding(state: State) -> Self {
        Self(
            Arc::new(Mutex::new((Some(state), 0, false))),
            Arc::default(),
        )
    }
    pub(crate) fn saved(&self) -> Option<State> {
        self.0.lock().unwrap().0.clone()
    }
    pub(crate) fn saves(&self) -> usize {
        self.0.lock().unwrap().1
    }
    pub(crate) fn fail_next_save(&self) {
        self.0.lock().unwrap().2 = true;
    }
}

impl Store for FakeStore {
    fn load(&self) -> Result<State, StoreError> {
        Ok(self.saved().unwrap_or_default())
    }
    fn save(&self, state: &State) -> Result<(), StoreError> {
        let mut inner = self.0.lock().unwrap();
        if std::mem::take(&mut inner.2) {
            return Err(StoreError::Io {
                context: "sync state.json".into(),
                source: std::io::Error::from_raw_os_error(libc::ENOSPC),
            });
        }
        inner.0 = Some(state.clone());
        inner.1 += 1;
        Ok(())
    }
    fn load_health(&self) -> Result<HealthRecord, StoreError> {
        Ok(self.1.lock().unwrap().clone())
    }
    fn save_health(&self, record: &HealthRecord) -> Result<(), StoreError> {
        *self.1.lock().unwrap() = record.clone();
        Ok(())
    }
}

/// Every address resolves to a MAC made of its last bytes, except `198.18.0.250`.
pub(crate) struct FakeNeighbors;

impl Neighbors for FakeNeighbors {
    fn resolve(&self, addr: IpAddr) -> Result<NextHop, NeighborError> {
        if addr == ip("198.18.0.250") {
            return Err(NeighborError::Unresolved(addr, "eth0".into()));
        }
        let last = match addr {
            IpAddr::V4(a) => a.octets()[3],
            IpAddr::V6(a) => a.octets()[15],
        };
        Ok(NextHop {
            ifindex: 2,
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 1, last],
        })
    }
}

pub(crate) struct Rig {
    pub(crate) plane: FakePlane,
    pub(crate) store: FakeStore,
    pub(crate) clock: Arc<ManualClock>,
}

impl Rig {
    pub(crate) fn new(state: State) -> Self {
        Self {
            plane: FakePlane::default(),
            store: FakeStore::holding(state),
            clock: Arc::new(ManualClock::new(1_000_000)),
        }
    }

    pub(crate) fn start(&self) -> Controller {
        let ports = Ports {
            plane: Box::new(self.plane.clone()),
            neighbors: Box::new(FakeNeighbors),
            store: Box::new(self.store.clone()),
            clock: self.clock.clone(),
        };
        let settings = Settings {
            seed: SEED,
            flow_idle: Duration::from_secs(2),
            retire_timeout: RETIRE_TIMEOUT,
        };
        Controller::start(ports, settings).unwrap()
    }

    /// Whether the live image of every service of `state` is what `state` compiles to
    /// (every backend healthy), and no other slot is live with a VIP.
    pub(crate) fn live_matches(&self, state: &State) -> bool {
        let maps = self.plane.maps();
        state.services.values().all(|service| {
            let expected = compile(service, SEED, &Default::default()).unwrap().image;
            maps.live.get(&service.slot) == Some(&expected)
                && maps.vips.contains(&(
                    service.vip.key(),
                    VipInfo {
                        service: service.slot,
                    },
                ))
        }) && maps.vips.len() == state.services.len()
    }

    /// The data plane's backend entries: exactly the backends of `state`, with their epochs.
    pub(crate) fn backends_match(&self, state: &State) -> bool {
        let wanted: BTreeMap<u32, u32> = state
            .services
            .values()
            .flat_map(|s| {
                let retired = s.retired.iter().map(|r| (r.index, r.epoch));
                s.backends().map(|(_, b)| (b.index, b.epoch)).chain(retired)
            })
            .collect();
        let have: BTreeMap<u32, u32> = self
            .plane
            .maps()
            .backends
            .iter()
            .filter(|(_, b)| b.epoch != 0)
            .map(|(i, b)| (*i, b.epoch))
            .collect();
        have == wanted
    }
}
