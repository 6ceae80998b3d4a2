//! Test traffic: backend servers that answer with their name, client
//! helpers that ask through the VIPs, and a sender of prepared raw frames
//! ([`RawSender`]). All sockets are created inside the topology's namespaces
//! by the test process itself.

mod client;
mod long_lived;
mod protocol;
mod raw;
mod servers;
mod sockets;
mod stream;

use std::io;
use std::time::Duration;

pub use client::{udp_exchange, Client, Distribution};
pub use long_lived::{BackgroundPings, BackgroundReport, ConnectionReport, LongLived};
pub use raw::{Qdisc, RawSender};
pub use servers::BackendServer;
pub use stream::{NewConnections, StreamReport, NEW_CONNECTION_INTERVAL};

/// Port the backend servers listen on (TCP and UDP).
pub const SERVICE_PORT: u16 = 80;

/// Timeout for every connect, read and write of the client helpers.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// `error`, with socket timeouts (reported by Linux as `EAGAIN`) spelled
/// out as such.
fn explain_timeout(error: io::Error) -> anyhow::Error {
    match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            anyhow::anyhow!("no answer within {IO_TIMEOUT:?} ({error})")
        }
        _ => error.into(),
    }
}
