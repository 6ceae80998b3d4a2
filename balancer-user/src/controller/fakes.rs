//! Fakes of the controller's ports for unit tests: a data plane that keeps the live image
//! of every service and can fail its n-th write, a store that can fail, neighbours that
//! answer from a rule, and a rig that starts a controller on them with a manual clock.

use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use balancer_common::{
    Backend, BackendStats, Endpoint, Reply, ReplyStats, Rewrite, Tunnel, VipInfo, VipKey,
};

use super::{
    ports::{Flows, Neighbors, Plane, Store},
    Controller, Ports, Settings,
};
use crate::{
    clock::ManualClock,
    compile::compile,
    dataplane::{
        fullnat::{Ending, Swept},
        unanswered::PendingFlow,
        Census, DataPlaneError, FlowCounts, GlobalCounters, Memory, ServiceImage,
    },
    health::HealthRecord,
    neighbor::{NeighborError, NextHop},
    state::{tests::ip, State, StoreError},
};

/// The hash seed of the rig's controller.
pub(crate) const SEED: u64 = 7;

/// The retire timeout of controllers on fakes.
pub(crate) const RETIRE_TIMEOUT: Duration = Duration::from_secs(3600);

/// What the fake data plane holds.
#[derive(Default)]
pub(crate) struct Maps {
    pub(crate) backends: BTreeMap<u32, Backend>,
    pub(crate) tunnels: BTreeMap<u32, Tunnel>,
    pub(crate) rewrites: BTreeMap<u32, Rewrite>,
    /// Reply entries: (backend endpoint, entry).
    pub(crate) replies: Vec<(Endpoint, Reply)>,
    /// The entries written, in order: ("tunnel" or "backend", index).
    pub(crate) entries_written: Vec<(&'static str, u32)>,
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
    /// While it is shut, counting flows waits.
    pub(crate) counting_gate: Option<Arc<Gate>>,
    /// The pending table's flows the plane reports.
    pub(crate) pending: Vec<PendingFlow>,
    /// Backend counters the plane reports, by index (zero for the others).
    pub(crate) counters: BTreeMap<u32, BackendStats>,
    /// Reply counters (what replies said) the plane reports, by index (zero for the others).
    pub(crate) answers: BTreeMap<u32, ReplyStats>,
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

/// A gate a test shuts to hold a fake call, and opens to let it through.
#[derive(Default)]
pub(crate) struct Gate {
    open: Mutex<bool>,
    opened: std::sync::Condvar,
}

impl Gate {
    /// Lets every waiting and later call through.
    pub(crate) fn open(&self) {
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.opened.notify_all();
    }

    /// Waits until the gate is open.
    fn pass(&self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        while !*open {
            open = self.opened.wait(open).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Flows for FakePlane {
    fn census(&self, _: Duration) -> Result<Census, DataPlaneError> {
        let gate = self.maps().counting_gate.clone();
        if let Some(gate) = gate {
            gate.pass();
        }
        let active = self.maps().active.clone();
        Ok(Census {
            established: active.values().sum(),
            active,
            pending: 0,
            established_capacity: 1024,
            pending_capacity: 256,
        })
    }
    fn sweep(&self, _: Ending) -> Result<Swept, DataPlaneError> {
        Ok(Swept::default())
    }
    fn pending(&self, _: Duration) -> Vec<PendingFlow> {
        self.maps().pending.clone()
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
        let mut maps = self.maps();
        maps.backends.insert(index, *b);
        maps.entries_written.push(("backend", index));
        Ok(())
    }
    fn tunnel(&self, index: u32) -> Result<Tunnel, DataPlaneError> {
        Ok(self.maps().tunnels.get(&index).copied().unwrap_or_default())
    }
    fn set_tunnel(&mut self, index: u32, tunnel: &Tunnel) -> Result<(), DataPlaneError> {
        self.write()?;
        let mut maps = self.maps();
        maps.tunnels.insert(index, *tunnel);
        maps.entries_written.push(("tunnel", index));
        Ok(())
    }
    fn rewrite(&self, index: u32) -> Result<Rewrite, DataPlaneError> {
        Ok(self
            .maps()
            .rewrites
            .get(&index)
            .copied()
            .unwrap_or_default())
    }
    fn set_rewrite(&mut self, index: u32, rewrite: &Rewrite) -> Result<(), DataPlaneError> {
        self.write()?;
        let mut maps = self.maps();
        maps.rewrites.insert(index, *rewrite);
        maps.entries_written.push(("rewrite", index));
        Ok(())
    }
    fn replies(&self) -> Result<Vec<(Endpoint, Reply)>, DataPlaneError> {
        Ok(self.maps().replies.clone())
    }
    fn set_reply(&mut self, backend: &Endpoint, reply: &Reply) -> Result<(), DataPlaneError> {
        self.write()?;
        let mut maps = self.maps();
        maps.replies.retain(|(k, _)| k != backend);
        maps.replies.push((*backend, *reply));
        Ok(())
    }
    fn reply_counters(&self, index: u32) -> Result<ReplyStats, DataPlaneError> {
        Ok(self.maps().answers.get(&index).copied().unwrap_or_default())
    }
    fn remove_reply(&mut self, backend: &Endpoint) -> Result<(), DataPlaneError> {
        self.write()?;
        self.maps().replies.retain(|(k, _)| k != backend);
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
    fn remove_tables(&mut self, slot: u32) -> Result<(), DataPlaneError> {
        self.write()?;
        self.maps().live.remove(&slot);
        Ok(())
    }
    fn table_slots(&self) -> Vec<u32> {
        self.maps().live.keys().copied().collect()
    }
    fn memory(&self) -> Result<Memory, DataPlaneError> {
        // A tables map's bytes: its chunks'.
        let bytes = |image: &ServiceImage| {
            let chunks = balancer_common::tables_chunks(image.rings.len() as u32, image.ring_size);
            u64::from(chunks) * balancer_common::CHUNK_BYTES as u64
        };
        Ok(Memory::new(
            Vec::new(),
            self.maps().live.values().map(bytes),
        ))
    }
    fn backend_counters(&self, index: u32) -> Result<BackendStats, DataPlaneError> {
        Ok(self
            .maps()
            .counters
            .get(&index)
            .copied()
            .unwrap_or_default())
    }
    fn global_counters(&self) -> Result<GlobalCounters, DataPlaneError> {
        Ok(GlobalCounters::default())
    }
    fn flows(&self) -> Result<Arc<dyn Flows>, DataPlaneError> {
        Ok(Arc::new(self.clone()))
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

/// The address [`FakeNeighbors`] never finds.
pub(crate) const SILENT: &str = "198.18.0.250";
/// The address [`FakeNeighbors`] finds only once it was resolved (probed and waited for).
pub(crate) const SLOW: &str = "198.18.0.251";

/// The address [`FakeNeighbors`] has no route to.
pub(crate) const ROUTELESS: &str = "198.18.9.9";

/// Every address is at a MAC made of its last byte, except [`SILENT`] (never found),
/// [`SLOW`] (found only after a resolution) and those moved elsewhere. Records
/// resolutions; a resolution can be made to take time. Every address but [`ROUTELESS`] is
/// routed, from the source [`source_of`] says.
#[derive(Clone, Default)]
pub(crate) struct FakeNeighbors(Arc<Mutex<Resolutions>>);

#[derive(Default)]
struct Resolutions {
    done: Vec<IpAddr>,
    takes: Duration,
    moved: BTreeMap<IpAddr, NextHop>,
}

impl FakeNeighbors {
    /// The addresses resolved so far, in order.
    pub(crate) fn resolved(&self) -> Vec<IpAddr> {
        self.0.lock().unwrap().done.clone()
    }

    /// Makes `addr` be found at `hop` from now on (it moved on the wire).
    pub(crate) fn move_to(&self, addr: IpAddr, hop: NextHop) {
        self.0.lock().unwrap().moved.insert(addr, hop);
    }

    /// Makes every later resolution take `takes`.
    pub(crate) fn resolutions_take(&self, takes: Duration) {
        self.0.lock().unwrap().takes = takes;
    }

    fn find(&self, addr: IpAddr) -> Result<NextHop, NeighborError> {
        let inner = self.0.lock().unwrap();
        if addr == ip(SILENT) || (addr == ip(SLOW) && !inner.done.contains(&addr)) {
            return Err(NeighborError::Unresolved(addr, "eth0".into()));
        }
        Ok(inner
            .moved
            .get(&addr)
            .copied()
            .unwrap_or_else(|| hop_of(addr)))
    }
}

/// Where [`FakeNeighbors`] finds `addr`.
pub(crate) fn hop_of(addr: IpAddr) -> NextHop {
    let last = match addr {
        IpAddr::V4(a) => a.octets()[3],
        IpAddr::V6(a) => a.octets()[15],
    };
    NextHop {
        ifindex: 2,
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 1, last],
    }
}

/// The source [`FakeNeighbors`] prefers for the route to `addr`: 198.18.0.1, 2001:db8::1.
pub(crate) fn source_of(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => ip("198.18.0.1"),
        IpAddr::V6(_) => ip("2001:db8::1"),
    }
}

impl Neighbors for FakeNeighbors {
    fn locate(&self, addrs: &[IpAddr]) -> Vec<Result<NextHop, NeighborError>> {
        addrs.iter().map(|a| self.find(*a)).collect()
    }
    fn resolve(&self, addrs: &[IpAddr]) -> Vec<Result<NextHop, NeighborError>> {
        let takes = self.0.lock().unwrap().takes;
        std::thread::sleep(takes);
        self.0.lock().unwrap().done.extend(addrs);
        self.locate(addrs)
    }
    fn probe(&self, _: &[IpAddr]) {}
    fn sources(&self, addrs: &[IpAddr]) -> Vec<Result<IpAddr, NeighborError>> {
        addrs
            .iter()
            .map(|a| match *a == ip(ROUTELESS) {
                true => Err(NeighborError::NoRoute(*a)),
                false => Ok(source_of(*a)),
            })
            .collect()
    }
}

pub(crate) struct Rig {
    pub(crate) plane: FakePlane,
    pub(crate) store: FakeStore,
    pub(crate) neighbors: FakeNeighbors,
    pub(crate) clock: Arc<ManualClock>,
}

impl Rig {
    pub(crate) fn new(state: State) -> Self {
        Self {
            plane: FakePlane::default(),
            store: FakeStore::holding(state),
            neighbors: FakeNeighbors::default(),
            clock: Arc::new(ManualClock::new(1_000_000)),
        }
    }

    pub(crate) fn start(&self) -> Controller {
        let ports = Ports {
            plane: Box::new(self.plane.clone()),
            neighbors: Arc::new(self.neighbors.clone()),
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
            && maps.live.len() == state.services.len()
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
