//! Network address translation (`nat` forwarding): what the data plane rewrites a client's
//! packet to, how it recognises a backend's reply, and its counters.
//!
//! A client's packet to VIP:port is rewritten to the backend's address and port (its
//! [`Rewrite`], indexed like the backend map); a backend's reply is recognised by its
//! source — the backend's address, port and protocol, a key of the reply map — and
//! rewritten back to come from the VIP. The reply map holds one VIP per backend address,
//! port and protocol: the translation back needs no per-flow state.

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
    /// Reserved, zero.
    pub reserved2: u32,
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
    /// Reserved, zero.
    pub reserved: u32,
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
/// forward: no neighbour entry for the next hop yet (the kernel resolves it), or longer
/// than the egress MTU (the kernel answers with an ICMP error).
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
/// Number of NAT counters.
pub const NAT_STAT_COUNT: u32 = 5;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{vip_port_bit, PROTO_TCP, PROTO_UDP};

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
