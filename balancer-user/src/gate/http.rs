//! One plain HTTP/1.1 request on a connection of its own.

use http_body_util::{BodyExt, Limited};
use hyper::{
    body::{Body, Bytes},
    Request, StatusCode,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::Target;

/// The largest answer read.
const MAX_ANSWER: usize = 1 << 20;

/// Sends `request` to `target` on a connection of its own: the status and the body.
pub async fn send<B>(target: &Target, request: Request<B>) -> Result<(StatusCode, Bytes), String>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("http: {e}"))?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("http: {e}"))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok((status, body))
}
