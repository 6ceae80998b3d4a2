//! The CLI's side of the control API: one HTTP/1.1 request per command over the Unix socket.

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::{body::Bytes, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{de::DeserializeOwned, Serialize};
use tokio::net::UnixStream;

use crate::api::ApiError;

/// Why a request failed. One line each.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon listening.
    #[error("cannot reach the balancer daemon at {0}: {1}")]
    Unreachable(PathBuf, std::io::Error),
    /// HTTP failed.
    #[error("talking to the daemon failed: {0}")]
    Http(String),
    /// The daemon refused the request.
    #[error("{0}")]
    Refused(String),
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

    /// Sends a request; returns the body of a 2xx answer, or the daemon's error line.
    pub async fn send(
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
        Err(ClientError::Refused(error_line(status, &bytes)))
    }

    /// Sends a JSON body.
    pub async fn send_json<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<Bytes, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Http(e.to_string()))?;
        self.send(method, path, Some((bytes, "application/json")))
            .await
    }

    /// GETs a JSON document.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let bytes = self.send(Method::GET, path, None).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Http(e.to_string()))
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

/// Percent-encodes a path segment (service names are plain; IPv6 addresses have colons,
/// which are fine in paths).
pub fn segment(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '-' | '_' | '.' | ':' | '~' => c.to_string(),
            other => {
                let mut buf = [0u8; 4];
                other
                    .encode_utf8(&mut buf)
                    .bytes()
                    .map(|b| format!("%{b:02X}"))
                    .collect()
            }
        })
        .collect()
}
