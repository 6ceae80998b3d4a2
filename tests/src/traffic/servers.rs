//! Backend servers: TCP and UDP on `[::]:80` in a backend's namespace,
//! answering every request line or datagram with the backend's name. A TCP connection
//! that opens with an HTTP request (a health check) gets one HTTP answer with the status
//! the test set, then is closed.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{protocol, sockets, SERVICE_PORT};
use crate::netns;
use crate::topology::Topology;

/// How often blocked server loops look at the stop flag.
const STOP_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// A connection idle this long is closed by the server.
const MAX_IDLE: Duration = Duration::from_secs(60);

/// The servers of one backend. Dropping it stops them, closing their open
/// connections.
#[derive(Debug)]
pub struct BackendServer {
    name: String,
    stop: Arc<AtomicBool>,
    http_status: Arc<AtomicU16>,
    threads: Vec<JoinHandle<()>>,
}

impl BackendServer {
    /// Starts TCP and UDP servers named `name` in namespace `ns`.
    pub fn start(ns: &str, name: &str) -> Result<BackendServer> {
        let (listener, udp) = netns::in_netns(ns, || -> Result<_> {
            let listener = sockets::dual_stack_tcp_listener(SERVICE_PORT)
                .context("TCP listener on [::]:80")?;
            let udp =
                sockets::dual_stack_udp_socket(SERVICE_PORT).context("UDP socket on [::]:80")?;
            Ok((listener, udp))
        })??;
        listener.set_nonblocking(true)?;
        udp.set_read_timeout(Some(STOP_CHECK_INTERVAL))?;

        let stop = Arc::new(AtomicBool::new(false));
        let http_status = Arc::new(AtomicU16::new(200));
        let threads = vec![
            spawn_named(name, "tcp", {
                let (name, stop) = (name.to_owned(), Arc::clone(&stop));
                let http_status = Arc::clone(&http_status);
                move || serve_tcp(&listener, &name, &stop, &http_status)
            })?,
            spawn_named(name, "udp", {
                let (name, stop) = (name.to_owned(), Arc::clone(&stop));
                move || serve_udp(&udp, &name, &stop)
            })?,
        ];
        Ok(BackendServer {
            name: name.to_owned(),
            stop,
            http_status,
            threads,
        })
    }

    /// Starts the servers of every backend of `topology`, in index order.
    pub fn start_all(topology: &Topology) -> Result<Vec<BackendServer>> {
        (0..topology.backend_count())
            .map(|index| {
                BackendServer::start(topology.backend_ns(index), topology.backend_name(index))
            })
            .collect()
    }

    /// The name this backend answers with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Makes HTTP requests (health checks) get `status` from now on (200 at start).
    pub fn set_http_status(&self, status: u16) {
        self.http_status.store(status, Ordering::Relaxed);
    }
}

impl Drop for BackendServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn spawn_named(
    backend: &str,
    role: &str,
    body: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>> {
    thread::Builder::new()
        .name(format!("{backend}-{role}"))
        .spawn(body)
        .context("cannot start server thread")
}

/// Accepts until stopped; one thread per connection, all joined on stop.
fn serve_tcp(listener: &TcpListener, name: &str, stop: &AtomicBool, http_status: &AtomicU16) {
    thread::scope(|scope| {
        while !stop.load(Ordering::Relaxed) {
            match sockets::wait_readable(listener, STOP_CHECK_INTERVAL)
                .and_then(|_| listener.accept())
            {
                Ok((stream, _)) => {
                    scope.spawn(move || serve_connection(stream, name, stop, http_status));
                }
                Err(error)
                    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(error) => {
                    eprintln!("{name}: accept failed: {error}");
                    thread::sleep(STOP_CHECK_INTERVAL);
                }
            }
        }
    });
}

/// Answers each request line until the peer closes, the connection fails,
/// it idles for [`MAX_IDLE`], or the server stops; an HTTP request gets one HTTP answer.
fn serve_connection(mut stream: TcpStream, name: &str, stop: &AtomicBool, http_status: &AtomicU16) {
    let setup = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(STOP_CHECK_INTERVAL)));
    if setup.is_err() {
        return;
    }
    let answer = protocol::answer(name);
    let mut buffer = [0u8; 1024];
    let mut last_activity = Instant::now();
    let mut first = true;
    while !stop.load(Ordering::Relaxed) && last_activity.elapsed() < MAX_IDLE {
        match stream.read(&mut buffer) {
            Ok(0) => return,
            Ok(len) => {
                last_activity = Instant::now();
                if std::mem::take(&mut first) && protocol::is_http(&buffer[..len]) {
                    let status = http_status.load(Ordering::Relaxed);
                    let _ = stream.write_all(&protocol::http_answer(name, status));
                    return;
                }
                for _ in 0..protocol::count_requests(&buffer[..len]) {
                    if stream.write_all(&answer).is_err() {
                        return;
                    }
                }
            }
            Err(error)
                if matches!(
                    error.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}

/// Answers each datagram, from the address it was sent to, until stopped.
fn serve_udp(socket: &UdpSocket, name: &str, stop: &AtomicBool) {
    let answer = name.as_bytes();
    let mut buffer = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        match sockets::recv_with_destination(socket, &mut buffer) {
            Ok(request) => {
                if let Err(error) = sockets::reply_from_destination(socket, &request, answer) {
                    eprintln!("{name}: UDP reply failed: {error}");
                }
            }
            Err(error)
                if matches!(
                    error.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(error) => {
                eprintln!("{name}: UDP receive failed: {error}");
                thread::sleep(STOP_CHECK_INTERVAL);
            }
        }
    }
}
