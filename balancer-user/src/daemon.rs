//! `balancer daemon`: start the controller, serve the API until a signal or a teardown.
//!
//! Exiting leaves the data plane attached and forwarding; only `teardown` removes it.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{bail, Context as _};
use tokio::{net::UnixListener, signal::unix::SignalKind};
use tracing::info;

use crate::{
    clock::SystemClock,
    controller::{
        ports::{KernelNeighbors, Plane},
        Controller, Ports, Settings,
    },
    dataplane::{AttachOptions, DataPlane},
    server::{executor::Executor, routes::router},
    state::FileStore,
};

/// What the daemon runs with.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// Data-plane attachment.
    pub attach: AttachOptions,
    /// The state file.
    pub state_file: PathBuf,
    /// Controller settings.
    pub settings: Settings,
}

/// Attaches the data plane and starts the controller on the kernel's ports.
fn start(config: DaemonConfig) -> Result<Controller, crate::error::Error> {
    let plane: Box<dyn Plane> = Box::new(DataPlane::attach(&config.attach)?);
    let ports = Ports {
        plane,
        neighbors: Arc::new(KernelNeighbors),
        store: Box::new(FileStore::new(config.state_file)),
        clock: Arc::new(SystemClock),
    };
    Controller::start(ports, config.settings)
}

/// Serves until SIGINT/SIGTERM or a teardown.
pub async fn run(config: DaemonConfig, socket: &Path) -> anyhow::Result<()> {
    let listener = bind(socket).await?;
    let started = tokio::task::spawn_blocking(move || start(config))
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
    let executor = Executor::new(controller);
    let ticker = tokio::spawn(executor.clone().run_timers());
    let follower = tokio::spawn(executor.clone().follow_neighbours());
    let mut term = tokio::signal::unix::signal(SignalKind::terminate())?;
    let stop = {
        let executor = executor.clone();
        async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => info!("interrupted; the data plane stays up"),
                _ = term.recv() => info!("terminated; the data plane stays up"),
                _ = executor.torn_down() => info!("torn down"),
            }
        }
    };
    let served = axum::serve(listener, router(executor))
        .with_graceful_shutdown(stop)
        .await;
    ticker.abort();
    follower.abort();
    std::fs::remove_file(socket).ok();
    served.context("serving the control API")
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
