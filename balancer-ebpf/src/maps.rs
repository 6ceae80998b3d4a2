//! The maps shared with the daemon. All are pinned by name, so a restarted daemon (or a
//! replaced program) keeps the same tables and connection-tracking state.

use aya_ebpf::{
    btf_maps::{self, HashOfMaps},
    macros::{btf_map, map},
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};
use balancer_common::{
    pending_slots, Allocation, Backend, BackendStats, Chunk, ClientPinKey, Endpoint, FlowKey,
    FlowState, PendingSlot, Reply, ReplyStats, Rewrite, Translation, Tunnel, VipInfo, VipKey,
    DEFAULT_CONNTRACK_ENTRIES, GENERATIONS, MAX_BACKENDS, MAX_CLIENT_PINS, MAX_SERVICES,
    NAT_STAT_COUNT, STAT_COUNT, TABLES_MAP_FLAGS, TUNNEL_STAT_COUNT, VIP_PORT_ENTRIES,
};

/// VIP (address, port, protocol) -> service slot.
#[map]
pub static VIPS: HashMap<VipKey, VipInfo> = HashMap::pinned(MAX_SERVICES, 0);

/// One service's tables (`balancer_common::tables`): header, split cells, group rings. The
/// entries given here describe the template only; each service's map has its own size.
pub type ServiceTables = btf_maps::Array<Chunk, 1, { TABLES_MAP_FLAGS as usize }>;

/// Service slot -> the service's tables, a map of its own made by the daemon for each
/// change and swapped in whole with one update (the kernel returns from the update only
/// once no program runs with the previous map; it frees that map after).
#[btf_map]
pub static TABLES: HashOfMaps<u32, ServiceTables, { MAX_SERVICES as usize }> = HashOfMaps::new();

/// Backend index -> forwarding data and epoch.
#[map]
pub static BACKENDS: Array<Backend> = Array::pinned(MAX_BACKENDS, 0);

/// Backend index -> the outer header of a tunnelled backend (`Backend::forward` is a tunnel
/// mode); unused for direct server return.
#[map]
pub static TUNNELS: Array<Tunnel> = Array::pinned(MAX_BACKENDS, 0);

/// Tunnel counters, indexed by `TUNNEL_STAT_*` (a map of their own: the global counters'
/// map keeps the size older data planes pinned).
#[map]
pub static TUNNEL_STATS: PerCpuArray<u64> = PerCpuArray::pinned(TUNNEL_STAT_COUNT, 0);

/// Backend index -> the destination a `nat` backend's packets are rewritten to; unused for
/// other modes.
#[map]
pub static REWRITES: Array<Rewrite> = Array::pinned(MAX_BACKENDS, 0);

/// A `nat` backend's endpoint (address, port, protocol) -> the VIP endpoint its replies
/// are rewritten to come from, and the backend's index.
#[map]
pub static REPLIES: HashMap<Endpoint, Reply> = HashMap::pinned(MAX_BACKENDS, 0);

/// Backend index -> what its replies said (`nat` backends only).
#[map]
pub static REPLY_STATS: PerCpuArray<ReplyStats> = PerCpuArray::pinned(MAX_BACKENDS, 0);

/// NAT counters, indexed by `NAT_STAT_*`.
#[map]
pub static NAT_STATS: PerCpuArray<u64> = PerCpuArray::pinned(NAT_STAT_COUNT, 0);

/// Backend index -> traffic counters.
#[map]
pub static BACKEND_STATS: PerCpuArray<BackendStats> = PerCpuArray::pinned(MAX_BACKENDS, 0);

/// Global counters, indexed by `STAT_*`.
#[map]
pub static GLOBAL_STATS: PerCpuArray<u64> = PerCpuArray::pinned(STAT_COUNT, 0);

/// Destination port -> `vip_port_bit(proto)` of each protocol that a VIP, current or
/// former with flows left, serves on that port: the pre-filter that lets other packets go
/// before any hash lookup.
#[map]
pub static VIP_PORTS: Array<u32> = Array::pinned(VIP_PORT_ENTRIES, 0);

/// 5-tuple -> backend of the flows that sent more than their first packet (established
/// connection tracking). The daemon sizes it (`--conntrack-size`).
#[map]
pub static CONNTRACK: LruHashMap<FlowKey, FlowState> =
    LruHashMap::pinned(DEFAULT_CONNTRACK_ENTRIES, 0);

/// Full NAT: a flow's client-side key -> the pool address and port its packets leave
/// with. Written by the program when the flow begins, removed by the daemon when it ends;
/// allocated as used (`BPF_F_NO_PREALLOC`), sized like `CONNTRACK` by the daemon.
#[map]
pub static TRANSLATIONS: HashMap<FlowKey, Translation> =
    HashMap::pinned(DEFAULT_CONNTRACK_ENTRIES, BPF_F_NO_PREALLOC);

/// Full NAT: a pool port in use towards a backend endpoint -> the client-side key of the
/// flow it was allocated for (how a reply finds its client). Inserted only where absent, so two flows never share
/// one; written, removed and sized with `TRANSLATIONS`.
#[map]
pub static ALLOCATIONS: HashMap<Allocation, FlowKey> =
    HashMap::pinned(DEFAULT_CONNTRACK_ENTRIES, BPF_F_NO_PREALLOC);

/// `BPF_F_NO_PREALLOC`: a hash map's entries are allocated when inserted.
const BPF_F_NO_PREALLOC: u32 = 1;

/// The pending table: flows that sent only their first packet (a SYN and its
/// retransmits, one datagram), each in one of the two slots its 5-tuple hashes to (see
/// `PendingSlot`). A flood of new flows overwrites these slots only, never `CONNTRACK`; the
/// daemon sizes it (`pending_slots`) and reads it in place (`BPF_F_MMAPABLE`).
#[map]
pub static PENDING: Array<PendingSlot> = Array::pinned(
    pending_slots(DEFAULT_CONNTRACK_ENTRIES),
    aya_ebpf::bindings::BPF_F_MMAPABLE,
);

/// The pending table's size less one (its slot count is a power of two), set by the loader
/// to match the map: a frozen read-only global, a constant to the verifier.
#[unsafe(no_mangle)]
static PENDING_MASK: u32 = pending_slots(DEFAULT_CONNTRACK_ENTRIES) - 1;

/// The pending table's slot mask.
#[inline(always)]
pub fn pending_mask() -> u32 {
    // SAFETY: a plain read of a global the loader wrote before the program was loaded.
    unsafe { core::ptr::read_volatile(&PENDING_MASK) }
}

/// (service, generation, client prefix) -> group index: client pins. Allocated per pin
/// (an LPM trie always is), up to every service's pins in both generations.
#[map]
pub static CLIENT_PINS: LpmTrie<ClientPinKey, u32> =
    LpmTrie::pinned(MAX_SERVICES * GENERATIONS * MAX_CLIENT_PINS, 0);

/// The longest pin of `service`'s table generation `generation` covering `addr`.
#[inline(always)]
pub fn client_pin_group(service: u32, generation: u32, family: u8, addr: [u8; 16]) -> Option<u32> {
    let key = Key::new(
        balancer_common::CLIENT_PIN_PREFIX_BASE + 128,
        ClientPinKey::new(service, generation, family, addr),
    );
    CLIENT_PINS.get(&key).copied()
}
