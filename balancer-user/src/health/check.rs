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
        .header("host", target.ip().to_string())
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

    /// A one-connection HTTP server on loopback answering with `status_line`.
    async fn http_server(status_line: &'static str) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await;
            let answer = format!("HTTP/1.1 {status_line}\r\ncontent-length: 0\r\n\r\n");
            let _ = socket.write_all(answer.as_bytes()).await;
        });
        addr
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
