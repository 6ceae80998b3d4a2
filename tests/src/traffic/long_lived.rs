//! Long-lived connections (TCP) and flows (UDP) that keep talking, to check that
//! established flows stay on their original backend. Over TCP a flow that moves is reset
//! by the backend that does not know it; over UDP it simply gets answers from another
//! backend, so `moved` is the failure to look for.

use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::ops::Range;
use std::panic;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{client::udp_exchange, protocol, Client};

/// One long-lived conversation with a service.
#[derive(Debug)]
enum Conversation {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A connected UDP socket: one flow (same 5-tuple) for as long as it lives.
    Udp(UdpSocket),
}

impl Conversation {
    /// Exchanges one request and answer; returns the answering backend.
    fn exchange(&mut self) -> Result<String> {
        match self {
            Conversation::Tcp(stream) => protocol::exchange(stream),
            Conversation::Udp(socket) => udp_exchange(socket),
        }
    }
}

/// Time between two exchanges on a connection in background mode.
const PING_INTERVAL: Duration = Duration::from_millis(100);

/// Background pinging stops by itself after this long.
const MAX_BACKGROUND_TIME: Duration = Duration::from_secs(120);

/// A set of open connections to one service, each with the backend that
/// answered its first exchange.
#[derive(Debug)]
pub struct LongLived {
    service: SocketAddr,
    connections: Vec<Conversation>,
    original_backends: Vec<String>,
}

impl LongLived {
    /// Opens `count` TCP connections to `service` from `client`'s namespace,
    /// cycling through `sources` (the default source if empty), and
    /// records each one's first answer.
    pub fn open(
        client: &Client,
        service: SocketAddr,
        count: usize,
        sources: &[IpAddr],
    ) -> Result<LongLived> {
        Self::start(service, count, |index| {
            let source = (!sources.is_empty()).then(|| sources[index % sources.len()]);
            Ok(Conversation::Tcp(client.connect(service, source)?))
        })
    }

    /// Like [`LongLived::open`], with `count` UDP flows: each a connected socket of its
    /// own (its own client port) that keeps its 5-tuple.
    pub fn open_udp(
        client: &Client,
        service: SocketAddr,
        count: usize,
        sources: &[IpAddr],
    ) -> Result<LongLived> {
        Self::start(service, count, |index| {
            let source = (!sources.is_empty()).then(|| sources[index % sources.len()]);
            Ok(Conversation::Udp(client.udp_socket(service, source, 0)?))
        })
    }

    /// Like [`LongLived::open_udp`] from the default source address, one flow from each
    /// client port of `ports`: flows of 5-tuples the caller chose, so that each is new to
    /// the balancer (a kernel-chosen port may repeat one of an earlier flow, which
    /// connection tracking still holds: a UDP flow has no end).
    pub fn open_udp_from_ports(
        client: &Client,
        service: SocketAddr,
        ports: Range<u16>,
    ) -> Result<LongLived> {
        let ports: Vec<u16> = ports.collect();
        Self::start(service, ports.len(), |index| {
            Ok(Conversation::Udp(client.udp_socket(
                service,
                None,
                ports[index],
            )?))
        })
    }

    /// Opens `count` conversations with `open` (given each one's index) and records each
    /// one's first answer.
    fn start(
        service: SocketAddr,
        count: usize,
        open: impl Fn(usize) -> Result<Conversation>,
    ) -> Result<LongLived> {
        let mut connections = Vec::with_capacity(count);
        let mut original_backends = Vec::with_capacity(count);
        for index in 0..count {
            let mut conversation = open(index)?;
            let backend = conversation
                .exchange()
                .with_context(|| format!("first exchange on flow {index} to {service}"))?;
            connections.push(conversation);
            original_backends.push(backend);
        }
        Ok(LongLived {
            service,
            connections,
            original_backends,
        })
    }

    /// The same connections, each waiting up to `timeout` for an answer (instead of the
    /// harness's 2 s), so that a conversation survives an outage shorter than that: TCP
    /// retransmits what the outage lost.
    pub fn patient(self, timeout: Duration) -> Result<Self> {
        for conversation in &self.connections {
            match conversation {
                Conversation::Tcp(stream) => {
                    stream.set_read_timeout(Some(timeout))?;
                    stream.set_write_timeout(Some(timeout))?;
                }
                Conversation::Udp(socket) => socket.set_read_timeout(Some(timeout))?,
            }
        }
        Ok(self)
    }

    /// The backend that first answered on each connection, in order.
    pub fn original_backends(&self) -> &[String] {
        &self.original_backends
    }

    /// How many connections `backend` (e.g. `"b0"`) first answered.
    pub fn count_on(&self, backend: &str) -> usize {
        self.original_backends
            .iter()
            .filter(|b| *b == backend)
            .count()
    }

    /// Exchanges one line on connection `index` and returns the answering backend.
    pub fn ping_one(&mut self, index: usize) -> Result<String> {
        let service = self.service;
        self.connections[index]
            .exchange()
            .with_context(|| format!("connection {index} to {service}"))
    }

    /// Exchanges one line on every connection and returns the answers in
    /// order. Fails if any connection was reset, closed or timed out.
    pub fn ping_all(&mut self) -> Result<Vec<String>> {
        let service = self.service;
        self.connections
            .iter_mut()
            .enumerate()
            .map(|(index, conversation)| {
                conversation
                    .exchange()
                    .with_context(|| format!("connection {index} to {service}"))
            })
            .collect()
    }

    /// Moves the connections to a background thread that exchanges a line
    /// on each every 100 ms until stopped (at most 120 s), recording
    /// failures and answers from other backends.
    pub fn ping_in_background(self) -> BackgroundPings {
        let stop = Arc::new(AtomicBool::new(false));
        let worker = thread::spawn({
            let stop = Arc::clone(&stop);
            move || ping_until_stopped(self, &stop)
        });
        BackgroundPings {
            stop,
            worker: Some(worker),
        }
    }
}

/// Background pinging started by [`LongLived::ping_in_background`];
/// dropping it stops the pinging and closes the connections.
#[derive(Debug)]
pub struct BackgroundPings {
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<BackgroundReport>>,
}

impl BackgroundPings {
    /// Stops pinging, closes the connections and reports what happened.
    pub fn stop(mut self) -> BackgroundReport {
        self.stop_and_join()
            .expect("the worker is only taken by stop_and_join")
            .unwrap_or_else(|payload| panic::resume_unwind(payload))
    }

    fn stop_and_join(&mut self) -> Option<thread::Result<BackgroundReport>> {
        self.stop.store(true, Ordering::Relaxed);
        self.worker.take().map(JoinHandle::join)
    }
}

impl Drop for BackgroundPings {
    fn drop(&mut self) {
        // A panic of the worker is reported by `stop`; here it is moot.
        let _ = self.stop_and_join();
    }
}

/// What background pinging observed, per connection.
#[derive(Debug, Clone)]
pub struct BackgroundReport {
    /// One report per connection, in [`LongLived::open`] order.
    pub connections: Vec<ConnectionReport>,
}

impl BackgroundReport {
    /// Number of connections that failed.
    pub fn failed_connections(&self) -> usize {
        self.connections
            .iter()
            .filter(|connection| connection.failure.is_some())
            .count()
    }

    /// Number of connections that got at least one answer from a backend
    /// other than their original one.
    pub fn moved_connections(&self) -> usize {
        self.connections
            .iter()
            .filter(|connection| connection.answers_from_other_backends > 0)
            .count()
    }
}

/// What background pinging observed on one connection.
#[derive(Debug, Clone)]
pub struct ConnectionReport {
    /// The backend that answered the connection's first exchange.
    pub original_backend: String,
    /// Successful exchanges in background mode.
    pub exchanges: usize,
    /// Successful exchanges answered by another backend.
    pub answers_from_other_backends: usize,
    /// Why the connection failed (it was not used afterwards).
    pub failure: Option<String>,
}

fn ping_until_stopped(mut long_lived: LongLived, stop: &AtomicBool) -> BackgroundReport {
    let mut reports: Vec<ConnectionReport> = long_lived
        .original_backends
        .iter()
        .map(|backend| ConnectionReport {
            original_backend: backend.clone(),
            exchanges: 0,
            answers_from_other_backends: 0,
            failure: None,
        })
        .collect();
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_BACKGROUND_TIME {
        let round_started = Instant::now();
        for (conversation, report) in long_lived.connections.iter_mut().zip(&mut reports) {
            if report.failure.is_some() {
                continue;
            }
            match conversation.exchange() {
                Ok(backend) => {
                    report.exchanges += 1;
                    if backend != report.original_backend {
                        report.answers_from_other_backends += 1;
                    }
                }
                Err(error) => report.failure = Some(format!("{error:#}")),
            }
        }
        thread::sleep(PING_INTERVAL.saturating_sub(round_started.elapsed()));
    }
    BackgroundReport {
        connections: reports,
    }
}
