//! Routing a packet the program rewrote: the kernel's tables (`bpf_fib_lookup`) name the
//! egress interface and the next hop's MAC.

use aya_ebpf::{
    bindings::{
        bpf_fib_lookup as FibLookup, xdp_action, BPF_FIB_LKUP_RET_FRAG_NEEDED,
        BPF_FIB_LKUP_RET_NOT_FWDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
    },
    helpers::generated::{bpf_fib_lookup, bpf_redirect},
    programs::XdpContext,
};
use balancer_common::FAMILY_V4;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Where the kernel's tables send a packet.
pub enum Hop {
    /// Out of `ifindex` to the next hop: `macs` are its (destination, source) MACs; `back`:
    /// `ifindex` is the interface the packet came in.
    Out {
        macs: [u8; 12],
        ifindex: u32,
        back: bool,
    },
    /// No neighbour entry for the next hop yet: to the kernel, which resolves it and
    /// forwards the packet.
    Unresolved,
    /// Longer than the route's MTU (given).
    TooBig(u16),
    /// Not forwarded: an address of this host (or broadcast, multicast).
    Local,
    /// No route (or a blackhole, unreachable, prohibit route; or forwarding is off).
    Unroutable,
}

/// Looks up the route of a packet of `family` from `src` to `dst` (IPv4 in the first four
/// bytes), `tot_len` bytes long (from its IP header), as if it arrived on the ingress
/// interface; the kernel compares that length with the route's MTU (asked as at most
/// 65535, the longest IP packet: no XDP frame is that long).
#[inline(always)]
pub fn lookup(ctx: &XdpContext, family: u8, src: &[u8; 16], dst: &[u8; 16], tot_len: usize) -> Hop {
    // SAFETY: a plain-data struct of integers and unions of integers; all zero is valid.
    let mut fib: FibLookup = unsafe { core::mem::zeroed() };
    let ingress = ctx.ingress_ifindex() as u32;
    fib.ifindex = ingress;
    fib.__bindgen_anon_1.tot_len = u16::try_from(tot_len).unwrap_or(u16::MAX);
    if family == FAMILY_V4 {
        fib.family = AF_INET;
        fib.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(first4(src));
        fib.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(first4(dst));
    } else {
        fib.family = AF_INET6;
        fib.__bindgen_anon_3.ipv6_src = words(src);
        fib.__bindgen_anon_4.ipv6_dst = words(dst);
    }
    // SAFETY: plain helper call with a pointer to a struct of the size passed.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx.cast(),
            &mut fib,
            core::mem::size_of::<FibLookup>() as i32,
            0,
        )
    };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => {
            let mut macs = [0u8; 12];
            macs[..6].copy_from_slice(&fib.dmac);
            macs[6..].copy_from_slice(&fib.smac);
            Hop::Out {
                macs,
                ifindex: fib.ifindex,
                back: fib.ifindex == ingress,
            }
        }
        BPF_FIB_LKUP_RET_NO_NEIGH => Hop::Unresolved,
        // SAFETY: the kernel wrote the route's MTU over the length it was asked about.
        BPF_FIB_LKUP_RET_FRAG_NEEDED => Hop::TooBig(unsafe { fib.__bindgen_anon_1.mtu_result }),
        BPF_FIB_LKUP_RET_NOT_FWDED => Hop::Local,
        _ => Hop::Unroutable,
    }
}

/// Sends the frame out of `ifindex` with Ethernet addresses `macs` (destination, source):
/// `XDP_TX` when that is the interface it came in (`back`), else a redirect.
#[inline(always)]
pub fn send(ctx: &XdpContext, macs: &[u8; 12], ifindex: u32, back: bool) -> u32 {
    let start = ctx.data();
    if start + 12 > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: the 12 bytes were bounds-checked; packet and stack never overlap.
    unsafe { core::ptr::copy_nonoverlapping(macs.as_ptr(), start as *mut u8, 12) };
    leave(ifindex, back)
}

/// Sends the frame, its Ethernet addresses written, out of `ifindex`: `XDP_TX` when that is
/// the interface it came in (`back`), else a redirect.
#[inline(always)]
pub fn leave(ifindex: u32, back: bool) -> u32 {
    if back {
        xdp_action::XDP_TX
    } else {
        // SAFETY: plain helper call; returns XDP_REDIRECT or XDP_ABORTED.
        unsafe { bpf_redirect(ifindex, 0) as u32 }
    }
}

/// The first four bytes of an address (IPv4 in the first four).
#[inline(always)]
pub fn first4(addr: &[u8; 16]) -> [u8; 4] {
    [addr[0], addr[1], addr[2], addr[3]]
}

/// An IPv6 address as four words in network byte order, as the lookup takes it.
#[inline(always)]
fn words(addr: &[u8; 16]) -> [u32; 4] {
    let w = |i: usize| u32::from_ne_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}
