//! Takes peers' flow records: a datagram from no known peer, or one that does not decode,
//! is dropped and counted (and logged at most once every 10 s); each record of a good one
//! is inserted into connection tracking where this host has no entry for its flow.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::net::UdpSocket;

use super::{
    counters::{add, Counters},
    peers::Peers,
    wire,
};
use crate::dataplane::sync::{Import, Inserted};

/// At most one log line about dropped datagrams in this interval.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Bytes read of one datagram: more than the largest a peer sends, so a longer one is seen
/// to be too long rather than cut to fit.
const BUFFER: usize = 2048;

/// Receives datagrams on `socket` and inserts the records of `peers`' into `import`, until
/// aborted.
pub async fn run(
    socket: Arc<UdpSocket>,
    peers: Arc<Peers>,
    mut import: Import,
    counters: Arc<Counters>,
) {
    let mut buffer = vec![0u8; BUFFER];
    let mut pace = Pace::default();
    loop {
        let (len, from) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(e) => {
                // ICMP errors of earlier sends (a peer gone) surface here: not fatal.
                tracing::debug!("receiving flow records: {e}");
                continue;
            }
        };
        if !peers.knows(from) {
            add(&counters.dropped, 1);
            pace.log(from, "not a peer of this fleet");
            continue;
        }
        let records = match wire::decode(&buffer[..len]) {
            Ok(records) => records,
            Err(e) => {
                add(&counters.dropped, 1);
                pace.log(from, &e.to_string());
                continue;
            }
        };
        add(&counters.received, records.len() as u64);
        for record in &records {
            match import.insert(record) {
                Ok(Inserted::New) => add(&counters.inserted, 1),
                Ok(Inserted::Kept) => add(&counters.kept, 1),
                Err(e) => {
                    add(&counters.dropped, 1);
                    pace.log(from, &e.to_string());
                }
            }
        }
    }
}

/// Paces the log lines about dropped datagrams.
#[derive(Default)]
struct Pace {
    /// When the last line was written.
    last: Option<Instant>,
    /// Drops since then that were not logged.
    silent: u64,
}

impl Pace {
    /// Logs a drop of `from`'s datagram for `why`, unless a line was written within
    /// [`LOG_EVERY`] (then it is counted in the next line).
    fn log(&mut self, from: SocketAddr, why: &str) {
        if self.last.is_some_and(|last| last.elapsed() < LOG_EVERY) {
            self.silent += 1;
            return;
        }
        tracing::warn!(
            "flow records from {from} dropped: {why} ({} more dropped unlogged before)",
            self.silent
        );
        self.last = Some(Instant::now());
        self.silent = 0;
    }
}
