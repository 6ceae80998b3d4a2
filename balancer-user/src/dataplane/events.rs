//! The XDP program's own messages: rare data-plane events (a VIP packet no backend can
//! take, a table naming a cleared backend) that it writes with aya-log into its log ring
//! (`AYA_LOGS`), rate-limited in the kernel. The daemon forwards them into its `tracing`
//! log, under the target `balancer::xdp`.
//!
//! aya-log's reader does not run by itself: [`EbpfLogger::flush`] reads what is in the
//! ring and hands each record to a [`log::Log`]. The daemon calls it whenever the ring's
//! file descriptor becomes readable, on the tokio runtime ([`forward_kernel_log`]); the
//! records go to the `log` crate's global logger, which `tracing_subscriber`'s `init`
//! (feature `tracing-log`) makes a bridge into `tracing`. Tests read the ring on demand
//! instead ([`DataPlane::kernel_log`]).
//!
//! The ring is not pinned: it belongs to one loaded program, and after a daemon restart the
//! newly loaded program's ring is the one that counts.

use std::panic::AssertUnwindSafe;

use aya_log::EbpfLogger;
use tokio::io::{unix::AsyncFd, Interest};
use tracing::warn;

use super::{DataPlane, DataPlaneError};

/// Name of aya-log's ring buffer map in the object.
const LOG_MAP: &str = "AYA_LOGS";

/// Starts forwarding the program's log records into the daemon's log: takes the log ring
/// out of `ebpf` and spawns a task on the current tokio runtime that passes each record
/// to the global `log` logger as soon as the ring has one. Without the ring (an object
/// built without aya-log) or outside a runtime, warns once and does nothing else: the data
/// plane works the same, only its messages are not shown.
pub fn forward_kernel_log(ebpf: &mut aya::Ebpf) {
    let runtime = match tokio::runtime::Handle::try_current() {
        Ok(runtime) => runtime,
        Err(e) => {
            warn!("data-plane messages are not forwarded: no async runtime ({e})");
            return;
        }
    };
    let logger = match EbpfLogger::init_with_logger(ebpf, GlobalLog) {
        Ok(logger) => logger,
        Err(e) => {
            warn!("data-plane messages are not forwarded: {e}");
            return;
        }
    };
    runtime.spawn(forward(logger));
}

impl DataPlane {
    /// Takes the program's log ring for reading on demand: each
    /// [`flush`](EbpfLogger::flush) passes the records written since to `logger`. For tests
    /// and benchmarks of an unattached data plane; the attached daemon forwards them itself
    /// ([`forward_kernel_log`]), after which this fails with [`DataPlaneError::MissingMap`].
    pub fn kernel_log<T: log::Log>(&mut self, logger: T) -> Result<EbpfLogger<T>, DataPlaneError> {
        EbpfLogger::init_with_logger(&mut self.ebpf, logger).map_err(|e| match e {
            aya_log::Error::MapError(source) => DataPlaneError::Map {
                context: format!("open {LOG_MAP}"),
                source,
            },
            _ => DataPlaneError::MissingMap(LOG_MAP.into()),
        })
    }
}

/// Reads the ring whenever it becomes readable, until the runtime shuts down.
async fn forward(logger: EbpfLogger<GlobalLog>) {
    // SAFETY: the logger owns the ring buffer's file descriptor, which stays open and the
    // same for as long as the logger lives, and `as_raw_fd` always returns it.
    let registered = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) };
    let mut ring = match registered {
        Ok(ring) => ring,
        Err(e) => {
            warn!("data-plane messages are not forwarded: cannot poll {LOG_MAP}: {e}");
            return;
        }
    };
    loop {
        let mut ready = match ring.readable_mut().await {
            Ok(ready) => ready,
            Err(e) => {
                warn!("data-plane messages are no longer forwarded: polling {LOG_MAP}: {e}");
                return;
            }
        };
        // aya-log panics on a record it cannot parse (only a mismatched aya-log-ebpf could
        // write one). The record is consumed either way, so the rest still gets through.
        if std::panic::catch_unwind(AssertUnwindSafe(|| ready.get_inner_mut().flush())).is_err() {
            warn!("skipped a data-plane message that could not be parsed");
        }
        ready.clear_ready();
    }
}

/// The `log` crate's global logger, looked up for every record: the daemon installs its
/// logger (the `tracing` bridge) before the data plane is loaded, but looking it up late
/// does not depend on that order.
struct GlobalLog;

impl log::Log for GlobalLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        log::logger().enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        log::logger().log(record);
    }

    fn flush(&self) {
        log::logger().flush();
    }
}
