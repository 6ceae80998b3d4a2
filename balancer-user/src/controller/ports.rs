//! What the controller talks to, as traits: the data plane, the neighbour source, the
//! desired-state store. The daemon plugs in the kernel's; unit tests plug in fakes.

use std::{collections::HashSet, net::IpAddr, sync::Arc, time::Duration};

use balancer_common::{
    Backend, BackendStats, Endpoint, Reply, ReplyStats, Rewrite, Tunnel, VipInfo, VipKey,
};

use crate::{
    dataplane::{
        fullnat::{Ending, Swept},
        unanswered::PendingFlow,
        Census, DataPlane, DataPlaneError, FlowCounter, FlowCounts, GlobalCounters, Memory,
        ServiceImage,
    },
    health::HealthRecord,
    neighbor::{self, NeighborError, NextHop},
    state::{FileStore, State, StoreError},
};

/// The data plane's maps, as the controller writes and reads them.
pub trait Plane: Send {
    /// Whether the program was already attached when the daemon started (a restart).
    fn reattached(&self) -> bool;
    /// The forwarding entry of a backend index.
    fn backend(&self, index: u32) -> Result<Backend, DataPlaneError>;
    /// Writes a backend's forwarding entry; `fresh` also zeroes its counters.
    fn set_backend(
        &mut self,
        index: u32,
        backend: &Backend,
        fresh: bool,
    ) -> Result<(), DataPlaneError>;
    /// The tunnel entry of a backend index.
    fn tunnel(&self, index: u32) -> Result<Tunnel, DataPlaneError>;
    /// Writes a tunnelled backend's outer header, before the backend entry that names its
    /// mode.
    fn set_tunnel(&mut self, index: u32, tunnel: &Tunnel) -> Result<(), DataPlaneError>;
    /// The rewrite entry of a backend index.
    fn rewrite(&self, index: u32) -> Result<Rewrite, DataPlaneError>;
    /// Writes a `nat` backend's rewrite, before the backend entry that names its mode.
    fn set_rewrite(&mut self, index: u32, rewrite: &Rewrite) -> Result<(), DataPlaneError>;
    /// Every backend endpoint whose replies are rewritten, with its reply entry.
    fn replies(&self) -> Result<Vec<(Endpoint, Reply)>, DataPlaneError>;
    /// Rewrites the replies from a `nat` backend's endpoint as `reply` says.
    fn set_reply(&mut self, backend: &Endpoint, reply: &Reply) -> Result<(), DataPlaneError>;
    /// What the replies of a backend index said.
    fn reply_counters(&self, index: u32) -> Result<ReplyStats, DataPlaneError>;
    /// Stops rewriting the replies from a backend endpoint.
    fn remove_reply(&mut self, backend: &Endpoint) -> Result<(), DataPlaneError>;
    /// Frees a backend index.
    fn clear_backend(&mut self, index: u32) -> Result<(), DataPlaneError>;
    /// The VIPs in the data plane.
    fn vips(&self) -> Result<Vec<(VipKey, VipInfo)>, DataPlaneError>;
    /// Stops balancing a VIP.
    fn remove_vip(&mut self, vip: &VipKey) -> Result<(), DataPlaneError>;
    /// Publishes a service's image atomically (a new tables map swapped in whole).
    fn write_service(
        &mut self,
        slot: u32,
        vip: VipKey,
        image: &ServiceImage,
    ) -> Result<(), DataPlaneError>;
    /// Removes a service's tables and client pins (after its VIP).
    fn remove_tables(&mut self, slot: u32) -> Result<(), DataPlaneError>;
    /// The service slots that have tables in the data plane.
    fn table_slots(&self) -> Vec<u32>;
    /// The data plane's memory as the kernel accounts it.
    fn memory(&self) -> Result<Memory, DataPlaneError>;
    /// Counters of one backend index.
    fn backend_counters(&self, index: u32) -> Result<BackendStats, DataPlaneError>;
    /// Global counters.
    fn global_counters(&self) -> Result<GlobalCounters, DataPlaneError>;
    /// Something that counts tracked flows from any thread, without this plane.
    fn flows(&self) -> Result<Arc<dyn Flows>, DataPlaneError>;
    /// Forgets the tracked flows of the given (index, epoch) backends.
    fn forget_flows(&mut self, backends: &HashSet<(u32, u32)>) -> Result<u64, DataPlaneError>;
    /// Takes the ports of former VIPs without active flows (seen within `idle`) out of the
    /// pre-filter; returns them as (port, protocol).
    fn close_idle_vip_ports(&mut self, idle: Duration) -> Result<Vec<(u16, u8)>, DataPlaneError>;
    /// Detaches and unpins everything.
    fn teardown(self: Box<Self>) -> Result<(), DataPlaneError>;
}

impl Plane for DataPlane {
    fn reattached(&self) -> bool {
        DataPlane::reattached(self)
    }
    fn backend(&self, index: u32) -> Result<Backend, DataPlaneError> {
        DataPlane::backend(self, index)
    }
    fn set_backend(
        &mut self,
        index: u32,
        backend: &Backend,
        fresh: bool,
    ) -> Result<(), DataPlaneError> {
        DataPlane::set_backend(self, index, backend, fresh)
    }
    fn tunnel(&self, index: u32) -> Result<Tunnel, DataPlaneError> {
        DataPlane::tunnel(self, index)
    }
    fn set_tunnel(&mut self, index: u32, tunnel: &Tunnel) -> Result<(), DataPlaneError> {
        DataPlane::set_tunnel(self, index, tunnel)
    }
    fn rewrite(&self, index: u32) -> Result<Rewrite, DataPlaneError> {
        DataPlane::rewrite(self, index)
    }
    fn set_rewrite(&mut self, index: u32, rewrite: &Rewrite) -> Result<(), DataPlaneError> {
        DataPlane::set_rewrite(self, index, rewrite)
    }
    fn replies(&self) -> Result<Vec<(Endpoint, Reply)>, DataPlaneError> {
        DataPlane::replies(self)
    }
    fn set_reply(&mut self, backend: &Endpoint, reply: &Reply) -> Result<(), DataPlaneError> {
        DataPlane::set_reply(self, backend, reply)
    }
    fn reply_counters(&self, index: u32) -> Result<ReplyStats, DataPlaneError> {
        DataPlane::reply_counters(self, index)
    }
    fn remove_reply(&mut self, backend: &Endpoint) -> Result<(), DataPlaneError> {
        DataPlane::remove_reply(self, backend)
    }
    fn clear_backend(&mut self, index: u32) -> Result<(), DataPlaneError> {
        DataPlane::clear_backend(self, index)
    }
    fn vips(&self) -> Result<Vec<(VipKey, VipInfo)>, DataPlaneError> {
        DataPlane::vips(self)
    }
    fn remove_vip(&mut self, vip: &VipKey) -> Result<(), DataPlaneError> {
        DataPlane::remove_vip(self, vip)
    }
    fn write_service(
        &mut self,
        slot: u32,
        vip: VipKey,
        image: &ServiceImage,
    ) -> Result<(), DataPlaneError> {
        DataPlane::write_service(self, slot, vip, image)
    }
    fn remove_tables(&mut self, slot: u32) -> Result<(), DataPlaneError> {
        DataPlane::remove_tables(self, slot)
    }
    fn table_slots(&self) -> Vec<u32> {
        DataPlane::table_slots(self)
    }
    fn memory(&self) -> Result<Memory, DataPlaneError> {
        DataPlane::memory(self)
    }
    fn backend_counters(&self, index: u32) -> Result<BackendStats, DataPlaneError> {
        DataPlane::backend_counters(self, index)
    }
    fn global_counters(&self) -> Result<GlobalCounters, DataPlaneError> {
        DataPlane::global_counters(self)
    }
    fn flows(&self) -> Result<Arc<dyn Flows>, DataPlaneError> {
        Ok(Arc::new(self.flow_counter()?))
    }
    fn forget_flows(&mut self, backends: &HashSet<(u32, u32)>) -> Result<u64, DataPlaneError> {
        DataPlane::forget_flows(self, backends)
    }
    fn close_idle_vip_ports(&mut self, idle: Duration) -> Result<Vec<(u16, u8)>, DataPlaneError> {
        DataPlane::close_idle_vip_ports(self, idle)
    }
    fn teardown(self: Box<Self>) -> Result<(), DataPlaneError> {
        DataPlane::teardown(*self)
    }
}

/// Counts tracked flows from any thread, so that a walk of connection tracking holds no
/// lock of the controller's.
pub trait Flows: Send + Sync {
    /// One walk of connection tracking: flows per (index, epoch) seen within `idle`, and
    /// each table's entries.
    fn census(&self, idle: Duration) -> Result<Census, DataPlaneError>;
    /// Tracked flows per (index, epoch) seen within `idle`.
    fn count(&self, idle: Duration) -> Result<FlowCounts, DataPlaneError> {
        Ok(self.census(idle)?.active)
    }
    /// Every flow of the pending table, expired when `window` has passed since its last
    /// packet.
    fn pending(&self, window: Duration) -> Vec<PendingFlow>;
    /// Frees the full-NAT translations of the flows that have ended by `ending`.
    fn sweep(&self, ending: Ending) -> Result<Swept, DataPlaneError>;
}

impl Flows for FlowCounter {
    fn census(&self, idle: Duration) -> Result<Census, DataPlaneError> {
        FlowCounter::census(self, idle)
    }
    fn pending(&self, window: Duration) -> Vec<PendingFlow> {
        FlowCounter::pending(self, window)
    }
    fn sweep(&self, ending: Ending) -> Result<Swept, DataPlaneError> {
        FlowCounter::sweep(self, ending)
    }
}

/// Where backends are on the wire.
pub trait Neighbors: Send + Sync {
    /// Where each of `addrs` is, from the tables as they stand: no probe, no wait, so fit
    /// to run under the controller's lock. A backend whose neighbour entry is missing is
    /// [`NeighborError::Unresolved`].
    fn locate(&self, addrs: &[IpAddr]) -> Vec<Result<NextHop, NeighborError>>;
    /// Like [`Neighbors::locate`], but probes the backends whose neighbour entry is
    /// missing and waits for them (a bounded time): never under the controller's lock.
    fn resolve(&self, addrs: &[IpAddr]) -> Vec<Result<NextHop, NeighborError>>;
    /// Makes the kernel resolve `addrs` again, without waiting.
    fn probe(&self, addrs: &[IpAddr]);
    /// For routed backends: the source address the kernel prefers for the route to each
    /// of `addrs` (a gateway is fine), from the tables as they stand — fit to run under the
    /// controller's lock. No route: [`NeighborError::NoRoute`].
    fn sources(&self, addrs: &[IpAddr]) -> Vec<Result<IpAddr, NeighborError>>;
}

/// The kernel's routing, link and neighbour tables (see [`neighbor`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelNeighbors;

impl Neighbors for KernelNeighbors {
    fn locate(&self, addrs: &[IpAddr]) -> Vec<Result<NextHop, NeighborError>> {
        neighbor::locate(addrs)
    }
    fn resolve(&self, addrs: &[IpAddr]) -> Vec<Result<NextHop, NeighborError>> {
        neighbor::resolve(addrs)
    }
    fn probe(&self, addrs: &[IpAddr]) {
        neighbor::probe(addrs)
    }
    fn sources(&self, addrs: &[IpAddr]) -> Vec<Result<IpAddr, NeighborError>> {
        neighbor::sources(addrs)
    }
}

/// Where the desired state is kept across restarts.
pub trait Store: Send {
    /// The stored state; an empty state when none was stored yet.
    fn load(&self) -> Result<State, StoreError>;
    /// Replaces the stored state atomically.
    fn save(&self, state: &State) -> Result<(), StoreError>;
    /// The backends' health as last stored; an empty record when none was.
    fn load_health(&self) -> Result<HealthRecord, StoreError>;
    /// Replaces the stored health of the backends.
    fn save_health(&self, record: &HealthRecord) -> Result<(), StoreError>;
}

impl Store for FileStore {
    fn load(&self) -> Result<State, StoreError> {
        FileStore::load(self)
    }
    fn save(&self, state: &State) -> Result<(), StoreError> {
        FileStore::save(self, state)
    }
    fn load_health(&self) -> Result<HealthRecord, StoreError> {
        FileStore::load_health(self)
    }
    fn save_health(&self, record: &HealthRecord) -> Result<(), StoreError> {
        FileStore::save_health(self, record)
    }
}
