//! The external gates of a canary analysis: Prometheus queries and webhooks over plain
//! HTTP, asked by the executor off the controller's lock, each within [`TIMEOUT`]. Every
//! answer becomes a [`GateResult`] with the value or answer it was based on.

mod http;
mod prometheus;
mod target;
mod webhook;

use std::time::Duration;

pub use target::{Target, TargetError};

use crate::release::analysis::{Ask, GateResult, Verdict};

/// How long one gate may take to answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Asks one gate. A Prometheus query without a usable answer has no verdict; a webhook
/// that does not answer 2xx says no.
pub async fn ask(ask: &Ask) -> GateResult {
    match ask {
        Ask::Prometheus(gate) => {
            let (verdict, detail) =
                match tokio::time::timeout(TIMEOUT, prometheus::query(gate)).await {
                    Ok(Ok(value)) => prometheus::judge(gate, value),
                    Ok(Err(why)) => (Verdict::Inconclusive, why),
                    Err(_) => (
                        Verdict::Inconclusive,
                        format!("no answer within {TIMEOUT:?}"),
                    ),
                };
            GateResult {
                gate: format!("prometheus {}", gate.query),
                verdict,
                detail,
            }
        }
        Ask::Webhook { url, body } => {
            let (verdict, detail) = match tokio::time::timeout(TIMEOUT, webhook::post(url, body))
                .await
            {
                Ok(Ok(status)) if status.is_success() => (Verdict::Pass, format!("HTTP {status}")),
                Ok(Ok(status)) => (Verdict::Fail, format!("HTTP {status}")),
                Ok(Err(why)) => (Verdict::Fail, why),
                Err(_) => (Verdict::Fail, format!("no answer within {TIMEOUT:?}")),
            };
            GateResult {
                gate: format!("webhook {url}"),
                verdict,
                detail,
            }
        }
    }
}
