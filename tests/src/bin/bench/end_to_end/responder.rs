//! The backends' TCP servers for the connection test: on `0.0.0.0:80` (the VIP on `lo` for
//! direct server return, the backend's own address for DNAT and proxying), each connection
//! gets one read, one short answer and a close from the server side, so the client never
//! holds TIME_WAIT. A few accepting threads per backend, no thread per connection.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use balancer_tests::netns::in_netns;

use super::socket_option::set_option;

/// TCP port of the connection test.
pub const TCP_PORT: u16 = 80;
/// How long a blocked accept or read waits before looking at the stop flag.
const WAKE_INTERVAL: Duration = Duration::from_millis(100);

/// The servers of every backend; dropping them stops and joins their threads.
pub struct Responders {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Responders {
    /// Starts `threads_per_backend` accepting threads in each of the backends' namespaces
    /// `backends`.
    pub fn start(backends: &[String], threads_per_backend: usize) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut responders = Responders {
            stop: stop.clone(),
            threads: Vec::new(),
        };
        for ns in backends {
            let listener = Arc::new(in_netns(ns, || {
                TcpListener::bind((Ipv4Addr::UNSPECIFIED, TCP_PORT))
            })??);
            set_accept_timeout(&listener)?;
            for _ in 0..threads_per_backend {
                let (listener, stop) = (listener.clone(), stop.clone());
                responders
                    .threads
                    .push(std::thread::spawn(move || serve(&listener, &stop)));
            }
        }
        Ok(responders)
    }
}

impl Drop for Responders {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Answers connections one at a time until stopped.
fn serve(listener: &TcpListener, stop: &AtomicBool) {
    let mut request = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut stream, _)) = listener.accept() else {
            continue;
        };
        if stream.set_read_timeout(Some(WAKE_INTERVAL * 10)).is_ok()
            && matches!(stream.read(&mut request), Ok(n) if n > 0)
        {
            let _ = stream.write_all(b"ok\n");
        }
    }
}

/// Makes `accept` on `listener` return after [`WAKE_INTERVAL`] without a connection.
fn set_accept_timeout(listener: &TcpListener) -> Result<()> {
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: WAKE_INTERVAL.as_micros() as libc::suseconds_t,
    };
    set_option(listener, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout)
        .context("accept timeout on the listener")
}
