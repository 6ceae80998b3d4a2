//! The routes: decode the request → run the operation → encode the answer. The route table
//! itself is [`crate::operation::wire`].

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, ConnectInfo, DefaultBodyLimit, State},
    http::{Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    Json, Router,
};

use super::{
    executor::{Executor, Reply},
    listener::Peer,
};
use crate::{
    api::{ApiError, Events},
    error::{one_line, Error, Refused},
    history::Who,
    operation::Operation,
};

/// The largest request body taken, in bytes (an `apply` of 65,536 backends is about a
/// quarter of it).
pub const MAX_BODY: usize = 8 << 20;

/// Every route of the control API. Served with [`Peer`] as connect info (the uid a change
/// is recorded under in the history).
pub fn router(executor: Arc<Executor>) -> Router {
    Router::new()
        .fallback(handle)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(executor)
}

async fn handle(
    State(executor): State<Arc<Executor>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    method: Method,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return failure(Error::Refused(Refused::TooLarge(MAX_BODY)));
        }
        Err(rejection) => {
            let why = format!("unreadable request body: {}", rejection.body_text());
            return failure(Error::Refused(Refused::Request(why)));
        }
    };
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let operation = match Operation::from_request(&method, path, &body) {
        Ok(operation) => operation,
        Err(refused) => return failure(Error::Refused(refused)),
    };
    let success = operation.success();
    match executor.run(operation, Who::Uid(peer.uid)).await {
        Ok(Reply::Done) => success.into_response(),
        Ok(Reply::Status(status)) => Json(status).into_response(),
        Ok(Reply::Export(toml)) => toml.into_response(),
        Ok(Reply::Fleet(fleet)) => Json(fleet).into_response(),
        Ok(Reply::Events(events)) => Json(Events { events }).into_response(),
        Err(error) => failure(error),
    }
}

/// An error answer: refused 4xx, fault 5xx, with the whole chain on one line.
fn failure(error: Error) -> Response {
    let code = match &error {
        Error::Refused(Refused::NoOperation(_)) => StatusCode::NOT_FOUND,
        Error::Refused(Refused::TooLarge(_)) => StatusCode::PAYLOAD_TOO_LARGE,
        Error::Refused(_) => StatusCode::BAD_REQUEST,
        Error::Fault(_) | Error::Unlocated(_) => StatusCode::INTERNAL_SERVER_ERROR,
        Error::TearingDown => StatusCode::SERVICE_UNAVAILABLE,
    };
    let line = one_line(&error);
    if code.is_server_error() {
        tracing::error!("operation failed: {line}");
    }
    (code, Json(ApiError { error: line })).into_response()
}

#[cfg(test)]
mod tests {
    use axum::{
        body::{to_bytes, Body},
        extract::connect_info::MockConnectInfo,
    };
    use hyper::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::{controller::fakes::Rig, state::tests::sample};

    /// Sends one request to the routes of a controller on fakes; returns status and body.
    async fn call(router: &Router, method: Method, path: &str, body: &str) -> (StatusCode, String) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::from(body.to_string()))
            .expect("request");
        let response = router.clone().oneshot(request).await.expect("answer");
        let status = response.status();
        let bytes = to_bytes(response.into_body(), 1 << 20).await.expect("body");
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn refusals_are_4xx_faults_5xx_each_with_one_line() {
        let rig = Rig::new(sample());
        let history = crate::history::tests::opened("routes");
        let router =
            router(Executor::new(rig.start(), history)).layer(MockConnectInfo(Peer { uid: 1000 }));
        let (code, body) = call(&router, Method::GET, "/status?service=web", "").await;
        assert_eq!(code, StatusCode::OK);
        let status: crate::api::Status = serde_json::from_str(&body).expect("status JSON");
        assert_eq!(status.services.len(), 1);

        let weight = r#"{"weight":7}"#;
        let path = "/services/web/backends/198.18.0.101/weight";
        let cases = [
            (
                Method::GET,
                "/nothing",
                "",
                StatusCode::NOT_FOUND,
                "no such operation: GET /nothing",
            ),
            (
                Method::DELETE,
                "/services/nosuch",
                "",
                StatusCode::BAD_REQUEST,
                "no service named \"nosuch\"",
            ),
            (
                Method::PUT,
                path,
                "{",
                StatusCode::BAD_REQUEST,
                "bad request body: EOF while parsing an object at line 1 column 1",
            ),
            (
                Method::PUT,
                path,
                r#"{"weight":7,"wieght":9}"#,
                StatusCode::BAD_REQUEST,
                "bad request body: unknown field `wieght`, expected `weight` at line 1 column 20",
            ),
            (
                Method::PUT,
                path,
                r#"{"weight":"7"}"#,
                StatusCode::BAD_REQUEST,
                "bad request body: invalid type: string \"7\", expected u16 at line 1 column 13",
            ),
            (
                Method::POST,
                "/services",
                r#"{"name":"../etc","vip":"198.19.0.9:80/tcp"}"#,
                StatusCode::BAD_REQUEST,
                "bad service name \"../etc\": use 1-64 characters from A-Z a-z 0-9 - _ .",
            ),
        ];
        for (method, path, body, code, line) in cases {
            let answer = call(&router, method.clone(), path, body).await;
            let expected = serde_json::to_string(&ApiError { error: line.into() }).unwrap();
            assert_eq!(answer, (code, expected), "{method} {path}");
        }
        // A body over the limit is refused before it is read whole, with the same shape.
        let huge = format!("{{\"toml\":\"{}\"}}", "#".repeat(MAX_BODY));
        let (code, body) = call(&router, Method::POST, "/apply", &huge).await;
        assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            body,
            r#"{"error":"the request body is over the limit of 8388608 bytes"}"#
        );
        let (_, status) = call(&router, Method::GET, "/status", "").await;
        let status: crate::api::Status = serde_json::from_str(&status).expect("status JSON");
        assert_eq!(
            status.services.len(),
            2,
            "a refused request changed the services"
        );

        rig.store.fail_next_save();
        let (code, body) = call(&router, Method::PUT, path, weight).await;
        assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            body,
            r#"{"error":"sync state.json: No space left on device (os error 28)"}"#
        );
        assert_eq!(
            call(&router, Method::PUT, path, weight).await.0,
            StatusCode::NO_CONTENT
        );
        let added = r#"{"addr":"198.18.0.120","group":"blue","weight":null}"#;
        assert_eq!(
            call(&router, Method::POST, "/services/web/backends", added)
                .await
                .0,
            StatusCode::CREATED
        );
        assert_eq!(
            call(&router, Method::POST, "/teardown", "").await.0,
            StatusCode::NO_CONTENT
        );
        let (code, body) = call(&router, Method::GET, "/status", "").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, r#"{"error":"the daemon is tearing down"}"#);
    }

    #[tokio::test]
    async fn a_change_is_recorded_as_its_peers_and_events_are_served_as_json() {
        let rig = Rig::new(sample());
        let history = crate::history::tests::opened("routes-events");
        let router =
            router(Executor::new(rig.start(), history)).layer(MockConnectInfo(Peer { uid: 1000 }));
        let path = "/services/web/backends/198.18.0.101/weight";
        let (code, _) = call(&router, Method::PUT, path, r#"{"weight":7}"#).await;
        assert_eq!(code, StatusCode::NO_CONTENT);
        let (code, body) = call(&router, Method::GET, "/events?service=web", "").await;
        assert_eq!(code, StatusCode::OK);
        let Events { events } = serde_json::from_str(&body).expect("events JSON");
        let [event] = &events[..] else {
            panic!("one event expected: {events:?}");
        };
        assert_eq!(event.who, Who::Uid(1000));
        assert_eq!(event.what, "weight of 198.18.0.101 set to 7");
        assert_eq!(
            (event.before.as_deref(), event.after.as_deref()),
            (
                Some("backend 198.18.0.101: blue weight 100"),
                Some("backend 198.18.0.101: blue weight 7")
            )
        );
        let (code, body) = call(&router, Method::GET, "/events?service=dns", "").await;
        assert_eq!((code, body.as_str()), (StatusCode::OK, r#"{"events":[]}"#));
        let (code, body) = call(&router, Method::GET, "/events?limit=5000", "").await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            r#"{"error":"limit=\"5000\" is not a number from 1 to 1000"}"#
        );
    }
}
