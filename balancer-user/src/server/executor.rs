//! The executor: owns the controller and its lock, runs each operation and each timer step
//! on it one at a time, off the async runtime (map writes are system calls), and does
//! everything that waits without the lock: health checks, resolving new backends (a probe
//! and up to two seconds of waiting), the external gates of canary analyses (Prometheus
//! queries, webhooks), and following the kernel's neighbour changes ([`follow`]).
//!
//! Under the lock nothing sleeps or waits on the network: map writes, the state file, and
//! lookups in the kernel's tables as they stand. What the controller did in a call is
//! recorded in the history before the lock is let go (in memory and handed to its writer:
//! no disk wait), so events keep the order they happened in: as the operator's, with the
//! uid of the control socket's peer, for a change the operator asked for; as the daemon's
//! for everything else (timed steps, health results).

mod announce;
mod fleet;
mod follow;

use std::{
    collections::HashSet,
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::Duration,
};

use tokio::sync::Notify;

use crate::{
    announce::Announcer,
    api::{FleetStatus, Status},
    config::Config,
    controller::{
        ports::{Flows, Neighbors},
        Controller,
    },
    dataplane::{
        fullnat::{Ending, Swept},
        unanswered::{Unanswered, HANDSHAKE_WINDOW},
        Census, FlowCounts,
    },
    error::{one_line, Error, Fault},
    fleet::{member::Member, FleetError},
    gate,
    health::{self, CheckJob},
    history::{narrate, Event, History, Note, Who},
    metrics::{self, Snapshot},
    operation::{Change, Operation},
    release::analysis::Question,
    sync::Exchange,
};

/// How often due canary steps, rollout phases and health checks are looked for.
const TICK: Duration = Duration::from_millis(100);

/// Ticks between two passes over the pending table (see [`Unanswered`]): one a second.
const UNANSWERED_EVERY: u32 = 10;

/// Ticks between two walks of connection tracking for the metrics, and between two sweeps
/// of full NAT's translations: one every 5 s.
const CENSUS_EVERY: u32 = 50;

/// How often a change is tried again after resolving the backends it adds (each round
/// resolves what the previous one found missing; a change that still misses one after
/// this many rounds — its neighbour entry vanished again at once — fails).
const LOCATE_ROUNDS: usize = 3;

/// What an operation answers.
#[derive(Debug)]
pub enum Reply {
    /// Done, nothing to say.
    Done,
    /// `status`.
    Status(Status),
    /// `export`: TOML.
    Export(String),
    /// Events of the history.
    Events(Vec<Event>),
    /// `fleet status`.
    Fleet(FleetStatus),
}

/// The controller, behind its lock, and the daemon's stop signal.
pub struct Executor {
    controller: Mutex<Option<Controller>>,
    neighbors: Arc<dyn Neighbors>,
    /// Counts tracked flows without the lock.
    flows: Arc<dyn Flows>,
    /// How recent a flow's last packet must be for it to count as active.
    flow_idle: Duration,
    /// Unanswered flows counted so far (a lock of its own, held for no walk).
    unanswered: Mutex<Unanswered>,
    /// The latest walk of connection tracking for the metrics, once they are served.
    census: Mutex<Option<Census>>,
    /// Full NAT's translations: active at the latest sweep, freed since the start.
    swept: Mutex<Swept>,
    /// Whether the metrics are served (then connection tracking is walked every 5 s).
    metrics: AtomicBool,
    /// Whether the host's IP forwarding was checked (once: at start or at the first
    /// tunnelled service).
    forwarding_checked: AtomicBool,
    /// Backends a timed step waits for, being resolved off the lock.
    resolving: Mutex<HashSet<IpAddr>>,
    /// Where what the controller does is recorded.
    history: Arc<History>,
    /// The daemon's place in a fleet (`daemon --store`); none when it runs alone.
    member: Option<Arc<Member>>,
    /// The VIPs' announcements (`daemon --announce-table`); unset without it.
    announcer: OnceLock<Arc<Announcer>>,
    /// The flow-state sync with the fleet's other hosts, once started (`--sync-listen`).
    sync: std::sync::OnceLock<Arc<Exchange>>,
    shutdown: Notify,
}

impl Executor {
    /// Wraps a started controller, recording what it does in `history`.
    pub fn new(controller: Controller, history: Arc<History>) -> Arc<Self> {
        Self::in_fleet(controller, history, None)
    }

    /// Wraps a started controller of a daemon that is `member` of a fleet (none: alone):
    /// changes are then stored in the fleet's store before they are published (see
    /// [`Executor::follow_store`]).
    pub fn in_fleet(
        controller: Controller,
        history: Arc<History>,
        member: Option<Arc<Member>>,
    ) -> Arc<Self> {
        let (flows, flow_idle) = controller.flows();
        Arc::new(Self {
            neighbors: controller.neighbors(),
            flows,
            flow_idle,
            unanswered: Mutex::new(Unanswered::default()),
            census: Mutex::new(None),
            swept: Mutex::new(Swept::default()),
            metrics: AtomicBool::new(false),
            forwarding_checked: AtomicBool::new(false),
            controller: Mutex::new(Some(controller)),
            resolving: Mutex::new(HashSet::new()),
            history,
            member,
            announcer: OnceLock::new(),
            sync: std::sync::OnceLock::new(),
            shutdown: Notify::new(),
        })
    }

    /// Shows the counters of the daemon's flow-state sync in `status` and the metrics.
    pub fn show_sync(&self, exchange: Arc<Exchange>) {
        let _ = self.sync.set(exchange);
    }

    /// Resolves once a teardown has stopped the daemon.
    pub async fn torn_down(&self) {
        self.shutdown.notified().await
    }

    /// Runs one operation for `who` (a change is recorded in the history as theirs).
    pub async fn run(self: &Arc<Self>, operation: Operation, who: Who) -> Result<Reply, Error> {
        match operation {
            Operation::Teardown => {
                let history = self.history.clone();
                self.on_slot(move |slot| {
                    let controller = slot.take().ok_or(Error::TearingDown)?;
                    let at_ms = controller.now_ms();
                    controller.teardown()?;
                    let what = "torn down: data plane detached, pins removed".to_string();
                    history.record(vec![Note::plain(at_ms, None, what)], who);
                    Ok(())
                })
                .await?;
                // The data plane is gone: nothing may draw its VIPs' traffic any more.
                let withdrawn = self.withdraw_all().await;
                self.shutdown.notify_one();
                withdrawn.map(|()| Reply::Done)
            }
            Operation::Events(query) => Ok(Reply::Events(self.history.query(&query))),
            Operation::Status { service } => {
                // Connection tracking is walked without the lock: other calls go on.
                let counted = self.count_flows().await?;
                let unanswered = self.unanswered()?;
                let status = move |c: &mut Controller| {
                    c.status_counted(service.as_deref(), &counted, &unanswered)
                };
                let mut status = self.with_controller(status).await?;
                status.translations = self.swept();
                status.announcement = self.announcement();
                status.sync = self.sync.get().map(|sync| Box::new(sync.status()));
                Ok(Reply::Status(status))
            }
            Operation::Export => {
                let export = |c: &mut Controller| Ok(Config::from_state(c.state())?.to_toml());
                Ok(Reply::Export(self.with_controller(export).await?))
            }
            Operation::Leave => self.set_left(true, who).await.map(|()| Reply::Done),
            Operation::Join => self.set_left(false, who).await.map(|()| Reply::Done),
            Operation::Fleet => match &self.member {
                Some(member) => Ok(Reply::Fleet(self.fleet_status(member).await?)),
                None => Err(FleetError::Alone.into()),
            },
            Operation::Change(change) if self.member.is_some() => {
                let member = self.member.clone().expect("a member");
                self.change_shared(&member, change, who).await?;
                self.check_forwarding().await;
                Ok(Reply::Done)
            }
            Operation::Change(change) => {
                for _ in 0..LOCATE_ROUNDS {
                    let attempt = change.clone();
                    let apply = move |c: &mut Controller| c.change(|s, now| attempt.apply(s, now));
                    match self
                        .with_controller_by(who, Some(change.clone()), apply)
                        .await
                    {
                        Err(Error::Unlocated(addrs)) => self.resolve(addrs).await?,
                        done => {
                            self.check_forwarding().await;
                            return done.map(|_| Reply::Done);
                        }
                    }
                }
                Err(Fault::Internal(
                    "new backends were resolved but left the neighbour table again at once".into(),
                )
                .into())
            }
        }
    }

    /// Once a service forwards to routed backends (ipip, gue, nat; at start, or at the first
    /// such change), warns once, in one line, if the host does not forward IP packets: the
    /// data plane's route lookup needs it. The sysctls are read off the lock.
    pub async fn check_forwarding(self: &Arc<Self>) {
        if self.forwarding_checked.load(Ordering::Relaxed) {
            return;
        }
        let routed = |c: &mut Controller| {
            let state = c.state();
            Ok(state.services.values().any(|s| s.forward.mode.routed()))
        };
        if !matches!(self.with_controller(routed).await, Ok(true))
            || self.forwarding_checked.swap(true, Ordering::Relaxed)
        {
            return;
        }
        match tokio::task::spawn_blocking(crate::forwarding::warning).await {
            Ok(Some(warning)) => tracing::warn!("{warning}"),
            Ok(None) => {}
            Err(e) => tracing::warn!("checking the host's IP forwarding panicked: {e}"),
        }
    }

    /// The unanswered flows counted so far.
    fn unanswered(&self) -> Result<FlowCounts, Error> {
        let unanswered = self
            .unanswered
            .lock()
            .map_err(|_| Fault::Internal("the unanswered-flow lock is poisoned".into()))?;
        Ok(unanswered.totals().clone())
    }

    /// One pass over the pending table on a blocking thread, without the controller's
    /// lock: counts the flows whose handshake window passed.
    async fn count_unanswered(self: &Arc<Self>) {
        let executor = self.clone();
        let pass = tokio::task::spawn_blocking(move || {
            let pending = executor.flows.pending(HANDSHAKE_WINDOW);
            if let Ok(mut unanswered) = executor.unanswered.lock() {
                unanswered.pass(&pending);
            }
        });
        if let Err(e) = pass.await {
            tracing::warn!("counting unanswered flows panicked: {e}");
        }
    }

    /// From now on, walks connection tracking every 5 s for [`Executor::metrics`].
    pub async fn serve_metrics(self: &Arc<Self>) {
        self.metrics.store(true, Ordering::Relaxed);
        self.take_census().await;
    }

    /// One walk of connection tracking on a blocking thread, without the controller's
    /// lock, kept for the metrics.
    async fn take_census(self: &Arc<Self>) {
        let (flows, idle) = (self.flows.clone(), self.flow_idle);
        match tokio::task::spawn_blocking(move || flows.census(idle)).await {
            Ok(Ok(census)) => {
                if let Ok(mut latest) = self.census.lock() {
                    *latest = Some(census);
                }
            }
            Ok(Err(e)) => tracing::warn!("walking connection tracking failed: {}", one_line(&e)),
            Err(e) => tracing::warn!("walking connection tracking panicked: {e}"),
        }
    }

    /// One sweep of full NAT's translations on a blocking thread, without the controller's
    /// lock: the pool ports of ended flows are freed.
    async fn sweep(self: &Arc<Self>) {
        let flows = self.flows.clone();
        let ending = Ending {
            udp_idle: self.flow_idle,
        };
        match tokio::task::spawn_blocking(move || flows.sweep(ending)).await {
            Ok(Ok(swept)) => {
                let mut total = self.swept.lock().unwrap_or_else(|e| e.into_inner());
                *total = total.then(swept);
            }
            Ok(Err(e)) => tracing::warn!("sweeping full-NAT translations failed: {}", one_line(&e)),
            Err(e) => tracing::warn!("sweeping full-NAT translations panicked: {e}"),
        }
    }

    /// Full NAT's translations: active at the latest sweep, freed since the daemon started.
    pub fn swept(&self) -> Swept {
        *self.swept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The metrics in the Prometheus text format: the status with the latest walk's active
    /// flows (no walk here) and the unanswered flows counted so far.
    pub async fn metrics(self: &Arc<Self>) -> Result<String, Error> {
        let census = self
            .census
            .lock()
            .map_err(|_| Fault::Internal("the census lock is poisoned".into()))?
            .clone();
        let unanswered = self.unanswered()?;
        let active = census
            .as_ref()
            .map(|c| c.active.clone())
            .unwrap_or_default();
        let mut status = self
            .with_controller(move |c| c.status_counted(None, &active, &unanswered))
            .await?;
        status.translations = self.swept();
        status.sync = self.sync.get().map(|sync| Box::new(sync.status()));
        metrics::render(&Snapshot { status, census })
            .map_err(|e| Fault::Internal(format!("rendering the metrics: {e}")).into())
    }

    /// Counts the active tracked flows on a blocking thread, without the lock.
    async fn count_flows(&self) -> Result<FlowCounts, Error> {
        let (flows, idle) = (self.flows.clone(), self.flow_idle);
        let counted = tokio::task::spawn_blocking(move || flows.count(idle))
            .await
            .map_err(|e| Fault::Internal(format!("counting flows panicked: {e}")))?;
        Ok(counted.map_err(Fault::from)?)
    }

    /// Resolves `addrs` off the lock (a probe each, then a bounded wait). The first that
    /// cannot be located is the error: the change that adds it is refused.
    async fn resolve(&self, addrs: Vec<IpAddr>) -> Result<(), Error> {
        let neighbors = self.neighbors.clone();
        let results = tokio::task::spawn_blocking(move || neighbors.resolve(&addrs))
            .await
            .map_err(|e| Fault::Internal(format!("resolving backends panicked: {e}")))?;
        results
            .into_iter()
            .try_for_each(|result| result.map(drop).map_err(Error::from))
    }

    /// Resolves, in the background, the backends a timed step waits for (each once at a
    /// time); the step is taken on a later tick.
    fn resolve_for_step(self: &Arc<Self>, addrs: Vec<IpAddr>) {
        let mut resolving = self.resolving.lock().unwrap_or_else(|e| e.into_inner());
        let fresh: Vec<IpAddr> = addrs.into_iter().filter(|a| resolving.insert(*a)).collect();
        drop(resolving);
        if fresh.is_empty() {
            return;
        }
        let executor = self.clone();
        tokio::spawn(async move {
            if let Err(e) = executor.resolve(fresh.clone()).await {
                tracing::warn!("a timed step waits for a backend: {}", one_line(&e));
            }
            let mut resolving = executor.resolving.lock().unwrap_or_else(|e| e.into_inner());
            fresh.iter().for_each(|a| {
                resolving.remove(a);
            });
        });
    }

    /// Steps the timed operations every [`TICK`] until the daemon stops, and runs the
    /// health checks that are due concurrently, reporting each result when it is in.
    pub async fn run_timers(self: Arc<Self>) {
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u32;
        loop {
            interval.tick().await;
            ticks = ticks.wrapping_add(1);
            if ticks.is_multiple_of(UNANSWERED_EVERY) {
                self.count_unanswered().await;
            }
            if ticks.is_multiple_of(CENSUS_EVERY) {
                if self.metrics.load(Ordering::Relaxed) {
                    self.take_census().await;
                }
                self.sweep().await;
            }
            // Only the daemon that drives (alone, or the fleet's leader) steps releases.
            let drives = self.drives();
            // Drains and retired backends need the active flows (counted without the
            // lock), analysis windows the unanswered flows.
            let due = move |c: &mut Controller| {
                Ok((drives && c.counting_due(), drives && c.sampling_due()))
            };
            let (flows, unanswered) = match self.with_controller(due).await {
                Ok((counting, sampling)) => (
                    match counting {
                        true => self.count_flows().await.ok(),
                        false => None,
                    },
                    sampling.then(|| self.unanswered().ok()).flatten(),
                ),
                Err(Error::TearingDown) => return,
                Err(_) => (None, None),
            };
            let tick = move |c: &mut Controller| c.tick_counted(flows, unanswered.as_ref(), drives);
            let tick = match self.with_controller(tick).await {
                Ok(tick) => tick,
                Err(Error::TearingDown) => return,
                Err(e) => {
                    tracing::warn!("timed step failed: {}", one_line(&e));
                    continue;
                }
            };
            if !tick.locate.is_empty() {
                self.resolve_for_step(tick.locate);
            }
            for job in tick.checks {
                let executor = self.clone();
                tokio::spawn(async move { executor.check(job).await });
            }
            for question in tick.questions {
                let executor = self.clone();
                tokio::spawn(async move { executor.ask(question).await });
            }
        }
    }

    /// Asks the gates of a canary analysis' question, then hands the answers back.
    async fn ask(self: Arc<Self>, question: Question) {
        let mut results = Vec::with_capacity(question.asks.len());
        for ask in &question.asks {
            results.push(gate::ask(ask).await);
        }
        let Question {
            service, ticket, ..
        } = question;
        if let Err(e) = self
            .with_controller(move |c| c.answer(&service, ticket, results))
            .await
        {
            tracing::warn!("analysis answer not applied: {}", one_line(&e));
        }
    }

    async fn check(self: Arc<Self>, job: CheckJob) {
        let result = health::run(&job.check, job.target).await;
        if let Err(e) = self
            .with_controller(move |c| c.report_check(&job, result))
            .await
        {
            tracing::warn!("health result not applied: {}", one_line(&e));
        }
    }

    /// Runs `f` on the controller, unless a teardown took it; what it did is the daemon's.
    async fn with_controller<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Controller) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        self.with_controller_by(Who::Daemon, None, f).await
    }

    /// Runs `f` on the controller, unless a teardown took it, and records what it did —
    /// succeeding or not, for a timed call may change several things before one fails —
    /// as caused by `who` asking for `change` (none: the daemon's own).
    async fn with_controller_by<T: Send + 'static>(
        self: &Arc<Self>,
        who: Who,
        change: Option<Change>,
        f: impl FnOnce(&mut Controller) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let history = self.history.clone();
        self.on_slot(move |slot| {
            let controller = slot.as_mut().ok_or(Error::TearingDown)?;
            let out = f(controller);
            let happenings = controller.take_happenings();
            if !happenings.is_empty() {
                history.record(narrate(&happenings, change.as_ref()), who);
            }
            out
        })
        .await
    }

    /// Runs `f` on the controller slot on a blocking thread.
    async fn on_slot<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Option<Controller>) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let executor = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut slot = executor
                .controller
                .lock()
                .map_err(|_| Fault::Internal("the controller lock is poisoned".into()))?;
            f(&mut slot)
        })
        .await
        .map_err(|e| Fault::Internal(format!("an operation panicked: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::{
        api::AddBackend,
        basis_points::BasisPoints,
        controller::fakes::{Rig, SILENT, SLOW},
        dataplane::unanswered::PendingFlow,
        error::Refused,
        history::{Query, MAX_PAGE},
        neighbor::NeighborError,
        operation::Change,
        release::canary::CanaryPlan,
        state::tests::{ip, sample},
        state::{CheckKind, HealthCheck},
    };

    /// Who runs the tests' operations.
    const OPERATOR: Who = Who::Uid(0);

    /// An executor of a controller started on `rig`, with a history of its own (`name`).
    fn started(rig: &Rig, name: &str) -> Arc<Executor> {
        Executor::new(rig.start(), crate::history::tests::opened(name))
    }

    fn add(addr: &str) -> Operation {
        Operation::Change(Change::AddBackend {
            service: "web".into(),
            backend: AddBackend {
                addr: ip(addr),
                group: "blue".into(),
                weight: None,
            },
        })
    }

    /// Every event of the executor's history: (what, who).
    async fn events(executor: &Arc<Executor>) -> Vec<(String, Who)> {
        let query = Query {
            service: None,
            after: 0,
            limit: MAX_PAGE,
        };
        let Reply::Events(events) = executor
            .run(Operation::Events(query), OPERATOR)
            .await
            .unwrap()
        else {
            panic!("not events");
        };
        assert!(events.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
        events.into_iter().map(|e| (e.what, e.who)).collect()
    }

    #[tokio::test]
    async fn changes_are_their_operators_events_and_timed_steps_and_health_the_daemons() {
        let rig = Rig::new(sample());
        let executor = started(&rig, "events");
        let operator = Who::Uid(1000);
        let plan = CanaryPlan {
            from: "blue".into(),
            to: "green".into(),
            steps: vec![BasisPoints::new(5000).unwrap(), BasisPoints::ALL],
            interval_ms: 1000,
            auto_rollback: None,
            analysis: None,
        };
        let start = Change::StartCanary {
            service: "web".into(),
            plan,
        };
        executor
            .run(Operation::Change(start), operator)
            .await
            .unwrap();
        // A refused change changed nothing and is no event.
        let flip = Change::Flip {
            service: "web".into(),
            to: "purple".into(),
            drain_timeout_ms: None,
            cut: false,
        };
        let refused = executor.run(Operation::Change(flip), operator).await;
        assert!(refused.is_err());
        rig.clock.advance(1000);
        executor
            .with_controller(|c| c.tick().map(drop))
            .await
            .unwrap();

        let check = HealthCheck {
            kind: CheckKind::Tcp,
            interval_ms: 1000,
            timeout_ms: 500,
            rise: 1,
            fall: 1,
        };
        let checks = Change::SetHealth {
            service: "web".into(),
            health: Some(check.clone()),
        };
        executor
            .run(Operation::Change(checks), operator)
            .await
            .unwrap();
        let job = CheckJob {
            service: "web".into(),
            target: "198.18.0.101:80".parse().unwrap(),
            check,
        };
        // Checks turned on for a serving backend keep it up until one fails.
        executor
            .with_controller(move |c| c.report_check(&job, Err("refused".into())))
            .await
            .unwrap();
        executor.run(Operation::Teardown, operator).await.unwrap();

        let expected = [
            (
                "canary started from blue to green: steps 50.00%,100.00% every 1s",
                operator,
            ),
            ("canary: started; step 1/2: 50.00% to green", operator),
            (
                "canary: interval elapsed; step 2/2: 100.00% to green",
                Who::Daemon,
            ),
            ("canary: completed: every step done", Who::Daemon),
            ("health checks set (tcp)", operator),
            ("backend 198.18.0.101 down: refused", Who::Daemon),
            ("torn down: data plane detached, pins removed", operator),
        ]
        .map(|(what, who)| (what.to_string(), who));
        assert_eq!(events(&executor).await, expected);
    }

    #[tokio::test]
    async fn a_change_resolves_its_new_backends_off_the_lock_or_is_refused() {
        let rig = Rig::new(sample());
        let executor = started(&rig, "resolve");
        let at_start = rig.neighbors.resolved().len();
        executor.run(add(SLOW), OPERATOR).await.unwrap();
        assert_eq!(rig.neighbors.resolved()[at_start..], [ip(SLOW)]);
        let err = executor.run(add(SILENT), OPERATOR).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Refused(Refused::Unreachable(NeighborError::Unresolved(..)))
            ),
            "{err}"
        );
        assert_eq!(
            one_line(&err),
            "backend 198.18.0.250 does not answer ARP/neighbour discovery on eth0"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_walk_of_connection_tracking_for_status_holds_no_lock() {
        let rig = Rig::new(sample());
        let executor = started(&rig, "status-walk");
        let gate = Arc::new(crate::controller::fakes::Gate::default());
        rig.plane.maps().counting_gate = Some(gate.clone());
        let status = tokio::spawn({
            let executor = executor.clone();
            async move {
                executor
                    .run(Operation::Status { service: None }, OPERATOR)
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        // While status is still counting, a change goes through.
        let weight = Operation::Change(Change::SetWeight {
            service: "web".into(),
            addr: ip("198.18.0.101"),
            weight: 7,
        });
        tokio::time::timeout(Duration::from_secs(2), executor.run(weight, OPERATOR))
            .await
            .expect("the change waited behind the count")
            .unwrap();
        assert!(!status.is_finished(), "the count ended early");
        gate.open();
        let Reply::Status(status) = status.await.unwrap().unwrap() else {
            panic!("not a status");
        };
        // The answer was built after the change, under the lock.
        let b101 = &status.services[1].backends[0];
        assert_eq!((b101.addr, b101.weight), (ip("198.18.0.101"), 7));
    }

    #[tokio::test]
    async fn unanswered_flows_are_counted_once_each_and_shown_per_backend() {
        let rig = Rig::new(sample());
        let executor = started(&rig, "unanswered");
        let id = executor
            .with_controller(|c| {
                let (_, b) = c.state().service("web")?.backends().next().expect("one");
                Ok((b.addr, (b.index, b.epoch)))
            })
            .await
            .unwrap();
        let flow = |slot, expired| PendingFlow {
            slot,
            written: 1,
            backend: id.1,
            expired,
        };
        rig.plane.maps().pending = vec![flow(0, true), flow(1, false)];
        executor.count_unanswered().await;
        executor.count_unanswered().await;
        rig.plane.maps().pending = vec![flow(0, true), flow(1, true)];
        executor.count_unanswered().await;
        let Reply::Status(status) = executor
            .run(Operation::Status { service: None }, OPERATOR)
            .await
            .unwrap()
        else {
            panic!("not a status");
        };
        for b in status.services.iter().flat_map(|s| &s.backends) {
            let expected = if b.addr == id.0 { 2 } else { 0 };
            assert_eq!(b.unanswered_flows, expected, "{}", b.addr);
        }
    }

    #[tokio::test]
    async fn metrics_show_the_status_with_the_latest_walk_and_the_unanswered_flows() {
        let rig = Rig::new(sample());
        let executor = started(&rig, "metrics");
        let ids = executor
            .with_controller(|c| {
                let web = c.state().service("web")?;
                Ok(web
                    .backends()
                    .map(|(_, b)| (b.index, b.epoch))
                    .collect::<Vec<_>>())
            })
            .await
            .unwrap();
        let (b101, b103) = (ids[0], ids[2]);
        rig.plane.maps().counters.insert(
            b101.0,
            balancer_common::BackendStats {
                packets: 40,
                bytes: 4000,
                new_flows: 7,
                fin_closes: 5,
                resets: 1,
                syn_retransmits: 2,
            },
        );
        rig.plane.maps().active.insert(b101, 3);
        rig.plane.maps().pending = vec![PendingFlow {
            slot: 9,
            written: 1,
            backend: b103,
            expired: true,
        }];
        executor.count_unanswered().await;
        let before = executor.metrics().await.unwrap();
        assert!(
            !before.contains("balancer_conntrack_entries{"),
            "no walk yet: {before}"
        );
        executor.serve_metrics().await;
        let text = executor.metrics().await.unwrap();
        let backend_lines = [
            ("new_flows_total", "198.18.0.101", "blue", 7),
            ("packets_total", "198.18.0.101", "blue", 40),
            ("fin_closes_total", "198.18.0.101", "blue", 5),
            ("resets_total", "198.18.0.101", "blue", 1),
            ("syn_retransmits_total", "198.18.0.101", "blue", 2),
            ("active_flows", "198.18.0.101", "blue", 3),
            ("handshake_failures_total", "198.18.0.103", "green", 1),
            ("weight", "198.18.0.102", "blue", 50),
        ]
        .map(|(name, backend, group, value)| {
            format!(
                "balancer_backend_{name}{{service=\"web\",group=\"{group}\",\
                 backend=\"{backend}\"}} {value}"
            )
        });
        let other_lines = [
            "balancer_group_share{service=\"web\",group=\"green\"} 0.25",
            "balancer_conntrack_entries{table=\"established\"} 3",
            "balancer_packets_total{verdict=\"passed\"} 0",
            "# TYPE balancer_backend_single_packet_flows_total counter",
        ]
        .map(String::from);
        for line in backend_lines.iter().chain(&other_lines) {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_does_not_wait_behind_a_resolution() {
        let rig = Rig::new(sample());
        rig.neighbors.resolutions_take(Duration::from_millis(600));
        let executor = started(&rig, "resolution");
        let adding = tokio::spawn({
            let executor = executor.clone();
            async move { executor.run(add(SILENT), OPERATOR).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let start = Instant::now();
        let status = Operation::Status { service: None };
        executor.run(status, OPERATOR).await.unwrap();
        let took = start.elapsed();
        assert!(!adding.is_finished(), "the resolution ended early");
        assert!(took < Duration::from_millis(300), "status took {took:?}");
        assert!(adding.await.unwrap().is_err());
    }
}
