//! Forwarding modes. L2 direct server return: the IP packet is untouched, only the MAC
//! addresses change; the backend holds the VIP on a loopback and answers the client itself.

use aya_ebpf::{bindings::xdp_action, helpers::generated::bpf_redirect, programs::XdpContext};
use balancer_common::Backend;

use crate::parse::EthHdr;

/// Rewrites the Ethernet addresses to reach `backend` and sends the frame on its way.
#[inline(always)]
pub fn l2_dsr(ctx: &XdpContext, backend: &Backend) -> u32 {
    let start = ctx.data();
    if start + core::mem::size_of::<EthHdr>() > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    let eth = start as *mut EthHdr;
    // Explicit non-overlapping copies: plain assignments compile to calls of a byte-wise
    // memmove subprogram.
    // SAFETY: bounds checked against data_end just above; packet and map value are
    // distinct memory.
    unsafe {
        core::ptr::copy_nonoverlapping(backend.dst_mac.as_ptr(), (*eth).dst.as_mut_ptr(), 6);
        core::ptr::copy_nonoverlapping(backend.src_mac.as_ptr(), (*eth).src.as_mut_ptr(), 6);
    }
    if backend.ifindex == ctx.ingress_ifindex() as u32 {
        xdp_action::XDP_TX
    } else {
        // SAFETY: plain helper call; returns XDP_REDIRECT or XDP_ABORTED.
        unsafe { bpf_redirect(backend.ifindex, 0) as u32 }
    }
}
