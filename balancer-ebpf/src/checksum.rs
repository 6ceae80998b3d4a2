//! Incremental checksum updates (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')) for headers
//! whose fields the program rewrites: the IPv4 header checksum and the TCP/UDP checksum
//! (its pseudo-header covers the addresses).
//!
//! Words are taken as they lie in memory (the one's complement sum does not depend on the
//! byte order, as long as the checksum field is read and written the same way): a port
//! kept in network byte order is added as it is, and the checksum field is read and
//! written with native-order conversions.

use aya_ebpf::helpers::generated::bpf_csum_diff;

/// The sum of the changes to a checksummed header.
#[derive(Clone, Copy)]
pub struct Change {
    sum: u64,
}

impl Change {
    /// No change yet.
    #[inline(always)]
    pub fn none() -> Self {
        Self { sum: 0 }
    }

    /// Adds the change of `N` bytes (a multiple of four, at an even offset of the header)
    /// from `old` to `new`, summed by the kernel (`bpf_csum_diff`).
    #[inline(always)]
    pub fn bytes<const N: usize>(&mut self, old: &[u8; N], new: &[u8; N]) {
        // SAFETY: the helper reads N bytes from each array, which hold them.
        let diff = unsafe {
            bpf_csum_diff(
                old.as_ptr() as *mut u32,
                N as u32,
                new.as_ptr() as *mut u32,
                N as u32,
                0,
            )
        };
        self.sum += u64::from(diff as u32);
    }

    /// Adds the change of one 16-bit word, as it lies in memory.
    #[inline(always)]
    pub fn word(&mut self, old: u16, new: u16) {
        self.sum += u64::from(!old) + u64::from(new);
    }

    /// Adds the changes summed in `other`.
    #[inline(always)]
    pub fn add(&mut self, other: Change) {
        self.sum += other.sum;
    }

    /// The checksum `check` (as it lies in memory) after the changes.
    #[inline(always)]
    pub fn apply(self, check: u16) -> u16 {
        let mut sum = u64::from(!check) + self.sum;
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        !(sum as u16)
    }
}
