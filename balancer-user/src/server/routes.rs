//! The routes: decode the request → run the operation → encode the answer. The route table
//! itself is [`crate::operation::wire`].

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::State,
    http::{Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    Json, Router,
};

use super::executor::{Executor, Reply};
use crate::{
    api::ApiError,
    error::{one_line, Error, Refused},
    operation::Operation,
};

/// Every route of the control API.
pub fn router(executor: Arc<Executor>) -> Router {
    Router::new().fallback(handle).with_state(executor)
}

async fn handle(
    State(executor): State<Arc<Executor>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let operation = match Operation::from_request(&method, path, &body) {
        Ok(operation) => operation,
        Err(refused) => return failure(Error::Refused(refused)),
    };
    let success = operation.success();
    match executor.run(operation).await {
        Ok(Reply::Done) => success.into_response(),
        Ok(Reply::Status(status)) => Json(status).into_response(),
        Ok(Reply::Export(toml)) => toml.into_response(),
        Err(error) => failure(error),
    }
}

/// An error answer: refused 4xx, fault 5xx, with the whole chain on one line.
fn failure(error: Error) -> Response {
    let code = match &error {
        Error::Refused(Refused::NoOperation(_)) => StatusCode::NOT_FOUND,
        Error::Refused(_) => StatusCode::BAD_REQUEST,
        Error::Fault(_) => StatusCode::INTERNAL_SERVER_ERROR,
        Error::TearingDown => StatusCode::SERVICE_UNAVAILABLE,
    };
    let line = one_line(&error);
    if code.is_server_error() {
        tracing::error!("operation failed: {line}");
    }
    (code, Json(ApiError { error: line })).into_response()
}
