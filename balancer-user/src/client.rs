//! The CLI's side of the control API: one HTTP/1.1 request per command over the Unix socket.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use http_body_util::{BodyExt, Full};
use hyper::{body::Bytes, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use crate::{api::ApiError, operation::Operation};

/// Why a request failed. One line each.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon listening.
    #[error("cannot reach the balancer daemon at {0}")]
    Unreachable(PathBuf, #[source] std::io::Error),
    /// The daemon is tearing down.
    #[error("{0}")]
    Unavailable(String),
    /// HTTP failed.
    #[error("talking to the daemon failed: {0}")]
    Http(String),
    /// The daemon refused the request (HTTP 4xx): nothing changed.
    #[error("{0}")]
    Refused(String),
    /// The daemon failed to carry it out (HTTP 5xx).
    #[error("{0}")]
    Fault(String),
    /// The daemon did not answer in time; a change it was carrying out may still land.
    #[error("the daemon did not answer {call} within {} (--timeout)", humantime::format_duration(*.after))]
    TimedOut {
        /// The call: method and path.
        call: String,
        /// The timeout.
        after: Duration,
    },
}

impl ClientError {
    /// The CLI's exit code for this error: 1 refused, 3 daemon unreachable or silent past
    /// the timeout, 4 fault.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Refused(_) => 1,
            ClientError::Unreachable(..)
            | ClientError::Unavailable(_)
            | ClientError::TimedOut { .. } => 3,
            ClientError::Http(_) | ClientError::Fault(_) => 4,
        }
    }
}

/// How long a client waits for the daemon's answer unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of one daemon socket.
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    /// A client of the daemon listening on `socket`, waiting [`DEFAULT_TIMEOUT`] for each
    /// answer.
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_path_buf(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Waits `timeout` for each answer instead.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs `operation` on the daemon; returns the body of its answer.
    pub async fn run(&self, operation: &Operation) -> Result<Bytes, ClientError> {
        let request = operation.to_request();
        let call = format!("{} {}", request.method, request.path);
        let sent = self.send(request.method, &request.path, request.body.into_parts());
        tokio::time::timeout(self.timeout, sent)
            .await
            .map_err(|_| ClientError::TimedOut {
                call,
                after: self.timeout,
            })?
    }

    /// Sends a request; returns the body of a 2xx answer, or the daemon's error line.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(Vec<u8>, &'static str)>,
    ) -> Result<Bytes, ClientError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| ClientError::Unreachable(self.socket.clone(), e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "balancer");
        let body = match body {
            Some((bytes, content_type)) => {
                request = request.header("content-type", content_type);
                Full::new(Bytes::from(bytes))
            }
            None => Full::new(Bytes::new()),
        };
        let request = request
            .body(body)
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?
            .to_bytes();
        if status.is_success() {
            return Ok(bytes);
        }
        let line = error_line(status, &bytes);
        Err(if status == StatusCode::SERVICE_UNAVAILABLE {
            ClientError::Unavailable(line)
        } else if status.is_client_error() {
            ClientError::Refused(line)
        } else {
            ClientError::Fault(line)
        })
    }
}

fn error_line(status: StatusCode, body: &[u8]) -> String {
    match serde_json::from_slice::<ApiError>(body) {
        Ok(e) => e.error,
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
            if text.is_empty() {
                format!("the daemon answered {status}")
            } else {
                text
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_daemon_that_does_not_answer_times_out_naming_the_call() {
        let dir = std::env::temp_dir().join(format!("balancer-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("silent.sock");
        std::fs::remove_file(&socket).ok();
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        // Accepts and never answers.
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let client = Client::new(&socket).with_timeout(Duration::from_millis(200));
        let status = Operation::Status {
            service: Some("web".into()),
        };
        let err = client.run(&status).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "the daemon did not answer GET /status?service=web within 200ms (--timeout)"
        );
        assert_eq!(err.exit_code(), 3);
        silent.abort();
        std::fs::remove_dir_all(&dir).ok();
    }
}
