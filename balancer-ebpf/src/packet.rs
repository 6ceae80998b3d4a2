//! Bounds-checked reads and writes of packet bytes at an offset from the frame's start
//! (at most [`MAX_OFFSET`], which keeps the offset a bounded value to the verifier).

use aya_ebpf::programs::XdpContext;

use crate::wire::{ETH_LEN, ETH_P_8021AD, ETH_P_8021Q, VLAN_LEN};

/// The longest link-layer header: Ethernet with one VLAN tag.
pub const LINK_MAX: usize = ETH_LEN + VLAN_LEN;

/// The largest offset read or written: Ethernet, a VLAN tag, two IP headers with options,
/// ICMP and a TCP header's checksum fit well below it.
const MAX_OFFSET: usize = 256;

/// Writes `bytes` into the packet at `offset`, if they lie within it.
#[inline(always)]
pub fn write<const N: usize>(ctx: &XdpContext, offset: usize, bytes: &[u8; N]) -> Option<()> {
    let start = ctx.data();
    if offset > MAX_OFFSET || start + offset + N > ctx.data_end() {
        return None;
    }
    // SAFETY: the N bytes were bounds-checked; packet and stack never overlap.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), (start + offset) as *mut u8, N) };
    Some(())
}

/// Reads `N` bytes of the packet at `offset`, if they lie within it. `N` is at least 2:
/// the compiler turns a one-byte check into a comparison the verifier takes no range from.
#[inline(always)]
pub fn read<const N: usize>(ctx: &XdpContext, offset: usize) -> Option<[u8; N]> {
    let start = ctx.data();
    if offset > MAX_OFFSET || start + offset + N > ctx.data_end() {
        return None;
    }
    let mut out = [0u8; N];
    // SAFETY: the N bytes were bounds-checked; packet and stack never overlap.
    unsafe { core::ptr::copy_nonoverlapping((start + offset) as *const u8, out.as_mut_ptr(), N) };
    Some(out)
}

/// Reads the 16-bit word at `offset` as it lies in memory, if it lies within the packet.
#[inline(always)]
pub fn read_u16(ctx: &XdpContext, offset: usize) -> Option<u16> {
    read::<2>(ctx, offset).map(u16::from_ne_bytes)
}

/// The length of the frame's link-layer header (14, or 18 with a VLAN tag), the frame being
/// at least `LINK_MAX + ip` bytes long (the longest header and the `ip` bytes of the IP
/// header the caller reads).
#[inline(always)]
pub fn link_len(ctx: &XdpContext, ip: usize) -> Option<usize> {
    let start = ctx.data();
    if start + LINK_MAX + ip > ctx.data_end() {
        return None;
    }
    let p = start as *const u8;
    // SAFETY: bytes 12 and 13 lie in the checked range.
    let ether_type = unsafe { u16::from_be_bytes([*p.add(12), *p.add(13)]) };
    Some(if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        ETH_LEN + VLAN_LEN
    } else {
        ETH_LEN
    })
}
