//! Bounds-checked reads and writes of packet bytes at an offset from the frame's start
//! (at most [`MAX_OFFSET`], which keeps the offset a bounded value to the verifier).

use aya_ebpf::programs::XdpContext;

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
