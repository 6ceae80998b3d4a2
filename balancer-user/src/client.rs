//! The CLI's side of the control API: one HTTP/1.1 request per command over the Unix socket.

use std::path::{Path, PathBuf};

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
}

impl ClientError {
    /// The CLI's exit code for this error: 1 refused, 3 daemon unreachable, 4 fault.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Refused(_) => 1,
            ClientError::Unreachable(..) | ClientError::Unavailable(_) => 3,
            ClientError::Http(_) | ClientError::Fault(_) => 4,
        }
    }
}

/// A client of one daemon socket.
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// A client of the daemon listening on `socket`.
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_path_buf(),
        }
    }

    /// Runs `operation` on the daemon; returns the body of its answer.
    pub async fn run(&self, operation: &Operation) -> Result<Bytes, ClientError> {
        let request = operation.to_request();
        self.send(request.method, &request.path, request.body.into_parts())
            .await
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
