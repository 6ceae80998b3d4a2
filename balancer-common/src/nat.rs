//! Network address translation (`nat` forwarding): what the data plane rewrites a client's
//! packet to, how it recognises a backend's reply, and its counters.
//!
//! A client's packet to VIP:port is rewritten to the backend's address and port (its
//! [`Rewrite`], indexed like the backend map); a backend's reply is recognised by its
//! source — the backend's address, port and protocol, a key of the reply map — and
//! rewritten back to come from the VIP. The reply map holds one VIP per backend address,
//! port and protocol: the translation back needs no per-flow state.
//!
//! Full NAT (`fullnat`) rewrites the source too, to an address and port of the service's
//! pool: the flow's [`Translation`] (by its client-side key) says which, and the
//! [`Allocation`] of that pool port towards that backend endpoint gives the flow's
//! client-side key back when a reply arrives. Both are written by the program when a flow begins
//! and removed by the daemon when it ends.

use bytemuck::{Pod, Zeroable};

use crate::layout::VipKey;

/// The destination a client's packet of a `nat` backend is rewritten to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Rewrite {
    /// The backend's address (IPv4 in the first four bytes).
    pub addr: [u8; 16],
    /// The backend's port, network byte order.
    pub port_be: u16,
    /// [`crate::FAMILY_V4`] or [`crate::FAMILY_V6`]: the backend's (and its VIP's).
    pub family: u8,
    /// Reserved, zero.
    pub reserved: u8,
    /// `fullnat`: the first and last port of the pool (host byte order); zero otherwise.
    pub ports: [u16; 2],
    /// `fullnat`: the pool's address, the source of rewritten packets; zero otherwise.
    pub source: [u8; 16],
}

/// A backend's endpoint (address, port, protocol, family) as the key of the reply map: the
/// same shape as a VIP.
pub type Endpoint = VipKey;

/// The value of the reply map: the VIP endpoint a backend endpoint's replies are rewritten
/// to come from, and the backend's index (whose reply counters they go to).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Reply {
    /// The VIP's endpoint.
    pub vip: Endpoint,
    /// The backend's index in the backend map.
    pub backend: u32,
    /// `REPLY_*` bits.
    pub flags: u32,
}

/// [`Reply::flags`] bit: the backend's service forwards by full NAT, so a reply goes to the
/// pool address and port its flow was given ([`Allocation`]), not to the client.
pub const REPLY_FULLNAT: u32 = 1;

/// The source a full-NAT flow's packets leave with: a pool address and port, towards one
/// backend. Value of `TRANSLATIONS`, keyed by the flow's client-side key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Translation {
    /// The pool address (IPv4 in the first four bytes).
    pub addr: [u8; 16],
    /// The pool port, network byte order.
    pub port_be: u16,
    /// The backend's port, network byte order.
    pub backend_port_be: u16,
    /// The backend (index in the backend map) the port was allocated towards.
    pub backend: u32,
    /// That backend's address: with the pool address and ports, the flow's [`Allocation`].
    pub backend_addr: [u8; 16],
    /// `bpf_ktime_get_coarse_ns()` of the client's last packet, refreshed at most once a
    /// second.
    pub seen_ns: u64,
    /// `bpf_ktime_get_coarse_ns()` of the client's first FIN or RST; 0 while open.
    pub closed_ns: u64,
}

impl Translation {
    /// The pool port it holds, as `ALLOCATIONS` keys it, for the flow `key`.
    pub const fn allocation(&self, key: &crate::FlowKey) -> Allocation {
        Allocation {
            pool: self.addr,
            backend: self.backend_addr,
            pool_port_be: self.port_be,
            backend_port_be: self.backend_port_be,
            proto: key.proto,
            family: key.family,
            reserved: [0; 2],
        }
    }
}

/// One pool port in use towards one backend endpoint: the key of `ALLOCATIONS` (whose value
/// is the flow's client-side key), the 4-tuple (and protocol) of the backend's side of a
/// full-NAT flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct Allocation {
    /// The pool address.
    pub pool: [u8; 16],
    /// The backend's address.
    pub backend: [u8; 16],
    /// The pool port, network byte order.
    pub pool_port_be: u16,
    /// The backend's port, network byte order.
    pub backend_port_be: u16,
    /// [`crate::PROTO_TCP`] or [`crate::PROTO_UDP`].
    pub proto: u8,
    /// [`crate::FAMILY_V4`] or [`crate::FAMILY_V6`].
    pub family: u8,
    /// Reserved, zero.
    pub reserved: [u8; 2],
}

/// Pool ports a full-NAT flow tries, one after another, before it is refused (each try
/// is one insertion that fails when the port is taken towards that backend endpoint).
pub const ALLOCATION_TRIES: u32 = 32;

/// The pool port of try `attempt` for a flow of hash `hash` in the pool `ports` (first,
/// last; host byte order); `None` for an empty pool. Each try hashes anew, so the tries of
/// one flow are spread over the pool rather than crowding one stretch of it.
#[inline(always)]
pub const fn pool_port(ports: [u16; 2], hash: u32, attempt: u32) -> Option<u16> {
    let [first, last] = ports;
    if first == 0 || last < first {
        return None;
    }
    let size = (last - first) as u32 + 1;
    let mut h = hash ^ attempt.wrapping_mul(0x9e37_79b9);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    Some(first + (h % size) as u16)
}

/// Upper bounds of the handshake-time buckets, nanoseconds (the last bucket takes the
/// rest): from the client's first SYN of a connection (as the LB forwarded it) to the
/// backend's SYN-ACK.
pub const HANDSHAKE_BOUNDS_NS: [u64; 12] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
];

/// Number of handshake-time buckets: one per bound and one above the last.
pub const HANDSHAKE_BUCKETS: usize = HANDSHAKE_BOUNDS_NS.len() + 1;

/// What a `nat` backend's replies say, per backend index (one per CPU, summed in
/// userspace): only a mode whose replies pass the LB can count them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ReplyStats {
    /// Reply packets rewritten.
    pub packets: u64,
    /// Their bytes (frames as they arrived).
    pub bytes: u64,
    /// Replies with RST: the backend reset a connection (or refused one).
    pub resets: u64,
    /// SYN-ACKs of flows the LB sent a SYN for and has not seen complete: handshakes
    /// timed.
    pub handshakes: u64,
    /// Their times summed, nanoseconds.
    pub handshake_ns: u64,
    /// Their times by bucket of [`HANDSHAKE_BOUNDS_NS`] (not cumulative).
    pub buckets: [u64; HANDSHAKE_BUCKETS],
}

/// The bucket of a handshake of `ns` nanoseconds.
#[inline(always)]
pub fn handshake_bucket(ns: u64) -> usize {
    let mut bucket = 0;
    while bucket < HANDSHAKE_BOUNDS_NS.len() && ns > HANDSHAKE_BOUNDS_NS[bucket] {
        bucket += 1;
    }
    bucket
}

/// The bit of the VIP port filter's value that stands for replies of `proto` from this
/// source port (bit 7 for TCP, 18 for UDP): a packet can only be the reply of a `nat`
/// backend when its source port's entry has it. Next to [`crate::vip_port_bit`], which
/// stands for destination ports.
#[inline(always)]
pub const fn reply_port_bit(proto: u8) -> u32 {
    1 << ((proto & 31) + 1)
}

/// Index in the NAT counters: backend replies rewritten to come from their VIP.
pub const NAT_STAT_REPLIES: u32 = 0;
/// Index in the NAT counters: rewritten packets (either way) passed to the kernel to
/// forward: no neighbour entry for the next hop yet (the kernel resolves it), or a reply
/// longer than the egress MTU (the kernel answers with an ICMP error).
pub const NAT_STAT_UNRESOLVED: u32 = 1;
/// Index in the NAT counters: rewritten packets the kernel's tables have no route for,
/// dropped.
pub const NAT_STAT_UNROUTABLE: u32 = 2;
/// Index in the NAT counters: packets that could not be rewritten (headers out of reach,
/// a backend without its rewrite entry), dropped.
pub const NAT_STAT_FAILED: u32 = 3;
/// Index in the NAT counters: ICMP errors about `nat` flows (port unreachable, packet too
/// big, ...) rewritten to quote the packet as the client sent it.
pub const NAT_STAT_ERRORS: u32 = 4;
/// Index in the NAT counters: new full-NAT flows dropped because no pool port was free
/// towards their backend within [`ALLOCATION_TRIES`] tries (or the translation maps were
/// full).
pub const NAT_STAT_EXHAUSTED: u32 = 5;
/// Index in the NAT counters: clients' packets longer than the route's MTU to their
/// backend, answered with ICMP "fragmentation needed" / "packet too big" from the VIP (an
/// IPv4 packet without Don't Fragment: dropped).
pub const NAT_STAT_TOO_BIG: u32 = 6;
/// Number of NAT counters.
pub const NAT_STAT_COUNT: u32 = 7;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{vip_port_bit, PROTO_TCP, PROTO_UDP};

    #[test]
    fn pool_ports_stay_in_the_pool_and_tries_differ() {
        assert_eq!(pool_port([0, 0], 7, 0), None);
        assert_eq!(pool_port([2000, 1000], 7, 0), None);
        assert_eq!(pool_port([5000, 5000], 7, 3), Some(5000));
        for hash in [0, 1, 0xdead_beef, u32::MAX] {
            let mut tries = [0u16; ALLOCATION_TRIES as usize];
            for (attempt, port) in tries.iter_mut().enumerate() {
                *port = pool_port([1024, 65535], hash, attempt as u32).unwrap();
            }
            assert!(tries.iter().all(|p| *p >= 1024));
            let mut distinct = tries;
            distinct.sort_unstable();
            let kinds = 1 + distinct.windows(2).filter(|w| w[0] != w[1]).count();
            assert!(kinds >= 7, "{tries:?}");
        }
    }

    #[test]
    fn handshakes_fall_in_the_bucket_of_their_bound() {
        assert_eq!(handshake_bucket(0), 0);
        assert_eq!(handshake_bucket(100_000), 0);
        assert_eq!(handshake_bucket(100_001), 1);
        assert_eq!(handshake_bucket(1_000_000_000), 11);
        assert_eq!(handshake_bucket(u64::MAX), HANDSHAKE_BUCKETS - 1);
    }

    #[test]
    fn reply_bits_are_apart_from_vip_bits() {
        let all = [
            vip_port_bit(PROTO_TCP),
            vip_port_bit(PROTO_UDP),
            reply_port_bit(PROTO_TCP),
            reply_port_bit(PROTO_UDP),
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_eq!(a & b, 0, "{a:#x} and {b:#x} overlap");
            }
        }
    }
}
