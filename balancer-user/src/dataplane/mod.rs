//! The kernel side as the daemon sees it: loading and attaching the XDP program, pinning,
//! and writing the maps.
//!
//! Writes follow one rule that makes every change atomic for packets: a service's tables
//! are one map of their own (`tables`), made whole for each change and swapped into
//! `TABLES` with one update. A packet therefore reads either the whole old tables or the
//! whole new ones; the kernel returns from the update only once no program runs with the
//! old map, and frees it after. Client pins are kept per generation (0 or 1) in one trie:
//! the new tables' generation is written before the swap, the old one removed after it.

mod attach;
pub mod bpffs;
mod error;
mod events;
pub mod fullnat;
pub mod link;
mod mapping;
pub mod memory;
mod nat;
pub mod object;
mod pending;
pub mod pinned;
mod stats;
pub mod sync;
mod tables;
pub mod unanswered;

use std::{
    collections::{BTreeMap, BTreeSet},
    os::fd::AsFd,
    time::Duration,
};

use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    Array, HashMap, HashOfMaps, IterableMap, MapData, PerCpuArray, PerCpuValues,
};
use balancer_common::{
    vip_port_bit, Backend, BackendStats, Chunk, ClientPinKey, Endpoint, FlowKey, FlowState, Reply,
    ReplyStats, Rewrite, Tunnel, VipInfo, VipKey, CLIENT_PIN_PREFIX_BASE, GENERATIONS, PROTO_TCP,
    PROTO_UDP, TUNNEL_STAT_COUNT, VIP_PORT_ENTRIES,
};

pub use attach::{AttachOptions, Attachment};
pub use error::DataPlaneError;
pub use memory::{MapMemory, Memory};
pub use stats::{
    monotonic_ns, Census, FlowCounter, FlowCounts, GlobalCounters, NatCounters, TunnelCounters,
    LINGER,
};

/// Everything one service needs in the data plane: what its tables map holds, and its
/// client pins.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceImage {
    /// Slots of each group's Maglev table (a prime).
    pub ring_size: u32,
    /// `FLAG_*` bits (client affinity, client pins).
    pub flags: u32,
    /// Seed of the flow hash.
    pub seed: u64,
    /// The group of each split cell (`SPLIT_CELLS` of them), `NO_GROUP` when none serves.
    pub cells: Vec<u8>,
    /// The Maglev table of each group, in group-index order: `ring_size` backend indices
    /// (`NONE` when the group is empty).
    pub rings: Vec<Vec<u32>>,
    /// Client pins.
    pub client_pins: Vec<ImageClientPin>,
}

/// A client pin as the data plane stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageClientPin {
    /// Address family of the prefix.
    pub family: u8,
    /// Prefix address (IPv4 in the first four bytes).
    pub addr: [u8; 16],
    /// Prefix length in bits.
    pub prefix_len: u8,
    /// Group index the prefix's clients get.
    pub group: u32,
}

/// A service's tables as written to `TABLES`.
#[derive(Clone, Copy, Debug)]
struct Published {
    /// Their generation: the client pins they use.
    generation: u32,
    /// The bytes the kernel accounts for their map.
    bytes: u64,
}

impl Published {
    /// What `map`, of `generation`, is.
    fn of(map: &Array<MapData, Chunk>, generation: u32) -> Result<Self, DataPlaneError> {
        let fd = IterableMap::map(map).fd().as_fd();
        let bytes = memory::memlock(fd).map_err(|source| DataPlaneError::Io {
            context: "read the memory of a service's tables".into(),
            source,
        })?;
        Ok(Self { generation, bytes })
    }
}

/// Outcome of one `BPF_PROG_TEST_RUN`.
#[derive(Clone, Debug)]
pub struct TestRun {
    /// XDP action the program returned.
    pub action: u32,
    /// The packet after the program.
    pub packet: Vec<u8>,
    /// Mean time per run as the kernel measured it.
    pub duration: Duration,
}

/// Handles to the pinned maps of an attached data plane.
pub struct DataPlane {
    ebpf: aya::Ebpf,
    bpffs: bpffs::Layout,
    attachment: Attachment,
    vips: HashMap<MapData, VipKey, VipInfo>,
    tables: HashOfMaps<MapData, u32, Array<MapData, Chunk>>,
    /// Per service slot in `TABLES`: the generation of its tables and the bytes the kernel
    /// accounts for their map (read from the maps at load, kept as they are written).
    services: BTreeMap<u32, Published>,
    /// Every map the program uses, by name (for their memory).
    shared: Vec<(String, MapData)>,
    backends: Array<MapData, Backend>,
    tunnels: Array<MapData, Tunnel>,
    tunnel_stats: PerCpuArray<MapData, u64>,
    rewrites: Array<MapData, Rewrite>,
    replies: HashMap<MapData, Endpoint, Reply>,
    reply_stats: PerCpuArray<MapData, ReplyStats>,
    nat_stats: PerCpuArray<MapData, u64>,
    backend_stats: PerCpuArray<MapData, BackendStats>,
    global_stats: PerCpuArray<MapData, u64>,
    conntrack: HashMap<MapData, FlowKey, FlowState>,
    pending: pending::PendingTable,
    vip_ports: Array<MapData, u32>,
    client_pins: LpmTrie<MapData, ClientPinKey, u32>,
    /// (port, protocol) of former VIPs still in the pre-filter; `None` until the filter was
    /// read once (a restarted daemon learns there what its predecessor left).
    lingering_ports: Option<BTreeSet<(u16, u8)>>,
}

impl DataPlane {
    /// Loads the program and attaches it, or takes over the one already attached (pinned),
    /// keeping its maps and so every tracked flow.
    pub fn attach(options: &AttachOptions) -> Result<Self, DataPlaneError> {
        let mut ebpf = attach::load(&options.bpffs, options.conntrack_entries, options.sync)?;
        let attachment = attach::attach(&mut ebpf, options)?;
        events::forward_kernel_log(&mut ebpf);
        Self::from_loaded(ebpf, options.bpffs.clone(), attachment)
    }

    /// Loads the program and its pinned maps without attaching it anywhere: for
    /// `BPF_PROG_TEST_RUN` (tests and benchmarks). Sync records are off.
    pub fn load_unattached(
        bpffs: &bpffs::Layout,
        conntrack_entries: u32,
    ) -> Result<Self, DataPlaneError> {
        Self::load_unattached_syncing(bpffs, conntrack_entries, false)
    }

    /// [`DataPlane::load_unattached`], the program writing sync records when `sync` is set.
    pub fn load_unattached_syncing(
        bpffs: &bpffs::Layout,
        conntrack_entries: u32,
        sync: bool,
    ) -> Result<Self, DataPlaneError> {
        let ebpf = attach::load(bpffs, conntrack_entries, sync)?;
        Self::from_loaded(ebpf, bpffs.clone(), Attachment::New)
    }

    fn from_loaded(
        mut ebpf: aya::Ebpf,
        bpffs: bpffs::Layout,
        attachment: Attachment,
    ) -> Result<Self, DataPlaneError> {
        let mut plane = Self {
            vips: take(&mut ebpf, "VIPS")?,
            tables: take(&mut ebpf, "TABLES")?,
            services: BTreeMap::new(),
            shared: attach::used_maps(&bpffs.maps())?,
            backends: take(&mut ebpf, "BACKENDS")?,
            tunnels: take(&mut ebpf, "TUNNELS")?,
            tunnel_stats: take(&mut ebpf, "TUNNEL_STATS")?,
            rewrites: take(&mut ebpf, "REWRITES")?,
            replies: take(&mut ebpf, "REPLIES")?,
            reply_stats: take(&mut ebpf, "REPLY_STATS")?,
            nat_stats: take(&mut ebpf, "NAT_STATS")?,
            backend_stats: take(&mut ebpf, "BACKEND_STATS")?,
            global_stats: take(&mut ebpf, "GLOBAL_STATS")?,
            conntrack: take(&mut ebpf, "CONNTRACK")?,
            pending: pending::PendingTable::map(take(&mut ebpf, "PENDING")?)?,
            vip_ports: take(&mut ebpf, "VIP_PORTS")?,
            client_pins: take(&mut ebpf, "CLIENT_PINS")?,
            ebpf,
            bpffs,
            attachment,
            lingering_ports: None,
        };
        plane.services = plane.published()?;
        Ok(plane)
    }

    /// What `TABLES` holds per service slot, read from the maps (each one's header and
    /// the kernel's account of it).
    fn published(&self) -> Result<BTreeMap<u32, Published>, DataPlaneError> {
        let mut services = BTreeMap::new();
        for slot in self.tables.keys() {
            let slot = match slot {
                Ok(slot) => slot,
                Err(aya::maps::MapError::KeyNotFound) => continue,
                Err(e) => return Err(map_err("list TABLES")(e)),
            };
            let map = match self.tables.get(&slot, 0) {
                Ok(map) => map,
                Err(e) if missing(&e) => continue,
                // Opening a map by id needs CAP_SYS_ADMIN, which the daemon's unit does not
                // grant: the generation is the one its client pins carry (any, without
                // pins), and the bytes are known once the daemon's start rewrites it.
                Err(e) if denied(&e) => {
                    let generation = self.pinned_generation(slot)?;
                    services.insert(
                        slot,
                        Published {
                            generation,
                            bytes: 0,
                        },
                    );
                    continue;
                }
                Err(e) => return Err(map_err("read TABLES")(e)),
            };
            services.insert(slot, Published::of(&map, tables::header(&map)?.generation)?);
        }
        Ok(services)
    }

    /// Whether a pinned attachment was taken over (a restart), as opposed to a new one.
    pub fn reattached(&self) -> bool {
        self.attachment != Attachment::New
    }

    /// How the program came to be attached.
    pub fn attachment(&self) -> Attachment {
        self.attachment
    }

    /// Runs the program once per `repeat` on `packet` with `BPF_PROG_TEST_RUN`, returning
    /// the XDP action, the packet as the program left it, and the mean time per run.
    pub fn test_run(&mut self, packet: &[u8], repeat: u32) -> Result<TestRun, DataPlaneError> {
        use aya::programs::{TestRun as _, TestRunOptions};
        let mut out = vec![0u8; packet.len() + 256];
        let program = attach::program(&mut self.ebpf)?;
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(packet),
                data_out: Some(&mut out),
                repeat,
                ..Default::default()
            })
            .map_err(|source| DataPlaneError::Program {
                context: "BPF_PROG_TEST_RUN".into(),
                source,
            })?;
        out.truncate(result.data_size_out as usize);
        Ok(TestRun {
            action: result.return_value,
            packet: out,
            duration: result.duration,
        })
    }

    /// Publishes a service: writes its client pins under the generation its live tables
    /// do not use, makes a new tables map of that generation, swaps it in for the live one
    /// (the kernel returns once no program runs with the old map), removes the old
    /// generation's pins, and makes sure its VIP points at it.
    pub fn write_service(
        &mut self,
        slot: u32,
        vip: VipKey,
        image: &ServiceImage,
    ) -> Result<(), DataPlaneError> {
        let live = self.services.get(&slot).map(|p| p.generation);
        let next = live.map_or(0, |live| (live + 1) % GENERATIONS);
        self.replace_client_pins(slot, next, &image.client_pins)?;
        let map = tables::create(&tables::encode(image, next))?;
        let published = Published::of(&map, next)?;
        self.tables
            .insert(slot, &map, 0)
            .map_err(map_err("write TABLES"))?;
        self.services.insert(slot, published);
        if let Some(live) = live {
            self.remove_client_pins(slot, Some(live))?;
        }
        // The pre-filter lets the VIP's packets through before the VIP exists (and again
        // for maps pinned before the filter was).
        self.open_vip_port(&vip)?;
        let info = VipInfo { service: slot };
        if self.vips.get(&vip, 0).ok() != Some(info) {
            self.vips
                .insert(vip, info, 0)
                .map_err(map_err("write VIPS"))?;
        }
        Ok(())
    }

    /// Removes a service's tables and client pins (its VIP goes first: see
    /// [`DataPlane::remove_vip`]); the kernel frees its map once no program runs with it.
    pub fn remove_tables(&mut self, slot: u32) -> Result<(), DataPlaneError> {
        match self.tables.remove(&slot) {
            Err(e) if !missing(&e) => return Err(map_err("remove from TABLES")(e)),
            _ => {}
        }
        self.services.remove(&slot);
        self.remove_client_pins(slot, None)
    }

    /// The service slots that have tables in the data plane.
    pub fn table_slots(&self) -> Vec<u32> {
        self.services.keys().copied().collect()
    }

    /// The data plane's memory as the kernel accounts it: every map the program uses, and
    /// every service's tables map (as accounted when written).
    pub fn memory(&self) -> Result<Memory, DataPlaneError> {
        let mut maps = Vec::new();
        for (name, map) in &self.shared {
            let bytes = memory::memlock(map.fd().as_fd()).map_err(|source| DataPlaneError::Io {
                context: format!("read the memory of the map {name}"),
                source,
            })?;
            maps.push(MapMemory {
                name: name.clone(),
                bytes,
            });
        }
        Ok(Memory::new(maps, self.services.values().map(|p| p.bytes)))
    }

    /// Makes the client pins of `slot`'s generation `generation` exactly `pins`.
    fn replace_client_pins(
        &mut self,
        slot: u32,
        generation: u32,
        pins: &[ImageClientPin],
    ) -> Result<(), DataPlaneError> {
        self.remove_client_pins(slot, Some(generation))?;
        for pin in pins {
            let key = Key::new(
                CLIENT_PIN_PREFIX_BASE + u32::from(pin.prefix_len),
                ClientPinKey::new(slot, generation, pin.family, pin.addr),
            );
            self.client_pins
                .insert(&key, pin.group, 0)
                .map_err(map_err("write CLIENT_PINS"))?;
        }
        Ok(())
    }

    /// The generation the client pins of `slot` carry (0 without pins): the live tables'
    /// once a publish has finished.
    fn pinned_generation(&self, slot: u32) -> Result<u32, DataPlaneError> {
        Ok(self
            .slot_pins(slot)?
            .first()
            .map_or(0, |key| u32::from(key.data().generation)))
    }

    /// Removes the client pins of `slot`'s generation `generation` (all its pins: `None`).
    fn remove_client_pins(
        &mut self,
        slot: u32,
        generation: Option<u32>,
    ) -> Result<(), DataPlaneError> {
        let stale = self
            .slot_pins(slot)?
            .into_iter()
            .filter(|key| generation.is_none_or(|g| u32::from(key.data().generation) == g));
        for key in stale {
            match self.client_pins.remove(&key) {
                Err(e) if !missing(&e) => return Err(map_err("remove from CLIENT_PINS")(e)),
                _ => {}
            }
        }
        Ok(())
    }

    /// The keys of `slot`'s client pins (of any generation), as `CLIENT_PINS` lists them.
    fn slot_pins(&self, slot: u32) -> Result<Vec<Key<ClientPinKey>>, DataPlaneError> {
        let mut pins = Vec::new();
        for key in self.client_pins.keys() {
            let key = match key {
                Ok(key) => key,
                // Removed while walking: not there any more.
                Err(aya::maps::MapError::KeyNotFound) => continue,
                Err(e) => return Err(map_err("list CLIENT_PINS")(e)),
            };
            if key.data().service_be == slot.to_be_bytes() {
                pins.push(key);
            }
        }
        Ok(pins)
    }

    /// Stops balancing a VIP: its new flows are passed to the kernel from now on. Its port
    /// stays in the pre-filter, so its tracked flows keep reaching their backends, until
    /// [`DataPlane::close_idle_vip_ports`] finds no active flow to it.
    pub fn remove_vip(&mut self, vip: &VipKey) -> Result<(), DataPlaneError> {
        match self.vips.remove(vip) {
            Err(e) if !missing(&e) => return Err(map_err("remove from VIPS")(e)),
            _ => {}
        }
        if let Some(lingering) = &mut self.lingering_ports {
            lingering.insert((u16::from_be(vip.port_be), vip.proto));
        }
        Ok(())
    }

    /// Sets the pre-filter bit of a VIP's port and protocol.
    fn open_vip_port(&mut self, vip: &VipKey) -> Result<(), DataPlaneError> {
        self.mark_port(u16::from_be(vip.port_be), vip_port_bit(vip.proto), true)
    }

    /// Sets (`on`) or clears `bit` in the pre-filter entry of `port`; written only when
    /// that changes it.
    fn mark_port(&mut self, port: u16, bit: u32, on: bool) -> Result<(), DataPlaneError> {
        let index = u32::from(port);
        let bits = self
            .vip_ports
            .get(&index, 0)
            .map_err(map_err("read VIP_PORTS"))?;
        let marked = if on { bits | bit } else { bits & !bit };
        if marked != bits {
            self.vip_ports
                .set(index, marked, 0)
                .map_err(map_err("write VIP_PORTS"))?;
        }
        Ok(())
    }

    /// Takes out of the pre-filter the ports of former VIPs that no current VIP serves and
    /// no active flow (see [`DataPlane::active_flows`]) is addressed to: their packets are
    /// passed from then on without a connection-tracking lookup. Walks connection tracking
    /// only while such a port lingers; the first call reads the whole filter once, to learn
    /// what a previous daemon left there. Returns the ports taken out.
    pub fn close_idle_vip_ports(
        &mut self,
        idle: Duration,
    ) -> Result<Vec<(u16, u8)>, DataPlaneError> {
        let current: BTreeSet<(u16, u8)> = self
            .vips()?
            .iter()
            .map(|(vip, _)| (u16::from_be(vip.port_be), vip.proto))
            .collect();
        let lingering = match self.lingering_ports.take() {
            Some(lingering) => lingering,
            None => self.filtered_ports()?,
        };
        let mut lingering: BTreeSet<(u16, u8)> = lingering.difference(&current).copied().collect();
        let mut closed = Vec::new();
        if !lingering.is_empty() {
            // Pending first: a flow promoted during the walk is then seen in CONNTRACK.
            let used = self.tracking().active_ports(idle)?;
            for &(port, proto) in lingering.difference(&used) {
                self.mark_port(port, vip_port_bit(proto), false)?;
                closed.push((port, proto));
            }
            lingering.retain(|p| !closed.contains(p));
        }
        self.lingering_ports = Some(lingering);
        Ok(closed)
    }

    /// Every (port, protocol) the pre-filter lets through.
    fn filtered_ports(&self) -> Result<BTreeSet<(u16, u8)>, DataPlaneError> {
        let mut ports = BTreeSet::new();
        for index in 0..VIP_PORT_ENTRIES {
            let bits = self
                .vip_ports
                .get(&index, 0)
                .map_err(map_err("read VIP_PORTS"))?;
            for proto in [PROTO_TCP, PROTO_UDP] {
                if bits & vip_port_bit(proto) != 0 {
                    ports.insert((index as u16, proto));
                }
            }
        }
        Ok(ports)
    }

    /// The VIPs currently in the data plane.
    pub fn vips(&self) -> Result<Vec<(VipKey, VipInfo)>, DataPlaneError> {
        self.vips
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err("list VIPS"))
    }

    /// Writes a backend's forwarding entry. `fresh` also zeroes its counters (a newly
    /// allocated index must not inherit a previous occupant's numbers).
    pub fn set_backend(
        &mut self,
        index: u32,
        backend: &Backend,
        fresh: bool,
    ) -> Result<(), DataPlaneError> {
        if fresh {
            let cpus = aya::util::nr_cpus().map_err(|(_, e)| DataPlaneError::Io {
                context: "count CPUs".into(),
                source: e,
            })?;
            let zero =
                PerCpuValues::try_from(vec![BackendStats::default(); cpus]).map_err(|e| {
                    DataPlaneError::Io {
                        context: "build per-CPU values".into(),
                        source: e,
                    }
                })?;
            self.backend_stats
                .set(index, zero, 0)
                .map_err(map_err("reset BACKEND_STATS"))?;
            let zero = PerCpuValues::try_from(vec![ReplyStats::default(); cpus]).map_err(|e| {
                DataPlaneError::Io {
                    context: "build per-CPU values".into(),
                    source: e,
                }
            })?;
            self.reply_stats
                .set(index, zero, 0)
                .map_err(map_err("reset REPLY_STATS"))?;
        }
        self.backends
            .set(index, backend, 0)
            .map_err(map_err("write BACKENDS"))
    }

    /// Writes the outer header of a tunnelled backend (its `Backend::forward` a tunnel
    /// mode); written before the backend entry that names the mode.
    pub fn set_tunnel(&mut self, index: u32, tunnel: &Tunnel) -> Result<(), DataPlaneError> {
        self.tunnels
            .set(index, tunnel, 0)
            .map_err(map_err("write TUNNELS"))
    }

    /// The tunnel entry of a backend index as the data plane has it.
    pub fn tunnel(&self, index: u32) -> Result<Tunnel, DataPlaneError> {
        self.tunnels.get(&index, 0).map_err(map_err("read TUNNELS"))
    }

    /// The tunnel counters (`TUNNEL_STAT_*`), summed over CPUs; one an older pinned map has
    /// no entry for reads as 0.
    pub fn tunnel_counters(&self) -> Result<[u64; TUNNEL_STAT_COUNT as usize], DataPlaneError> {
        let mut counters = [0u64; TUNNEL_STAT_COUNT as usize];
        for (i, counter) in counters.iter_mut().enumerate() {
            *counter = stats::tunnel_counter(&self.tunnel_stats, i as u32)?;
        }
        Ok(counters)
    }

    /// The forwarding entry of a backend index as the data plane has it.
    pub fn backend(&self, index: u32) -> Result<Backend, DataPlaneError> {
        self.backends
            .get(&index, 0)
            .map_err(map_err("read BACKENDS"))
    }

    /// Frees a backend index: flows still pinned to it will be re-balanced.
    pub fn clear_backend(&mut self, index: u32) -> Result<(), DataPlaneError> {
        self.backends
            .set(index, Backend::default(), 0)
            .map_err(map_err("clear BACKENDS"))
    }

    /// Counters of one backend index, summed over CPUs.
    pub fn backend_counters(&self, index: u32) -> Result<BackendStats, DataPlaneError> {
        let values = self
            .backend_stats
            .get(&index, 0)
            .map_err(map_err("read BACKEND_STATS"))?;
        Ok(stats::sum_backend(&values))
    }

    /// Global counters, summed over CPUs.
    pub fn global_counters(&self) -> Result<GlobalCounters, DataPlaneError> {
        GlobalCounters::read(&self.global_stats, &self.tunnel_stats, &self.nat_stats)
    }

    /// A counter of tracked flows that works without this data plane (another handle on
    /// the pinned connection tracking).
    pub fn flow_counter(&self) -> Result<FlowCounter, DataPlaneError> {
        FlowCounter::open(&self.bpffs.maps())
    }

    /// Active tracked flows per (backend index, epoch): open flows seen within `idle`;
    /// flows whose client sent a FIN or RST, and flows that sent only their first packet,
    /// seen within [`LINGER`] (or `idle`, if shorter).
    pub fn active_flows(&self, idle: Duration) -> Result<FlowCounts, DataPlaneError> {
        Ok(self.tracking().census(idle)?.active)
    }

    /// Forgets the tracked flows pinned to any of `backends` ((index, epoch) pairs): their
    /// next packets are balanced like new flows. Returns how many were forgotten.
    pub fn forget_flows(
        &mut self,
        backends: &std::collections::HashSet<(u32, u32)>,
    ) -> Result<u64, DataPlaneError> {
        stats::forget(&mut self.conntrack, &mut self.pending, backends)
    }

    /// The two connection-tracking tables, to walk.
    fn tracking(&self) -> stats::Tracking<'_> {
        stats::Tracking {
            conntrack: &self.conntrack,
            pending: &self.pending,
        }
    }

    /// Detaches the program and unpins everything; the maps go with the last reference.
    pub fn teardown(self) -> Result<(), DataPlaneError> {
        attach::unpin_all(&self.bpffs)
    }
}

/// Unpins whatever is pinned at `layout` (link, maps) with no data plane loaded: the program
/// is detached and the maps freed once no process holds them.
pub fn unpin(layout: &bpffs::Layout) -> Result<(), DataPlaneError> {
    attach::unpin_all(layout)
}

fn take<T>(ebpf: &mut aya::Ebpf, name: &'static str) -> Result<T, DataPlaneError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| DataPlaneError::MissingMap(name.to_string()))?;
    T::try_from(map).map_err(map_err(name))
}

/// Whether a map call failed only because the key was not there: aya reports a deletion of
/// a missing key as the syscall's ENOENT, not as `KeyNotFound`.
/// Whether a map operation was refused for want of a capability.
fn denied(error: &aya::maps::MapError) -> bool {
    matches!(error, aya::maps::MapError::SyscallError(e)
        if e.io_error.raw_os_error() == Some(libc::EPERM))
}

pub(super) fn missing(error: &aya::maps::MapError) -> bool {
    match error {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

fn map_err(context: &'static str) -> impl Fn(aya::maps::MapError) -> DataPlaneError {
    move |source| DataPlaneError::Map {
        context: context.to_string(),
        source,
    }
}
