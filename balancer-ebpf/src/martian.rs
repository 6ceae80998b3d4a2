//! Martian sources: addresses no client can send from. A VIP packet from one is dropped
//! before a backend is chosen, so it never reaches a backend or connection tracking.

use balancer_common::{FlowKey, FAMILY_V4};

/// Whether the flow's source address can never be a client's: IPv4 0.0.0.0/8 ("this
/// network"), 127.0.0.0/8 (loopback), 224.0.0.0/4 (multicast) and 240.0.0.0/4 (reserved,
/// with the broadcast 255.255.255.255); IPv6 `::`, `::1`, ff00::/8 (multicast) and an
/// IPv4-mapped address (::ffff:0:0/96) holding an IPv4 martian.
#[inline(always)]
pub fn source(key: &FlowKey) -> bool {
    if key.family == FAMILY_V4 {
        v4(key.src[0])
    } else {
        v6(&key.src)
    }
}

/// An IPv4 martian, told by its first octet.
#[inline(always)]
fn v4(first_octet: u8) -> bool {
    first_octet == 0 || first_octet == 127 || first_octet >= 224
}

/// An IPv6 martian. Read as two 64-bit words (whole-word compares; slice compares could
/// become a `memcmp` call, which BPF does not have).
#[inline(always)]
fn v6(addr: &[u8; 16]) -> bool {
    if addr[0] == 0xff {
        return true;
    }
    let word = |at: usize| {
        u64::from_be_bytes([
            addr[at],
            addr[at + 1],
            addr[at + 2],
            addr[at + 3],
            addr[at + 4],
            addr[at + 5],
            addr[at + 6],
            addr[at + 7],
        ])
    };
    // `::`, `::1` and ::ffff:a.b.c.d all begin with 64 zero bits.
    if word(0) != 0 {
        return false;
    }
    let low = word(8);
    match low >> 32 {
        0 => low <= 1,
        0xffff => v4((low >> 24) as u8),
        _ => false,
    }
}
