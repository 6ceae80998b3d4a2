//! A plain HTTP/1.0 GET from inside a namespace, for the daemon's metrics and Prometheus'
//! query API (no client crate needed for that much).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{Context, Result};

use crate::netns;

/// An HTTP answer.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The header lines, as sent.
    pub head: String,
    /// The body.
    pub body: String,
}

/// `GET path` from `addr`, connecting from namespace `ns`; bounded by timeouts.
pub fn get(ns: &str, addr: SocketAddr, path: &str) -> Result<Answer> {
    let response = netns::in_netns(ns, || -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    })?
    .with_context(|| format!("GET http://{addr}{path} from {ns}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("an HTTP answer without a header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("an HTTP answer without a status")?;
    Ok(Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}
