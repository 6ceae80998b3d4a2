//! The client side: one-shot TCP and UDP questions from the client
//! namespace, optionally from one of the extra client addresses.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};

use anyhow::{ensure, Context, Result};

use super::{protocol, sockets, IO_TIMEOUT};
use crate::netns;

/// Creates its sockets in one namespace (normally the topology's client).
#[derive(Debug, Clone)]
pub struct Client {
    ns: String,
}

/// How [`Client::distribution`]'s asks were answered (all of them were).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distribution {
    /// Number of answers per backend name.
    pub counts: BTreeMap<String, usize>,
}

impl Distribution {
    /// Number of asks that were answered: what shares are computed over.
    pub fn answered(&self) -> usize {
        self.counts.values().sum()
    }

    /// Requires every backend of `expected` (name, percent) to have answered its percent
    /// of the asks within `points` percentage points, and no other backend to have
    /// answered.
    pub fn ensure_shares(&self, expected: &[(&str, f64)], points: f64) -> Result<()> {
        let answered = self.answered() as f64;
        for (backend, want) in expected {
            let got = *self.counts.get(*backend).unwrap_or(&0) as f64 * 100.0 / answered;
            ensure!(
                (got - want).abs() <= points,
                "{backend} answered {got:.1}% of {answered} asks, not {want:.1}% ± {points} \
                 ({:?})",
                self.counts
            );
        }
        let others: Vec<&String> = self
            .counts
            .keys()
            .filter(|name| !expected.iter().any(|(backend, _)| backend == name))
            .collect();
        ensure!(others.is_empty(), "{others:?} answered: {:?}", self.counts);
        Ok(())
    }
}

impl Client {
    /// A client creating its sockets in namespace `ns`.
    pub fn new(ns: &str) -> Client {
        Client { ns: ns.to_owned() }
    }

    /// Connects to `service` (from `source`, port 0, if given), sends one
    /// line, returns the answered backend name and closes.
    pub fn ask_once(&self, service: SocketAddr, source: Option<IpAddr>) -> Result<String> {
        let mut stream = self.connect(service, source)?;
        protocol::exchange(&mut stream)
            .with_context(|| format!("asking {service} from {}", describe(source)))
    }

    /// Like [`Client::ask_once`] from the default source address and client port `port`:
    /// a connection of a 5-tuple the caller chose (e.g. the port of an earlier one).
    pub fn ask_from_port(&self, service: SocketAddr, port: u16) -> Result<String> {
        let source = SocketAddr::new(unspecified_like(service), port);
        let mut stream = netns::in_netns(&self.ns, || {
            sockets::connect_tcp_from(service, Some(source), IO_TIMEOUT)
        })?
        .with_context(|| format!("connecting to {service} from port {port}"))?;
        protocol::exchange(&mut stream)
            .with_context(|| format!("asking {service} from port {port}"))
    }

    /// Sends one UDP datagram to `service` (from `source` if given) and
    /// returns the backend name in the answer. The answer must come from
    /// `service` itself (the socket is connected).
    pub fn ask_udp_once(&self, service: SocketAddr, source: Option<IpAddr>) -> Result<String> {
        let socket = self.udp_socket(service, source, 0)?;
        udp_exchange(&socket)
            .with_context(|| format!("UDP ask of {service} from {}", describe(source)))
    }

    /// Like [`Client::ask_udp_once`] from the default source address and client port
    /// `port`: a flow of a 5-tuple the caller chose, so that it is new to the balancer
    /// (a kernel-chosen port may repeat one that connection tracking still holds).
    pub fn ask_udp_from_port(&self, service: SocketAddr, port: u16) -> Result<String> {
        let socket = self.udp_socket(service, None, port)?;
        udp_exchange(&socket).with_context(|| format!("UDP ask of {service} from port {port}"))
    }

    /// A UDP socket in the client's namespace bound to `source` (or any address) and
    /// `port` (0: the kernel's choice), connected to `service`, with the harness's
    /// timeouts: one flow for as long as it is used.
    pub fn udp_socket(
        &self,
        service: SocketAddr,
        source: Option<IpAddr>,
        port: u16,
    ) -> Result<UdpSocket> {
        netns::in_netns(&self.ns, || -> std::io::Result<UdpSocket> {
            let socket = UdpSocket::bind((source.unwrap_or(unspecified_like(service)), port))?;
            socket.connect(service)?;
            socket.set_read_timeout(Some(IO_TIMEOUT))?;
            socket.set_write_timeout(Some(IO_TIMEOUT))?;
            Ok(socket)
        })?
        .with_context(|| format!("UDP socket to {service} from {}", describe(source)))
    }

    /// Asks `service` `count` times in sequence, cycling through `sources`
    /// (the default source if empty), and counts the answers per backend.
    ///
    /// Fails at the first ask that fails, naming it and its error: a caller that
    /// expects failures asks with [`Client::ask_once`] itself.
    pub fn distribution(
        &self,
        service: SocketAddr,
        count: usize,
        sources: &[IpAddr],
    ) -> Result<Distribution> {
        let mut counts = BTreeMap::new();
        for attempt in 0..count {
            let source = (!sources.is_empty()).then(|| sources[attempt % sources.len()]);
            let backend = self
                .ask_once(service, source)
                .with_context(|| format!("ask {} of {count} failed", attempt + 1))?;
            *counts.entry(backend).or_default() += 1;
        }
        Ok(Distribution { counts })
    }

    /// A TCP connection to `service` from this client's namespace, with
    /// connect, read and write timeouts.
    pub(crate) fn connect(&self, service: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream> {
        netns::in_netns(&self.ns, || {
            sockets::connect_tcp(service, source, IO_TIMEOUT)
        })?
        .with_context(|| format!("connecting to {service} from {}", describe(source)))
    }
}

/// Sends one request datagram on the connected `socket` and returns the answer: the name
/// of the backend that answered.
pub fn udp_exchange(socket: &UdpSocket) -> Result<String> {
    socket
        .send(protocol::REQUEST)
        .context("sending the datagram")?;
    let mut buffer = [0u8; 512];
    let len = socket
        .recv(&mut buffer)
        .map_err(super::explain_timeout)
        .context("waiting for the answer")?;
    String::from_utf8(buffer[..len].to_vec()).context("answer is not UTF-8")
}

fn unspecified_like(service: SocketAddr) -> IpAddr {
    match service {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

fn describe(source: Option<IpAddr>) -> String {
    source.map_or_else(
        || "the default source".to_owned(),
        |source| source.to_string(),
    )
}
