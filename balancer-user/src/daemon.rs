//! `balancer daemon`: claim the interface, pins and state directory, start the controller,
//! serve the API until a signal or a teardown.
//!
//! Exiting leaves the data plane attached and forwarding; only `teardown` removes it.
//!
//! With `--announce-table` it announces the VIPs over BGP ([`crate::announce`]) once the
//! data plane is attached and the state reconciled; exiting leaves them announced.
//!
//! Under systemd (`Type=notify`) it sends `READY=1` once the data plane is attached and the
//! control API is served, and `STOPPING=1` when it begins to stop.

use std::{
    future::IntoFuture as _,
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{bail, Context as _};
use aya::programs::XdpMode;
use sd_notify::NotifyState;
use tokio::{net::UnixListener, signal::unix::SignalKind};
use tracing::info;

use crate::{
    announce::Announcer,
    clock::{Clock as _, SystemClock},
    controller::{
        ports::{KernelNeighbors, Plane},
        Controller, Ports, Settings,
    },
    dataplane::{self, bpffs::Layout, link, pinned, AttachOptions, Attachment, DataPlane},
    error::Error,
    fleet::{cache::CacheStore, etcd::Etcd, member::Member, url::StoreUrl},
    history::{History, Note, Who},
    lifecycle::{
        claim::{self, Claim},
        settings::{self, Pinned, Requested},
    },
    server::{
        executor::Executor,
        listener::{Bounded, Peer, IDLE, MAX_CONNECTIONS},
        routes::router,
        scrape,
    },
    state::FileStore,
    sync::Exchange,
};

/// What the daemon runs with.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// The interface to attach to.
    pub iface: String,
    /// Where its data plane is pinned.
    pub pins: Layout,
    /// The state directory.
    pub state_dir: PathBuf,
    /// Take over a data plane that serves VIPs with no services when the state file is
    /// missing.
    pub empty_state: bool,
    /// Where to serve the Prometheus metrics, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Where the flow-state sync with the fleet's other hosts listens (`--sync-listen`);
    /// none: no sync.
    pub sync_listen: Option<SocketAddr>,
    /// The fleet whose store keeps the desired state (`--store`); none: the state file.
    pub fleet: Option<Fleet>,
    /// The kernel routing table of the VIPs' announcements (`--announce-table`); none:
    /// nothing announced.
    pub announce_table: Option<u32>,
    /// `--conntrack-size` and `--xdp-mode` as given (they only apply to a new data plane).
    pub requested: Requested,
    /// Controller settings.
    pub settings: Settings,
}

/// A daemon's fleet: `--store` and `--host-name`.
#[derive(Clone, Debug)]
pub struct Fleet {
    /// The store.
    pub store: StoreUrl,
    /// This host's name in it.
    pub host: String,
    /// The time to live of the leader's lease (`--leader-ttl`).
    pub leader_ttl: std::time::Duration,
}

/// Attaches the data plane and starts the controller on the kernel's ports; in a fleet,
/// its store is the state file with `member`'s fleet behind it.
fn start(
    config: DaemonConfig,
    ifindex: u32,
    member: Option<Arc<Member>>,
) -> Result<Controller, Error> {
    let pinned_conntrack = pinned::conntrack_capacity(&config.pins)?;
    let attach = AttachOptions {
        iface: config.iface.clone(),
        ifindex,
        mode: config.requested.xdp_mode.unwrap_or(XdpMode::Driver),
        bpffs: config.pins.clone(),
        conntrack_entries: config
            .requested
            .conntrack_size
            .unwrap_or(balancer_common::DEFAULT_CONNTRACK_ENTRIES),
        sync: config.sync_listen.is_some(),
    };
    let plane = match DataPlane::attach(&attach) {
        Ok(plane) => plane,
        Err(e) => {
            if pinned_conntrack.is_none() {
                // Nothing was pinned before this start: leave nothing pinned either.
                let _ = dataplane::unpin(&config.pins);
            }
            return Err(e.into());
        }
    };
    let pinned_mode = match plane.attachment() {
        Attachment::Replaced => link::attached_mode(&config.iface).unwrap_or_else(|e| {
            tracing::debug!("cannot tell the pinned link's XDP mode: {e}");
            None
        }),
        Attachment::New | Attachment::Renewed(_) => None,
    };
    let pinned = Pinned {
        conntrack_size: pinned_conntrack,
        xdp_mode: pinned_mode,
    };
    for warning in settings::ignored(config.requested, pinned) {
        tracing::warn!("{warning}");
    }
    let ports = Ports {
        plane: Box::new(plane) as Box<dyn Plane>,
        neighbors: Arc::new(KernelNeighbors),
        store: match member {
            Some(member) => Box::new(CacheStore::new(
                FileStore::in_dir(&config.state_dir),
                member,
            )),
            None => Box::new(FileStore::in_dir(&config.state_dir)),
        },
        clock: Arc::new(SystemClock),
    };
    Controller::start(ports, config.settings)
}

/// Claims what the daemon needs (see [`claim`]); nothing is touched on a refusal.
fn take_claim(config: &DaemonConfig) -> Result<Claim, Error> {
    Ok(claim::claim(&claim::Request {
        iface: &config.iface,
        pins: &config.pins,
        state_dir: &config.state_dir,
        empty_state: config.empty_state,
    })?)
}

/// Serves until SIGINT/SIGTERM or a teardown.
pub async fn run(config: DaemonConfig, socket: &Path) -> anyhow::Result<()> {
    let claim = take_claim(&config)?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listen for metrics on {addr}"))?,
        ),
        None => None,
    };
    let sync_socket = match config.sync_listen {
        Some(addr) => Some(
            tokio::net::UdpSocket::bind(addr)
                .await
                .with_context(|| format!("listen for flow records on {addr}"))?,
        ),
        None => None,
    };
    let pins = config.pins.clone();
    let dir = config.state_dir.clone();
    let history = tokio::task::spawn_blocking(move || History::open(&dir))
        .await
        .context("opening the event history panicked")?
        .with_context(|| format!("open the event history in {}", config.state_dir.display()))?;
    let history = Arc::new(history);
    let listener = bind(socket).await?;
    let ifindex = claim.ifindex;
    let iface = config.iface.clone();
    let member = match &config.fleet {
        Some(fleet) => {
            let remote = Etcd::connect(&fleet.store).await.map_err(Error::from)?;
            let host = fleet.host.clone();
            info!(store = %fleet.store, host, "the desired state is the fleet's");
            Some(Arc::new(
                Member::new(Arc::new(remote), host, fleet.store.to_string())
                    .syncing(config.sync_listen)
                    .with_leader_ttl(fleet.leader_ttl),
            ))
        }
        None => None,
    };
    // The mark of `fleet leave` is read before anything is attached.
    let announcer = match config.announce_table {
        Some(table) => Some(Arc::new(
            Announcer::open(table, &config.state_dir).map_err(Error::from)?,
        )),
        None => None,
    };
    let for_start = member.clone();
    let started = tokio::task::spawn_blocking(move || start(config, ifindex, for_start))
        .await
        .context("controller start panicked")?;
    let controller = match started {
        Ok(controller) => controller,
        Err(e) => {
            std::fs::remove_file(socket).ok();
            history.close();
            return Err(e.into());
        }
    };
    info!(
        reattached = controller.reattached(),
        services = controller.state().services.len(),
        "data plane ready"
    );
    let started = match controller.reattached() {
        true => "daemon started: the running data plane taken over",
        false => "daemon started: data plane attached",
    };
    note(&history, started);
    // Held until the daemon exits (the kernel also drops the locks on `kill -9`).
    let _claim = claim;
    let in_fleet = member.is_some();
    // In a fleet with --sync-listen: the flow-state sync with the other hosts.
    let sync = match (sync_socket, &member) {
        (Some(socket), Some(member)) => {
            let (exchange, tasks) = Exchange::start(socket, &pins, member.clone())?;
            info!(listen = %exchange.listen, "flow state synced with the fleet's hosts");
            Some((exchange, tasks))
        }
        _ => None,
    };
    let executor = Executor::in_fleet(controller, history.clone(), member);
    executor.check_forwarding().await;
    let ticker = tokio::spawn(executor.clone().run_timers());
    // The data plane is attached and the state reconciled: the VIPs may be announced.
    let announcing = announcer.map(|announcer| {
        executor.announce_with(announcer);
        tokio::spawn(executor.clone().announce_vips())
    });
    // In a fleet: follow the store, store the daemon's own changes, renew the host record,
    // campaign for the leadership, keep the fleet's health view.
    let fleet_tasks = match in_fleet {
        true => vec![
            tokio::spawn(executor.clone().follow_store()),
            tokio::spawn(executor.clone().store_staged()),
            tokio::spawn(executor.clone().announce()),
            tokio::spawn(executor.clone().campaign()),
            tokio::spawn(executor.clone().rule_health()),
        ],
        false => Vec::new(),
    };
    let sync_tasks = match sync {
        Some((exchange, tasks)) => {
            executor.show_sync(exchange);
            tasks
        }
        None => Vec::new(),
    };
    let scraper = match metrics_listener {
        Some(listener) => {
            executor.serve_metrics().await;
            info!(addr = %listener.local_addr()?, "serving metrics");
            let app = scrape::router(executor.clone());
            Some(tokio::spawn(
                async move { axum::serve(listener, app).await },
            ))
        }
        None => None,
    };
    let follower = tokio::spawn(executor.clone().follow_neighbours());
    let mut term = tokio::signal::unix::signal(SignalKind::terminate())?;
    let stop = {
        let executor = executor.clone();
        let history = history.clone();
        async move {
            let signalled = tokio::select! {
                _ = tokio::signal::ctrl_c() => Some("interrupted"),
                _ = term.recv() => Some("terminated"),
                _ = executor.torn_down() => None,
            };
            let why = match signalled {
                Some(how) => {
                    info!("{how}; the data plane stays up");
                    note(&history, &format!("daemon {how}: the data plane stays up"));
                    format!("{how}; the data plane stays up")
                }
                None => {
                    info!("torn down");
                    "torn down".to_string()
                }
            };
            notify(&[NotifyState::Stopping, NotifyState::Status(&why)]);
        }
    };
    let listener = Bounded::new(listener, MAX_CONNECTIONS, IDLE);
    let resigning = executor.clone();
    let app = router(executor).into_make_service_with_connect_info::<Peer>();
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .into_future(),
    );
    // The data plane is attached and the control API served (requests made before now
    // waited in the socket's backlog).
    let serving = format!("data plane attached to {iface}; control API served");
    notify(&[NotifyState::Ready, NotifyState::Status(&serving)]);
    let served = server.await;
    ticker.abort();
    follower.abort();
    if let Some(announcing) = announcing {
        announcing.abort();
    }
    fleet_tasks.iter().for_each(|task| task.abort());
    sync_tasks.iter().for_each(|task| task.abort());
    // A leader that stops hands the leadership over at once.
    resigning.resign().await;
    if let Some(scraper) = scraper {
        scraper.abort();
    }
    std::fs::remove_file(socket).ok();
    // Every event handed over is on disk before the daemon exits.
    let closing = history.clone();
    if tokio::task::spawn_blocking(move || closing.close())
        .await
        .is_err()
    {
        tracing::warn!("closing the event history panicked");
    }
    served
        .context("the control API's task failed")?
        .context("serving the control API")
}

/// Tells the service manager (systemd with `Type=notify`, which sets `NOTIFY_SOCKET`) what
/// the daemon is doing; nothing without one. A failure is logged: it must not stop the
/// daemon.
fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify the service manager: {e}");
    }
}

/// Records the daemon's own event `what`, about no service.
fn note(history: &History, what: &str) {
    let note = Note::plain(SystemClock.now_ms(), None, what.to_string());
    history.record(vec![note], Who::Daemon);
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
