//! New TCP connections to the VIP from the client: each one connects, sends a short
//! request, reads the answer until the server closes, and closes. Several threads, each
//! bounded by time and by count.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use balancer_tests::netns::in_netns;

use super::{
    responder::TCP_PORT,
    topology::{CLIENT_NS, VIP},
};

/// Timeout of each connect, read and write.
const IO_TIMEOUT: Duration = Duration::from_secs(1);
/// The most connections one thread opens per second of test, a bound besides time.
const MAX_RATE_PER_THREAD: f64 = 200_000.0;

/// What one connection test saw.
pub struct Opened {
    /// Connections that got their answer.
    pub answered: u64,
    /// Connections that failed (refused, reset, timed out, or no answer).
    pub failed: u64,
    /// How long the test ran.
    pub seconds: f64,
}

/// The TCP service on the VIP.
fn service() -> SocketAddr {
    SocketAddr::from((VIP, TCP_PORT))
}

/// Opens connections from `threads` threads for `duration`.
pub fn open(threads: usize, duration: Duration) -> Result<Opened> {
    let max_per_thread = (duration.as_secs_f64() * MAX_RATE_PER_THREAD) as u64;
    let start = Instant::now();
    let deadline = start + duration;
    let counts = in_netns(CLIENT_NS, || {
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| scope.spawn(move || open_until(deadline, max_per_thread)))
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("connection thread panicked"))
                .fold((0, 0), |(a, f), (answered, failed)| {
                    (a + answered, f + failed)
                })
        })
    })?;
    Ok(Opened {
        answered: counts.0,
        failed: counts.1,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Opens connections one after another until `deadline` or `max`; returns (answered,
/// failed).
fn open_until(deadline: Instant, max: u64) -> (u64, u64) {
    let (mut answered, mut failed) = (0, 0);
    while answered + failed < max && Instant::now() < deadline {
        match exchange() {
            Ok(()) => answered += 1,
            Err(_) => failed += 1,
        }
    }
    (answered, failed)
}

/// One connection: connect, request, answer, close.
fn exchange() -> Result<()> {
    let mut stream = TcpStream::connect_timeout(&service(), IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(b"hello\n")?;
    let mut answer = Vec::with_capacity(8);
    stream.read_to_end(&mut answer)?;
    if answer.is_empty() {
        bail!("closed without an answer");
    }
    Ok(())
}

/// Waits up to `limit` until one connection to the VIP is answered: the balancer under
/// test is in place.
pub fn wait_answering(limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        match in_netns(CLIENT_NS, exchange)? {
            Ok(()) => return Ok(()),
            Err(error) if Instant::now() > deadline => {
                bail!("no answer from {} within {limit:?}: {error:#}", service())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}
