//! A steady stream of new connections in the background, as production traffic keeps
//! arriving during a release.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::Client;

/// Pause between two new connections.
const INTERVAL: Duration = Duration::from_millis(10);

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
                thread::sleep(INTERVAL);
            }
            report
        });
        NewConnections {
            stop,
            worker: Some(worker),
        }
    }

    /// Stops the stream and reports.
    pub fn stop(mut self) -> StreamReport {
        self.stop.store(true, Ordering::Relaxed);
        self.worker
            .take()
            .map(|w| w.join().unwrap_or_default())
            .unwrap_or_default()
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
