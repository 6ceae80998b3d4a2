//! New TCP connections to the VIP from the client: each one connects, sends a short
//! request, reads the answer until the server closes, and closes. Several threads, each
//! bounded by time and by count. Failed connections are counted by kind.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::AddAssign;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use balancer_tests::netns::in_netns;

/// Timeout of each connect, read and write.
pub const IO_TIMEOUT: Duration = Duration::from_secs(1);
/// The most connections one thread opens per second of test, a bound besides time.
const MAX_RATE_PER_THREAD: f64 = 200_000.0;

/// How a connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection within [`IO_TIMEOUT`].
    ConnectTimeout,
    /// The connect was answered with a reset.
    Refused,
    /// A reset after the connection was established.
    Reset,
    /// No answer within [`IO_TIMEOUT`] after the request.
    ReadTimeout,
    /// The server closed without answering.
    EmptyAnswer,
    /// Any other error.
    Other,
}

impl Failure {
    /// Every kind, in the order the report lists them.
    pub const ALL: [Failure; 6] = [
        Failure::ConnectTimeout,
        Failure::Refused,
        Failure::Reset,
        Failure::ReadTimeout,
        Failure::EmptyAnswer,
        Failure::Other,
    ];

    /// The kind's name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Failure::ConnectTimeout => "connect timeout",
            Failure::Refused => "refused",
            Failure::Reset => "reset",
            Failure::ReadTimeout => "read timeout",
            Failure::EmptyAnswer => "empty answer",
            Failure::Other => "other",
        }
    }

    /// The kind of `error` from the connect.
    fn of_connect(error: &io::Error) -> Self {
        match error.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Failure::ConnectTimeout,
            io::ErrorKind::ConnectionRefused => Failure::Refused,
            io::ErrorKind::ConnectionReset => Failure::Reset,
            _ => Failure::Other,
        }
    }

    /// The kind of `error` from the request or the answer.
    fn of_exchange(error: &io::Error) -> Self {
        match error.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Failure::ReadTimeout,
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => Failure::Reset,
            _ => Failure::Other,
        }
    }
}

/// Failed connections, per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Failures([u64; Failure::ALL.len()]);

impl Failures {
    /// Counts one failure of `kind`.
    fn add(&mut self, kind: Failure) {
        self.0[kind as usize] += 1;
    }

    /// Failures of `kind`.
    pub fn of(&self, kind: Failure) -> u64 {
        self.0[kind as usize]
    }

    /// Failures of every kind.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

impl AddAssign for Failures {
    fn add_assign(&mut self, other: Self) {
        for (count, more) in self.0.iter_mut().zip(other.0) {
            *count += more;
        }
    }
}

/// What one connection test saw.
pub struct Opened {
    /// Connections that got their answer.
    pub answered: u64,
    /// Connections that failed, per kind.
    pub failed: Failures,
    /// How long the test ran.
    pub seconds: f64,
}

/// Who connects to what: the client's namespace and the TCP service on the VIP.
#[derive(Clone, Debug)]
pub struct Target {
    /// The client's namespace.
    pub ns: String,
    /// The service.
    pub service: SocketAddr,
}

/// Opens connections to `target` from `threads` threads for `duration`.
pub fn open(target: &Target, threads: usize, duration: Duration) -> Result<Opened> {
    let max_per_thread = (duration.as_secs_f64() * MAX_RATE_PER_THREAD) as u64;
    let start = Instant::now();
    let deadline = start + duration;
    let service = target.service;
    let (answered, failed) = in_netns(&target.ns, || {
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| scope.spawn(move || open_until(service, deadline, max_per_thread)))
                .collect();
            let mut total = (0, Failures::default());
            for worker in workers {
                let (answered, failed) = worker.join().expect("connection thread panicked");
                total.0 += answered;
                total.1 += failed;
            }
            total
        })
    })?;
    Ok(Opened {
        answered,
        failed,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Opens connections to `service` one after another until `deadline` or `max`; returns the
/// answered ones and the failures.
fn open_until(service: SocketAddr, deadline: Instant, max: u64) -> (u64, Failures) {
    let (mut answered, mut failed) = (0, Failures::default());
    while answered + failed.total() < max && Instant::now() < deadline {
        match exchange(service) {
            Ok(()) => answered += 1,
            Err(kind) => failed.add(kind),
        }
    }
    (answered, failed)
}

/// One connection to `service`: connect, request, answer, close.
fn exchange(service: SocketAddr) -> Result<(), Failure> {
    let mut stream = TcpStream::connect_timeout(&service, IO_TIMEOUT)
        .map_err(|error| Failure::of_connect(&error))?;
    let exchange = |stream: &mut TcpStream| -> io::Result<Vec<u8>> {
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.write_all(b"hello\n")?;
        let mut answer = Vec::with_capacity(8);
        stream.read_to_end(&mut answer)?;
        Ok(answer)
    };
    match exchange(&mut stream) {
        Ok(answer) if answer.is_empty() => Err(Failure::EmptyAnswer),
        Ok(_) => Ok(()),
        Err(error) => Err(Failure::of_exchange(&error)),
    }
}

/// Waits up to `limit` until one connection to `target` is answered: the balancer under
/// test is in place.
pub fn wait_answering(target: &Target, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    let service = target.service;
    loop {
        match in_netns(&target.ns, || exchange(service))? {
            Ok(()) => return Ok(()),
            Err(kind) if Instant::now() > deadline => {
                bail!("no answer from {service} within {limit:?}: {}", kind.name())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_the_kind_of_failure_of_their_phase() {
        let error = |kind| io::Error::from(kind);
        assert_eq!(
            Failure::of_connect(&error(io::ErrorKind::TimedOut)),
            Failure::ConnectTimeout
        );
        assert_eq!(
            Failure::of_connect(&error(io::ErrorKind::ConnectionRefused)),
            Failure::Refused
        );
        assert_eq!(
            Failure::of_exchange(&error(io::ErrorKind::WouldBlock)),
            Failure::ReadTimeout
        );
        assert_eq!(
            Failure::of_exchange(&error(io::ErrorKind::ConnectionReset)),
            Failure::Reset
        );
        assert_eq!(
            Failure::of_exchange(&error(io::ErrorKind::InvalidData)),
            Failure::Other
        );
    }

    #[test]
    fn failures_add_up_per_kind() {
        let mut one = Failures::default();
        one.add(Failure::ConnectTimeout);
        one.add(Failure::Reset);
        let mut both = one;
        both += one;
        assert_eq!(both.of(Failure::ConnectTimeout), 2);
        assert_eq!(both.of(Failure::Reset), 2);
        assert_eq!(both.of(Failure::EmptyAnswer), 0);
        assert_eq!(both.total(), 4);
    }
}
