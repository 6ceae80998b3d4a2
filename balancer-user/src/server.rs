//! The control API: HTTP + JSON on a Unix socket (`curl --unix-socket`), one route per
//! operation. Every change goes through the controller, one at a time.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
};

use axum::{
    extract::{Path, Query, State as AxumState},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{delete, get, post, put},
    Json, Router,
};
use serde::Deserialize;
use tokio::sync::Notify;

use crate::{
    api::{
        AddBackend, AddService, ApiError, Flip, PinRequest, SetHealth, SetSplit, SetWeight,
        StartCanary, StartDrain, StartRollout,
    },
    config::Config,
    controller::{Controller, ControllerError},
    health::ProbeJob,
    state::{parse_percent, CanaryAction, CanaryPlan, RolloutPlan, DEFAULT_WEIGHT},
};

/// What the handlers share.
pub struct Shared {
    controller: Mutex<Option<Controller>>,
    /// Notified when the daemon should exit (after a teardown).
    pub shutdown: Notify,
}

impl Shared {
    /// Wraps a started controller.
    pub fn new(controller: Controller) -> Arc<Self> {
        Arc::new(Self {
            controller: Mutex::new(Some(controller)),
            shutdown: Notify::new(),
        })
    }
}

/// The routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/services", post(add_service))
        .route("/services/{name}", delete(remove_service))
        .route("/services/{name}/backends", post(add_backend))
        .route("/services/{name}/backends/{addr}", delete(remove_backend))
        .route("/services/{name}/backends/{addr}/weight", put(set_weight))
        .route("/services/{name}/backends/{addr}/drain", post(start_drain))
        .route("/services/{name}/rollout", post(start_rollout))
        .route("/services/{name}/rollout/abort", post(abort_rollout))
        .route("/services/{name}/split", put(set_split))
        .route("/services/{name}/health", put(set_health))
        .route("/services/{name}/flip", put(flip))
        .route("/services/{name}/pins", post(add_pin).delete(remove_pin))
        .route("/services/{name}/canary", post(start_canary))
        .route("/services/{name}/canary/{action}", post(canary_action))
        .route("/apply", post(apply))
        .route("/export", get(export))
        .route("/teardown", post(teardown))
        .with_state(shared)
}

/// An error answer: status code and one line.
pub struct Failure(StatusCode, String);

impl Failure {
    /// The one-line message.
    pub fn message(&self) -> &str {
        &self.1
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(ApiError { error: self.1 })).into_response()
    }
}

impl From<ControllerError> for Failure {
    fn from(e: ControllerError) -> Self {
        let code = if e.is_bad_input() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        Failure(code, e.to_string())
    }
}

fn bad_request(message: impl ToString) -> Failure {
    Failure(StatusCode::BAD_REQUEST, message.to_string())
}

/// Runs `f` on the controller slot, off the async executor (map writes are system calls).
async fn on_slot<T: Send + 'static>(
    shared: Arc<Shared>,
    f: impl FnOnce(&mut Option<Controller>) -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(move || {
        let mut slot = shared
            .controller
            .lock()
            .map_err(|_| internal("controller poisoned"))?;
        f(&mut slot)
    })
    .await
    .map_err(internal)?
}

/// Runs `f` on the controller, unless a teardown took it.
async fn with_controller<T: Send + 'static>(
    shared: Arc<Shared>,
    f: impl FnOnce(&mut Controller) -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    on_slot(shared, |slot| f(slot.as_mut().ok_or_else(tearing_down)?)).await
}

fn internal(message: impl ToString) -> Failure {
    Failure(StatusCode::INTERNAL_SERVER_ERROR, message.to_string())
}

fn tearing_down() -> Failure {
    Failure(
        StatusCode::SERVICE_UNAVAILABLE,
        "the daemon is tearing down".into(),
    )
}

fn parse_addr(text: &str) -> Result<IpAddr, Failure> {
    text.parse()
        .map_err(|_| bad_request(format!("{text:?} is not an IP address")))
}

#[derive(Deserialize)]
struct StatusQuery {
    service: Option<String>,
}

async fn status(
    AxumState(shared): AxumState<Arc<Shared>>,
    Query(query): Query<StatusQuery>,
) -> Result<Response, Failure> {
    let status = with_controller(shared, move |c| Ok(c.status(query.service.as_deref())?)).await?;
    Ok(Json(status).into_response())
}

async fn add_service(
    AxumState(shared): AxumState<Arc<Shared>>,
    Json(req): Json<AddService>,
) -> Result<StatusCode, Failure> {
    with_controller(shared, move |c| {
        Ok(c.change(|s| {
            s.add_service(&req.name, req.vip, req.affinity, req.table_size)?;
            s.set_health(&req.name, req.health)
        })?)
    })
    .await?;
    Ok(StatusCode::CREATED)
}

async fn remove_service(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<StatusCode, Failure> {
    with_controller(shared, move |c| Ok(c.change(|s| s.remove_service(&name))?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn add_backend(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(name): Path<String>,
    Json(req): Json<AddBackend>,
) -> Result<StatusCode, Failure> {
    with_controller(shared, move |c| {
        let weight = req.weight.unwrap_or(DEFAULT_WEIGHT);
        Ok(c.change(|s| s.add_backend(&name, req.addr, &req.group, weight))?)
    })
    .await?;
    Ok(StatusCode::CREATED)
}

async fn remove_backend(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path((name, addr)): Path<(String, String)>,
) -> Result<StatusCode, Failure> {
    let addr = parse_addr(&addr)?;
    with_controller(shared, move |c| {
        Ok(c.change(|s| s.remove_backend(&name, addr))?)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_weight(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path((name, addr)): Path<(String, String)>,
    Json(req): Json<SetWeight>,
) -> Result<StatusCode, Failure> {
    let addr = parse_addr(&addr)?;
    with_controller(shared, move |c| {
        Ok(c.change(|s| s.set_weight(&name, addr, req.weight))?)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_split(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(name): Path<String>,
    Json(req): Json<SetSplit>,
) -> Result<StatusCode, Failure> {
    let shares = req
        .shares
        .iter()
        .map(|(group, percent)| Ok((group.clone(), parse_percent(percent)?)))
        .collect::<Result<Vec<_>, crate::state::StateError>>()
        .map_err(bad_request)?;
    with_controller(shared, move |c| {
        Ok(c.change(|s| s.set_split(&name, &shares))?)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn start_drain(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path((name, addr)): Path<(String, String)>,
    Json(req): Json<StartDrain>,
) -> Result<StatusCode, Failure> {
    let addr = parse_addr(&addr)?;
    with_controller(shared, move |c| {
        Ok(c.change(|s| s.start_drain(&name, addr, req.timeout_ms, now_ms()))?)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn start_rollout(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(name): Path<String>,
    Json(req): Json<StartRollout>,
) -> Result<StatusCode, Failure> {
    let plan = RolloutPlan {
        group: req.group,
        pairs: req.pairs,
        ready_timeout_ms: req.ready_timeout_ms,
        slow_start_ms: req.slow_start_ms,
        drain_timeout_ms: req.drain_timeout_ms,
    };
    with_controller(shared, move |c| {
        Ok(c.change(|s| s.start_rollout(&name, plan, now_ms()))?)
    })
    .await?;
    Ok(StatusCode::CREATED)
}

async fn abort_rollout(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<StatusCode, Failure> {
    with_controller(shared, move |c| {
        Ok(c.change(|s| s.abort_rollout(&name, now_ms()))?)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_health(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(name): Path<String>,
    Json(req): Json<SetHealth>,
) -> Result<StatusCode, Failure> {
    with_controller(shared, move |c| {
        Ok(c.change(|s| s.set_health(&name, req.health))?)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn flip(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(name): Path<String>,
    Json(req): Json<Flip>,
) -> Result<StatusCode, Failure> {
    with_controller(shared, move |c| {
        Ok(c.change(|s| s.flip(&name, &req.to, req.drain_timeout_ms, now_ms()))?)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn parse_cidr(text: &str) -> Result<ipnet::IpNet, Failure> {
    text.parse()
        .map_err(|_| bad_request(format!("{text:?} is not a CIDR prefix (ADDR/LEN)")))
}

async fn add_pin(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(name): Path<String>,
    Json(req): Json<PinRequest>,
) -> Result<StatusCode, Failure> {
    let cidr = parse_cidr(&req.cidr)?;
    with_controller(shared, move |c| {
        Ok(c.change(|s| s.add_pin(&name, cidr, &req.group))?)
    })
    .await?;
    Ok(StatusCode::CREATED)
}

async fn remove_pin(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(name): Path<String>,
    Json(req): Json<PinRequest>,
) -> Result<StatusCode, Failure> {
    let cidr = parse_cidr(&req.cidr)?;
    with_controller(
        shared,
        move |c| Ok(c.change(|s| s.remove_pin(&name, cidr))?),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Now as Unix milliseconds, the clock of canary schedules.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn start_canary(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(name): Path<String>,
    Json(req): Json<StartCanary>,
) -> Result<StatusCode, Failure> {
    let steps = req
        .steps
        .iter()
        .map(|p| parse_percent(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad_request)?;
    let auto_rollback = req
        .auto_rollback
        .as_deref()
        .map(parse_percent)
        .transpose()
        .map_err(bad_request)?;
    with_controller(shared, move |c| {
        Ok(c.change(|s| {
            let plan = CanaryPlan {
                from: req.from.clone(),
                to: req.to.clone(),
                steps: steps.clone(),
                interval_ms: req.interval_ms,
                auto_rollback,
            };
            s.start_canary(&name, plan, now_ms())
        })?)
    })
    .await?;
    Ok(StatusCode::CREATED)
}

async fn canary_action(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path((name, action)): Path<(String, String)>,
) -> Result<StatusCode, Failure> {
    let action: CanaryAction = serde_json::from_value(serde_json::Value::String(action.clone()))
        .map_err(|_| bad_request(format!("unknown canary action {action:?}")))?;
    with_controller(shared, move |c| {
        Ok(c.change(|s| s.canary_action(&name, action, now_ms()))?)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Advances due canary steps and returns the due health checks; the daemon calls it on a
/// timer.
pub async fn tick(shared: Arc<Shared>) -> Result<Vec<ProbeJob>, Failure> {
    with_controller(shared, |c| Ok(c.tick(now_ms())?)).await
}

/// Hands a health-check result to the controller.
pub async fn report_probe(
    shared: Arc<Shared>,
    job: ProbeJob,
    result: Result<(), String>,
) -> Result<(), Failure> {
    with_controller(shared, move |c| {
        Ok(c.report_probe(&job, result, now_ms())?)
    })
    .await
}

async fn apply(
    AxumState(shared): AxumState<Arc<Shared>>,
    body: String,
) -> Result<StatusCode, Failure> {
    let config = Config::parse(&body).map_err(bad_request)?;
    with_controller(shared, move |c| Ok(c.change(|s| config.apply_to(s))?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn export(AxumState(shared): AxumState<Arc<Shared>>) -> Result<String, Failure> {
    with_controller(shared, |c| {
        let config = Config::from_state(c.state()).map_err(ControllerError::from)?;
        Ok(config.to_toml())
    })
    .await
}

async fn teardown(AxumState(shared): AxumState<Arc<Shared>>) -> Result<StatusCode, Failure> {
    let notify = shared.clone();
    on_slot(shared, |slot| {
        let controller = slot.take().ok_or_else(tearing_down)?;
        controller.teardown().map_err(Failure::from)
    })
    .await?;
    notify.shutdown.notify_one();
    Ok(StatusCode::NO_CONTENT)
}
