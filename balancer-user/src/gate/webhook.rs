//! A webhook: one HTTP POST of the rollout's context as JSON.

use http_body_util::Full;
use hyper::{body::Bytes, Request, StatusCode};

use super::{http::send, Target};

/// POSTs `body` to `url`; the answer's status, or why there was none.
pub async fn post(url: &str, body: &serde_json::Value) -> Result<StatusCode, String> {
    let target = Target::parse(url).map_err(|e| e.to_string())?;
    let request = Request::post(target.path.as_str())
        .header("host", target.authority.as_str())
        .header("user-agent", "balancer-analysis")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| format!("http: {e}"))?;
    let (status, _) = send(&target, request).await?;
    Ok(status)
}
