//! One health check of one backend.

use std::{net::SocketAddr, time::Duration};

use http_body_util::Empty;
use hyper::{body::Bytes, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::state::{CheckKind, HealthCheck};

/// Runs `check` against `target`; the error says why it failed, in one line.
pub async fn run(check: &HealthCheck, target: SocketAddr) -> Result<(), String> {
    let timeout = Duration::from_millis(check.timeout_ms);
    match tokio::time::timeout(timeout, attempt(&check.kind, target)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

async fn attempt(kind: &CheckKind, target: SocketAddr) -> Result<(), String> {
    let stream = TcpStream::connect(target)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let CheckKind::Http { path } = kind else {
        return Ok(());
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("http: {e}"))?;
    tokio::spawn(connection);
    let request = Request::get(path.as_str())
        .header("host", host(target))
        .header("user-agent", "balancer-health-check")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("http: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("http: {e}"))?;
    let status = response.status();
    if status.is_success() || status.is_redirection() {
        Ok(())
    } else {
        Err(format!("http status {status}"))
    }
}

/// The `Host` header naming `target`: an IPv6 address in brackets, the port only when it
/// is not HTTP's 80.
fn host(target: SocketAddr) -> String {
    match (target, target.port()) {
        (SocketAddr::V4(v4), 80) => v4.ip().to_string(),
        (SocketAddr::V6(v6), 80) => format!("[{}]", v6.ip()),
        (target, _) => target.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn check(kind: CheckKind) -> HealthCheck {
        HealthCheck {
            kind,
            interval_ms: 1000,
            timeout_ms: 500,
            rise: 1,
            fall: 1,
        }
    }

    /// A one-connection HTTP server on `bind` answering with `status_line`; the request it
    /// read comes back through the handle.
    async fn http_server_on(
        bind: &str,
        status_line: &'static str,
    ) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let len = socket.read(&mut buf).await.unwrap_or(0);
            let answer = format!("HTTP/1.1 {status_line}\r\ncontent-length: 0\r\n\r\n");
            let _ = socket.write_all(answer.as_bytes()).await;
            String::from_utf8_lossy(&buf[..len]).into_owned()
        });
        (addr, served)
    }

    /// A one-connection HTTP server on IPv4 loopback answering with `status_line`.
    async fn http_server(status_line: &'static str) -> SocketAddr {
        http_server_on("127.0.0.1:0", status_line).await.0
    }

    #[test]
    fn the_host_header_brackets_ipv6_and_names_a_port_other_than_80() {
        let host_of = |s: &str| host(s.parse().unwrap());
        assert_eq!(host_of("198.18.0.1:80"), "198.18.0.1");
        assert_eq!(host_of("198.18.0.1:8080"), "198.18.0.1:8080");
        assert_eq!(host_of("[2001:db8::1]:80"), "[2001:db8::1]");
        assert_eq!(host_of("[2001:db8::1]:8080"), "[2001:db8::1]:8080");
    }

    #[tokio::test]
    async fn an_ipv6_check_sends_a_valid_host_header() {
        let (addr, served) = http_server_on("[::1]:0", "200 OK").await;
        let http = check(CheckKind::Http {
            path: "/healthz".into(),
        });
        assert_eq!(run(&http, addr).await, Ok(()));
        let request = served.await.unwrap().to_ascii_lowercase();
        let expected = format!("host: [::1]:{}\r\n", addr.port());
        assert!(request.contains(&expected), "{request}");
    }

    #[tokio::test]
    async fn tcp_and_http_checks() {
        let up = http_server("200 OK").await;
        assert_eq!(run(&check(CheckKind::Tcp), up).await, Ok(()));
        let ok = http_server("302 Found").await;
        let http = check(CheckKind::Http {
            path: "/healthz".into(),
        });
        assert_eq!(run(&http, ok).await, Ok(()));
        let failing = http_server("503 Service Unavailable").await;
        assert!(run(&http, failing).await.unwrap_err().contains("503"));
        // Nothing listens on a port just released.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert!(run(&check(CheckKind::Tcp), closed).await.is_err());
    }
}
