//! `balancer daemon`: start the controller, serve the API until a signal or a teardown.
//!
//! Exiting leaves the data plane attached and forwarding; only `teardown` removes it.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context as _};
use tokio::{net::UnixListener, signal::unix::SignalKind};
use tracing::info;

use crate::{
    controller::{Controller, ControllerConfig},
    server::{router, Shared},
};

/// Serves until SIGINT/SIGTERM or a teardown.
pub async fn run(config: ControllerConfig, socket: &Path) -> anyhow::Result<()> {
    let listener = bind(socket).await?;
    let started = tokio::task::spawn_blocking(move || Controller::start(config))
        .await
        .context("controller start panicked")?;
    let controller = match started {
        Ok(controller) => controller,
        Err(e) => {
            std::fs::remove_file(socket).ok();
            return Err(e.into());
        }
    };
    info!(
        reattached = controller.reattached(),
        services = controller.state().services.len(),
        "data plane ready"
    );
    let shared = Shared::new(controller);
    let ticker = tokio::spawn(tick_forever(shared.clone()));
    let mut term = tokio::signal::unix::signal(SignalKind::terminate())?;
    let stop = {
        let shared = shared.clone();
        async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => info!("interrupted; the data plane stays up"),
                _ = term.recv() => info!("terminated; the data plane stays up"),
                _ = shared.shutdown.notified() => info!("torn down"),
            }
        }
    };
    let served = axum::serve(listener, router(shared))
        .with_graceful_shutdown(stop)
        .await;
    ticker.abort();
    std::fs::remove_file(socket).ok();
    served.context("serving the control API")
}

/// How often due canary steps and health checks are looked for.
const TICK: Duration = Duration::from_millis(100);

/// Advances timed operations until the daemon stops: canary steps, and health checks, each
/// run concurrently off the controller lock and reported back when done.
async fn tick_forever(shared: std::sync::Arc<Shared>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let jobs = match crate::server::tick(shared.clone()).await {
            Ok(jobs) => jobs,
            Err(failure) => {
                tracing::warn!("timed step failed: {}", failure.message());
                continue;
            }
        };
        for job in jobs {
            let shared = shared.clone();
            tokio::spawn(async move {
                let result = crate::health::probe(&job.check, job.target).await;
                if let Err(failure) = crate::server::report_probe(shared, job, result).await {
                    tracing::warn!("health result not applied: {}", failure.message());
                }
            });
        }
    }
}

/// Binds the control socket (mode 0600), replacing a stale socket file but refusing to
/// steal one that a live daemon answers on.
async fn bind(socket: &Path) -> anyhow::Result<UnixListener> {
    if socket.exists() {
        let live = tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::UnixStream::connect(socket),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        if live {
            bail!(
                "another daemon already serves {}; stop it first",
                socket.display()
            );
        }
        std::fs::remove_file(socket)
            .with_context(|| format!("remove stale socket {}", socket.display()))?;
    }
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("create socket directory {}", dir.display()))?;
    }
    let listener =
        UnixListener::bind(socket).with_context(|| format!("bind {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", socket.display()))?;
    Ok(listener)
}

/// The state file inside a state directory.
pub fn state_file(state_dir: &Path) -> PathBuf {
    state_dir.join("state.json")
}
