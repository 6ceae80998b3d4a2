//! The metrics endpoint of `--metrics-listen`: `GET /metrics` answers the Prometheus text
//! of [`crate::metrics`]; anything else is 404. Read-only: it changes nothing.

use std::sync::Arc;

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};

use super::executor::Executor;
use crate::{error::one_line, metrics::CONTENT_TYPE};

/// The metrics route.
pub fn router(executor: Arc<Executor>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(executor)
}

async fn scrape(State(executor): State<Arc<Executor>>) -> Response {
    match executor.metrics().await {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, one_line(&e)).into_response(),
    }
}
