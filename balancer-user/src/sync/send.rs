//! Sends this host's new flow records to its peers: whenever the data plane's ring buffer
//! has records, all of them are read and sent at once, up to [`MAX_RECORDS`] a datagram,
//! each datagram to every peer. No timer holds records back: at a low rate of new flows
//! each goes alone (one datagram per peer), at a high rate they batch themselves (what
//! arrived while the last batch was sent goes in the next).

use std::sync::Arc;

use balancer_common::FlowRecord;
use tokio::{io::unix::AsyncFd, io::Interest, net::UdpSocket};

use super::{
    counters::{add, Counters},
    peers::Peers,
    wire::{self, MAX_RECORDS},
};
use crate::dataplane::sync::Ring;

/// Reads `ring` and sends its records to `peers` from `socket`, until aborted (or the ring
/// cannot be waited for: logged).
pub async fn run(ring: Ring, socket: Arc<UdpSocket>, peers: Arc<Peers>, counters: Arc<Counters>) {
    // SAFETY: the ring's descriptor is the map's, owned by the ring, which the `AsyncFd`
    // owns until it is dropped; `as_raw_fd` always returns it.
    let mut ring = match unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) } {
        Ok(ring) => ring,
        Err(e) => {
            tracing::error!("cannot wait for the sync ring buffer: {e}; flows are not synced");
            return;
        }
    };
    let mut records = Vec::new();
    loop {
        match ring.readable_mut().await {
            // Cleared before reading: a record written after the last read wakes us again.
            Ok(mut guard) => guard.clear_ready(),
            Err(e) => {
                tracing::error!("cannot wait for the sync ring buffer: {e}; flows are not synced");
                return;
            }
        }
        records.clear();
        while let Some(record) = ring.get_mut().next() {
            records.push(record);
        }
        if records.is_empty() {
            continue;
        }
        add(&counters.recorded, records.len() as u64);
        send(&records, &socket, &peers.list(), &counters).await;
    }
}

/// Sends `records` to each of `peers`.
async fn send(
    records: &[FlowRecord],
    socket: &UdpSocket,
    peers: &[std::net::SocketAddr],
    counters: &Counters,
) {
    for batch in records.chunks(MAX_RECORDS) {
        let datagram = wire::encode(batch);
        for peer in peers {
            match socket.send_to(&datagram, peer).await {
                Ok(sent) => {
                    add(&counters.datagrams, 1);
                    add(&counters.bytes, sent as u64);
                }
                Err(e) => {
                    add(&counters.unsent, 1);
                    tracing::debug!("cannot send flow records to {peer}: {e}");
                }
            }
        }
    }
}
