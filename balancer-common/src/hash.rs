//! The flow hash: loop-free, identical in the XDP program and in userspace.

use crate::FlowKey;

/// A 64-bit flow hash, split into the two independent halves the selection uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowHash(pub u64);

impl FlowHash {
    /// Split cell of the flow (chooses the group), below `cells`.
    #[inline(always)]
    pub fn cell(self, cells: u32) -> Option<u32> {
        (self.0 as u32).checked_rem(cells)
    }

    /// Maglev slot of the flow (chooses the backend), below `ring_size`.
    #[inline(always)]
    pub fn slot(self, ring_size: u32) -> Option<u32> {
        ((self.0 >> 32) as u32).checked_rem(ring_size)
    }
}

/// SplitMix64 finaliser: full avalanche of one 64-bit word.
#[inline(always)]
const fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[inline(always)]
const fn word(b: &[u8; 16], at: usize) -> u64 {
    u64::from_le_bytes([
        b[at],
        b[at + 1],
        b[at + 2],
        b[at + 3],
        b[at + 4],
        b[at + 5],
        b[at + 6],
        b[at + 7],
    ])
}

/// Hashes a flow key with a seed. Five chained mixes over the key's 40 bytes, no loop,
/// no branch: cheap in the verifier and the same on every host for the same seed.
#[inline(always)]
pub const fn flow_hash(key: &FlowKey, seed: u64) -> FlowHash {
    let tail = (key.sport_be as u64)
        | ((key.dport_be as u64) << 16)
        | ((key.proto as u64) << 32)
        | ((key.family as u64) << 40);
    let mut h = mix(seed ^ 0x9e37_79b9_7f4a_7c15);
    h = mix(h ^ word(&key.src, 0));
    h = mix(h.rotate_left(17) ^ word(&key.src, 8));
    h = mix(h.rotate_left(17) ^ word(&key.dst, 0));
    h = mix(h.rotate_left(17) ^ word(&key.dst, 8));
    h = mix(h.rotate_left(17) ^ tail);
    FlowHash(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(last: u8, sport: u16) -> FlowKey {
        let mut k = FlowKey {
            family: crate::FAMILY_V4,
            proto: crate::PROTO_TCP,
            sport_be: sport.to_be(),
            dport_be: 80u16.to_be(),
            ..FlowKey::default()
        };
        k.src[..4].copy_from_slice(&[198, 18, 0, last]);
        k.dst[..4].copy_from_slice(&[198, 19, 0, 1]);
        k
    }

    #[test]
    fn every_field_changes_the_hash() {
        let base = flow_hash(&key(1, 1000), 0);
        assert_ne!(base, flow_hash(&key(2, 1000), 0));
        assert_ne!(base, flow_hash(&key(1, 1001), 0));
        assert_ne!(base, flow_hash(&key(1, 1000), 1));
        let mut udp = key(1, 1000);
        udp.proto = crate::PROTO_UDP;
        assert_ne!(base, flow_hash(&udp, 0));
    }

    #[test]
    fn cells_are_spread_evenly() {
        let mut buckets = [0u32; 10];
        for sport in 0..20_000u16 {
            let cell = flow_hash(&key(7, sport), 42).cell(10).unwrap();
            buckets[cell as usize] += 1;
        }
        for b in buckets {
            assert!((1800..2200).contains(&b), "uneven buckets: {buckets:?}");
        }
    }

    #[test]
    fn zero_sizes_select_nothing() {
        let h = flow_hash(&key(1, 1), 0);
        assert_eq!(h.cell(0), None);
        assert_eq!(h.slot(0), None);
    }
}
