//! Map keys and values, capacities, and counter indices.

use bytemuck::{Pod, Zeroable};

/// Most services one data plane serves (capacity of the per-service maps).
pub const MAX_SERVICES: u32 = 1024;
/// Most backend groups per service (blue/green, stable/canary, preview, ...).
pub const MAX_GROUPS: u32 = 16;
/// Most backends across all services.
pub const MAX_BACKENDS: u32 = 65_536;
/// Capacity of one Maglev lookup table; a service's table size is a prime up to this.
pub const RING_CAPACITY: usize = 65537;
/// Cells of the group split: one cell is one basis point of new flows.
pub const SPLIT_CELLS: usize = 10_000;
/// Client-pin generations per service: the live tables' and the next ones'.
pub const GENERATIONS: u32 = 2;
/// Default number of connection-tracking entries.
pub const DEFAULT_CONNTRACK_ENTRIES: u32 = 262_144;

/// Ring slot or split cell value meaning "nothing to select".
pub const NONE: u32 = u32::MAX;
/// Split cell value meaning "no group can take this flow".
pub const NO_GROUP: u8 = u8::MAX;

/// Address family tag for IPv4 in keys.
pub const FAMILY_V4: u8 = 4;
/// Address family tag for IPv6 in keys.
pub const FAMILY_V6: u8 = 6;
/// IANA protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IANA protocol number of UDP.
pub const PROTO_UDP: u8 = 17;

/// `TablesHeader::flags` bit: hash only the client address (client affinity).
pub const FLAG_CLIENT_AFFINITY: u32 = 1;

/// `TablesHeader::flags` bit: the service has client pins in the pin map.
pub const FLAG_HAS_CLIENT_PINS: u32 = 2;

/// Most client pins per service.
pub const MAX_CLIENT_PINS: u32 = 64;
/// Bits of a [`ClientPinKey`] before the client address: service, generation, family, reserved.
pub const CLIENT_PIN_PREFIX_BASE: u32 = 64;

/// Index in the global counters: packets not addressed to a VIP, passed on untouched.
pub const STAT_PASSED: u32 = 0;
/// Index in the global counters: VIP packets dropped because no backend can take them.
pub const STAT_DROPPED: u32 = 1;
/// Index in the global counters: malformed or truncated packets, passed to the kernel and
/// never forwarded.
pub const STAT_MALFORMED: u32 = 2;
/// Index in the global counters: VIP packets passed to the kernel because they cannot be
/// balanced safely (IPv4 fragments, IPv6 extension headers).
pub const STAT_UNBALANCEABLE: u32 = 3;
/// Index in the global counters: VIP packets dropped because their source address is
/// martian (loopback, multicast, unspecified, reserved): no client sends from it.
pub const STAT_MARTIAN: u32 = 4;
/// Number of global counters.
pub const STAT_COUNT: u32 = 5;

/// Key of the VIP map: destination address, port and protocol of a service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct VipKey {
    /// IPv6 address, or IPv4 address in the first four bytes (rest zero).
    pub addr: [u8; 16],
    /// Destination port in network byte order.
    pub port_be: u16,
    /// [`PROTO_TCP`] or [`PROTO_UDP`].
    pub proto: u8,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
}

/// Value of the VIP map: which service slot serves the VIP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct VipInfo {
    /// Index of the service in the per-service maps, below [`MAX_SERVICES`].
    pub service: u32,
}

/// A backend as the data plane forwards to it (L2 direct server return).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Backend {
    /// Destination MAC: the backend's.
    pub dst_mac: [u8; 6],
    /// Source MAC: the LB's interface towards the backend.
    pub src_mac: [u8; 6],
    /// Interface to send through; the ingress interface means XDP_TX.
    pub ifindex: u32,
    /// Never-reused identity of this backend's occupation of its index; 0 = slot free.
    /// Connection-tracking entries carry it, so a reused index never inherits old flows.
    pub epoch: u32,
    /// `FORWARD_*`: how packets reach it. With a tunnel mode the MACs and interface are
    /// unused: the outer packet is routed (`TUNNELS` holds its addresses).
    pub forward: u32,
}

/// [`Backend::forward`]: L2 direct server return, the MAC addresses rewritten (0: what an
/// entry of an older data plane holds).
pub const FORWARD_DSR: u32 = 0;
/// [`Backend::forward`]: IP in IP to the backend's address (IPv4 in IPv4, IPv6 in IPv6),
/// routed by the kernel's tables.
pub const FORWARD_IPIP: u32 = 1;
/// [`Backend::forward`]: GUE variant 1 (the IP packet directly in UDP, the same bytes as
/// FOU) to the backend's address, the UDP source port from the flow hash.
pub const FORWARD_GUE: u32 = 2;
/// [`Backend::forward`]: network address translation — the destination rewritten to the
/// backend's address and port (`REWRITES`), routed; its replies, which must pass this
/// host, rewritten back to come from the VIP (`REPLIES`).
pub const FORWARD_NAT: u32 = 3;
/// [`Backend::forward`]: full NAT — `nat`, and the source rewritten to an address and port
/// of the service's pool (`REWRITES` holds both), allocated per flow (`TRANSLATIONS`,
/// `ALLOCATIONS`), so replies come back to this host by ordinary routing.
pub const FORWARD_FULLNAT: u32 = 4;

impl Backend {
    /// Whether the backend's addresses are translated ([`FORWARD_NAT`],
    /// [`FORWARD_FULLNAT`]): its replies pass this host, which counts what they say
    /// (resets, handshake times).
    pub fn translated(&self) -> bool {
        self.forward == FORWARD_NAT || self.forward == FORWARD_FULLNAT
    }
}

/// The IANA port of GUE, the default destination port of [`FORWARD_GUE`].
pub const GUE_PORT: u16 = 6080;

/// Index in the tunnel counters: tunnelled packets whose next hop the kernel had no
/// neighbour entry for, passed to the kernel encapsulated (it resolves and forwards).
pub const TUNNEL_STAT_UNRESOLVED: u32 = 0;
/// Index in the tunnel counters: tunnelled packets the kernel's tables have no route for
/// (or a blackhole, unreachable, prohibit route), dropped.
pub const TUNNEL_STAT_UNROUTABLE: u32 = 1;
/// Index in the tunnel counters: tunnelled packets that did not fit (room for the outer
/// headers, or a backend without its tunnel entry), dropped.
pub const TUNNEL_STAT_FAILED: u32 = 2;
/// Index in the tunnel counters: tunnelled packets longer than the route's MTU once
/// encapsulated, answered with ICMP "fragmentation needed" / ICMPv6 "packet too big" to the
/// client (an IPv4 packet without Don't Fragment: dropped). A data plane pinned by an older
/// build has no such entry: it reads as 0.
pub const TUNNEL_STAT_TOO_BIG: u32 = 3;
/// Number of tunnel counters.
pub const TUNNEL_STAT_COUNT: u32 = 4;

/// The outer header of a tunnelled backend, indexed like the backend map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Tunnel {
    /// The backend's address, the outer destination (IPv4 in the first four bytes).
    pub dst: [u8; 16],
    /// The LB's address, the outer source, of the same family.
    pub src: [u8; 16],
    /// [`FAMILY_V4`] or [`FAMILY_V6`]: the outer header's family, the backend's (and the
    /// service's: no family is carried in the other).
    pub family: u8,
    /// Reserved, zero.
    pub reserved: u8,
    /// GUE: the UDP destination port, network byte order.
    pub port_be: u16,
    /// Reserved, zero.
    pub reserved2: u32,
}

/// Per-backend traffic counters (one per CPU, summed in userspace).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct BackendStats {
    /// Packets forwarded to the backend.
    pub packets: u64,
    /// Bytes forwarded to the backend.
    pub bytes: u64,
    /// Flows newly assigned to the backend.
    pub new_flows: u64,
    /// Flows whose client closed them with a FIN (counted at the first FIN of a flow that
    /// had sent no RST).
    pub fin_closes: u64,
    /// Flows the client reset (counted at the first RST of a flow that had sent no FIN).
    pub resets: u64,
    /// SYNs the client sent again for a flow that sent nothing else yet: it did not get the
    /// backend's SYN-ACK in time.
    pub syn_retransmits: u64,
}

/// Bits of what one forwarded packet did, for the backend's counters.
pub mod packet_events {
    /// The packet's flow was balanced afresh (a new flow).
    pub const NEW_FLOW: u32 = 1;
    /// The client closed the flow with a FIN (its first close).
    pub const FIN_CLOSE: u32 = 2;
    /// The client reset the flow (its first close).
    pub const RESET: u32 = 4;
    /// A SYN repeated on a flow that sent nothing else yet.
    pub const SYN_RETRANSMIT: u32 = 8;
}

/// Key of the connection-tracking map: the 5-tuple as the client sent it.
///
/// Aligned to 8 so that the XDP program zeroes it with five stores rather than a call to a
/// byte-wise `memset`.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct FlowKey {
    /// Client address (IPv4 in the first four bytes).
    pub src: [u8; 16],
    /// VIP address (IPv4 in the first four bytes).
    pub dst: [u8; 16],
    /// Client port, network byte order.
    pub sport_be: u16,
    /// VIP port, network byte order.
    pub dport_be: u16,
    /// L4 protocol.
    pub proto: u8,
    /// Address family.
    pub family: u8,
    /// Reserved, zero.
    pub reserved: [u8; 2],
}

impl FlowKey {
    /// The endpoint the packet comes from (address, port, protocol, family), as the reply
    /// map keys a backend's.
    pub const fn source(&self) -> VipKey {
        VipKey {
            addr: self.src,
            port_be: self.sport_be,
            proto: self.proto,
            family: self.family,
        }
    }

    /// The part of the key that client affinity hashes: client address and family only.
    pub const fn client_only(&self) -> FlowKey {
        FlowKey {
            src: self.src,
            dst: [0; 16],
            sport_be: 0,
            dport_be: 0,
            proto: 0,
            family: self.family,
            reserved: [0; 2],
        }
    }
}

/// Data of a client-pin key (longest-prefix match): the service and table generation match
/// in full, then the client address up to the pin's prefix length. The value is the group
/// index that pinned clients get for new flows, whatever the split.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct ClientPinKey {
    /// Service slot, big-endian.
    pub service_be: [u8; 4],
    /// Table generation the pin belongs to.
    pub generation: u8,
    /// Address family of the client.
    pub family: u8,
    /// Reserved, zero.
    pub reserved: [u8; 2],
    /// Client address (IPv4 in the first four bytes).
    pub addr: [u8; 16],
}

impl ClientPinKey {
    /// The key data for a service generation and client address.
    pub const fn new(service: u32, generation: u32, family: u8, addr: [u8; 16]) -> Self {
        Self {
            service_be: service.to_be_bytes(),
            generation: generation as u8,
            family,
            reserved: [0; 2],
            addr,
        }
    }
}

/// A tracked flow: the value of the connection-tracking map (flows that sent more than
/// their first packet) and the state in a pending slot (flows that sent only their first
/// packet).
///
/// A flow is *closed* once its client sent a FIN or a RST (`closed_by` is not 0): it stays
/// on its backend for its last packets, but a new SYN on its 5-tuple is a new connection;
/// so is a SYN on a pending flow whose sequence number is not the one that opened it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct FlowState {
    /// Backend index the flow is pinned to.
    pub backend: u32,
    /// Epoch of that backend when the flow was recorded.
    pub epoch: u32,
    /// `bpf_ktime_get_coarse_ns()` (CLOCK_MONOTONIC) of the last packet, refreshed at most
    /// once a second.
    pub last_seen_ns: u64,
    /// `bpf_ktime_get_coarse_ns()` of the client's first FIN or RST; 0 while open, but for
    /// one case: in the pending slot of an open flow that a SYN to a `nat` backend opened,
    /// the precise time (`bpf_ktime_get_ns()`) of that first SYN, which its retransmits do
    /// not move — the backend's SYN-ACK is timed from it (what the client waited). Either
    /// way no later than the last packet's time plus a tick, so the later of `last_seen_ns`
    /// and `closed_ns` is the time of the last packet or close.
    pub closed_ns: u64,
    /// `CLOSED_BY_*` bits: what the client sent to close the flow; 0 while open. Written
    /// after `closed_ns`.
    pub closed_by: u32,
    /// The sequence number of the SYN that opened the flow (0: not opened by a SYN seen
    /// here, or UDP). On a pending flow, a SYN with the same number is a retransmit; one
    /// with another number opens a new connection on the same 5-tuple (the client reused
    /// the port of a failed handshake).
    pub syn_seq: u32,
}

/// `FlowState::closed_by` bit: the client sent a FIN.
pub const CLOSED_BY_FIN: u32 = 1;
/// `FlowState::closed_by` bit: the client sent a RST.
pub const CLOSED_BY_RST: u32 = 2;

/// TCP header flag FIN (byte 13 of the TCP header).
pub const TCP_FIN: u8 = 0x01;
/// TCP header flag SYN.
pub const TCP_SYN: u8 = 0x02;
/// TCP header flag RST.
pub const TCP_RST: u8 = 0x04;
/// TCP header flag ACK.
pub const TCP_ACK: u8 = 0x10;

/// Entries of the VIP port filter: one per destination port.
pub const VIP_PORT_ENTRIES: u32 = 65_536;

/// The bit of the VIP port filter's value that stands for `proto` (bit 6 for TCP, 17 for
/// UDP): a packet can only belong to a VIP, current or former, when its destination
/// port's entry has its protocol's bit.
#[inline(always)]
pub const fn vip_port_bit(proto: u8) -> u32 {
    1 << (proto & 31)
}

/// Slots of the pending table for a connection-tracking size of `conntrack`: a quarter of
/// it rounded up to a power of two, at least [`MIN_PENDING_SLOTS`] (in pairs: see
/// [`PendingSlot`]).
pub const fn pending_slots(conntrack: u32) -> u32 {
    let quarter = conntrack / 4;
    if quarter <= MIN_PENDING_SLOTS {
        MIN_PENDING_SLOTS
    } else if quarter > 1 << 30 {
        1 << 30
    } else {
        quarter.next_power_of_two()
    }
}

/// Fewest slots of the pending table.
pub const MIN_PENDING_SLOTS: u32 = 256;

/// Seed of the hash that places a flow in the pending table (the same on every host; it
/// decides nothing but a slot).
pub const PENDING_SEED: u64 = 0x7065_6e64_696e_6721;

/// One slot of the pending table: a flow that sent only its first packet. The table is
/// two-way set-associative: a flow lives in one of the two slots of the pair its 5-tuple
/// hashes to ([`pending_hash`]); a new flow takes an empty slot of its pair, else the one
/// written longer ago. A slot holds a flow only while `check` is [`pending_check`] of its
/// hash and state: a slot that two writers tore, or that a reader saw half-written, fails
/// the check and counts as empty.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PendingSlot {
    /// The flow.
    pub key: FlowKey,
    /// Its backend and times.
    pub state: FlowState,
    /// [`pending_check`] of the key's hash and the state; 0: empty.
    pub check: u64,
    /// Write order within the pair: one more than the pair's latest when written.
    pub written: u64,
}

/// The hash of a flow key in the pending table: its low bits (but the lowest) choose the
/// pair of slots.
#[inline(always)]
pub const fn pending_hash(key: &FlowKey) -> u64 {
    crate::flow_hash(key, PENDING_SEED).0
}

/// The check word of a pending slot holding a flow of hash `hash` (its [`pending_hash`])
/// with `state`: covers the key (through its hash), the backend, its epoch, the close
/// marks and the opening SYN's sequence number; never 0.
#[inline(always)]
pub const fn pending_check(hash: u64, state: &FlowState) -> u64 {
    let mut z = hash.rotate_left(23) ^ (state.backend as u64 | ((state.epoch as u64) << 32));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31) ^ state.closed_by as u64 ^ ((state.syn_seq as u64) << 32)) | 1
}

#[cfg(feature = "user")]
mod pod {
    use super::*;

    /// Compiles only for types that are `bytemuck::Pod`.
    const fn is_bytemuck_pod<T: bytemuck::Pod>() {}

    /// Implements `aya::Pod` for each of the types, which must be `bytemuck::Pod`.
    macro_rules! aya_pod {
        ($($ty:ty),* $(,)?) => {$(
            const _: () = is_bytemuck_pod::<$ty>();
            // SAFETY: the type is `bytemuck::Pod` (checked just above): plain bytes without
            // padding, valid for any bit pattern.
            unsafe impl aya::Pod for $ty {}
        )*};
    }

    aya_pod!(
        Tunnel,
        crate::nat::Rewrite,
        crate::nat::Reply,
        crate::nat::ReplyStats,
        crate::nat::Translation,
        crate::nat::Allocation,
        VipKey,
        VipInfo,
        crate::Chunk,
        Backend,
        BackendStats,
        FlowKey,
        FlowState,
        PendingSlot,
        ClientPinKey,
        crate::FlowRecord,
    );
}
