//! What a `nat` backend's replies say, counted per backend (`REPLY_STATS`): packets and
//! bytes, resets, and the time from the client's first SYN of the connection (as the LB
//! forwarded it) to the backend's SYN-ACK — the signals only a mode whose replies pass the
//! LB can see.

use balancer_common::{handshake_bucket, FlowKey, TCP_ACK, TCP_RST, TCP_SYN};

use crate::{
    maps::{REPLIES, REPLY_STATS},
    select,
};

/// Counts a reply of `bytes` with `tcp_flags`, of the flow `key` (from the backend to the
/// client, as it arrived), to its backend. A BPF subprogram of its own, called once the
/// reply is on its way: its stack is not the reply path's.
#[inline(never)]
pub fn count(key: &FlowKey, tcp_flags: u8, bytes: u32) {
    let backend = key.source();
    // SAFETY: REPLIES is only updated by the daemon with whole-value writes.
    let Some(reply) = (unsafe { REPLIES.get(backend) }) else {
        return;
    };
    let Some(stats) = REPLY_STATS.get_ptr_mut(reply.backend) else {
        return;
    };
    // SAFETY: a per-CPU slot: no other writer runs on this CPU meanwhile.
    unsafe {
        (*stats).packets += 1;
        (*stats).bytes += u64::from(bytes);
        if tcp_flags & TCP_RST != 0 {
            (*stats).resets += 1;
        }
    }
    if tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST) != TCP_SYN | TCP_ACK {
        return;
    }
    // The client's side of the flow, as connection tracking keys it.
    let client = FlowKey {
        src: key.dst,
        dst: reply.vip.addr,
        sport_be: key.dport_be,
        dport_be: reply.vip.port_be,
        proto: key.proto,
        family: key.family,
        reserved: [0; 2],
    };
    let Some(ns) = select::since_syn(&client) else {
        return;
    };
    // SAFETY: as above.
    unsafe {
        (*stats).handshakes += 1;
        (*stats).handshake_ns += ns;
        if let Some(bucket) = (*stats).buckets.get_mut(handshake_bucket(ns)) {
            *bucket += 1;
        }
    }
}
