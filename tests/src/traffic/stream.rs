//! A steady stream of new connections in the background, as production traffic keeps
//! arriving during a release.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};

use super::Client;

/// Pause between two new connections: the stream opens at most one per interval.
pub const NEW_CONNECTION_INTERVAL: Duration = Duration::from_millis(10);

/// The stream stops by itself after this long.
const MAX_TIME: Duration = Duration::from_secs(120);

/// New connections opened one after another until stopped.
pub struct NewConnections {
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<StreamReport>>,
}

/// What the stream saw.
#[derive(Debug, Clone, Default)]
pub struct StreamReport {
    /// Connections that were answered.
    pub answered: usize,
    /// Connections that failed, with the first few errors.
    pub failed: usize,
    /// Up to five error messages.
    pub errors: Vec<String>,
}

impl NewConnections {
    /// Starts asking `service` from `client`'s namespace every 10 ms.
    pub fn start(client: &Client, service: SocketAddr) -> NewConnections {
        let stop = Arc::new(AtomicBool::new(false));
        let client = client.clone();
        let flag = stop.clone();
        let worker = thread::spawn(move || {
            let started = Instant::now();
            let mut report = StreamReport::default();
            while !flag.load(Ordering::Relaxed) && started.elapsed() < MAX_TIME {
                match client.ask_once(service, None) {
                    Ok(_) => report.answered += 1,
                    Err(e) => {
                        report.failed += 1;
                        if report.errors.len() < 5 {
                            report.errors.push(format!("{e:#}"));
                        }
                    }
                }
                thread::sleep(NEW_CONNECTION_INTERVAL);
            }
            report
        });
        NewConnections {
            stop,
            worker: Some(worker),
        }
    }

    /// Stops the stream and reports; a panic of the stream's worker is resumed here.
    pub fn stop(mut self) -> StreamReport {
        self.stop.store(true, Ordering::Relaxed);
        let worker = self.worker.take().expect("a running stream has its worker");
        worker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl StreamReport {
    /// Requires that the stream was answered and that no connection failed.
    pub fn ensure_served(&self) -> Result<()> {
        self.ensure_served_allowing(0)
    }

    /// Requires that the stream was answered and that at most `max_failed` connections
    /// failed.
    pub fn ensure_served_allowing(&self, max_failed: usize) -> Result<()> {
        ensure!(
            self.answered > 0,
            "no new connection was answered: {self:?}"
        );
        ensure!(
            self.failed <= max_failed,
            "{} new connections failed (at most {max_failed} allowed): {self:?}",
            self.failed
        );
        Ok(())
    }
}

impl Drop for NewConnections {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}
