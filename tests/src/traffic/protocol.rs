//! The line protocol: the client sends a line, the server answers each
//! line with its name and a newline.

use std::io::{ErrorKind, Read, Write};

use anyhow::{bail, Context, Result};

/// What clients send.
pub(crate) const REQUEST: &[u8] = b"ping\n";

/// Longest answer accepted; backend names are short.
const MAX_ANSWER: usize = 256;

/// Sends [`REQUEST`] on `stream` and returns the answer line without its
/// newline. Read and write timeouts must already be set on `stream`.
pub(crate) fn exchange(stream: &mut (impl Read + Write)) -> Result<String> {
    stream.write_all(REQUEST).context("sending request")?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 64];
    while !answer.ends_with(b"\n") {
        if answer.len() > MAX_ANSWER {
            bail!("answer longer than {MAX_ANSWER} bytes");
        }
        match stream.read(&mut chunk) {
            Ok(0) => bail!("connection closed before a full answer"),
            Ok(len) => answer.extend_from_slice(&chunk[..len]),
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(super::explain_timeout(error)).context("reading answer"),
        }
    }
    answer.pop();
    String::from_utf8(answer).context("answer is not UTF-8")
}

/// Number of complete request lines in `received`.
pub(crate) fn count_requests(received: &[u8]) -> usize {
    received.iter().filter(|&&byte| byte == b'\n').count()
}

/// The answer a server named `name` sends for one request.
pub(crate) fn answer(name: &str) -> Vec<u8> {
    format!("{name}\n").into_bytes()
}

/// Whether `received`, the first bytes of a connection, start an HTTP request.
pub(crate) fn is_http(received: &[u8]) -> bool {
    received.starts_with(b"GET ") || received.starts_with(b"HEAD ")
}

/// One HTTP/1.1 answer with `status` and the backend's name as body; the connection
/// closes after it.
pub(crate) fn http_answer(name: &str, status: u16) -> Vec<u8> {
    let body = answer(name);
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        if status < 400 { "OK" } else { "Failing" },
        body.len()
    )
    .into_bytes();
    head.extend_from_slice(&body);
    head
}
