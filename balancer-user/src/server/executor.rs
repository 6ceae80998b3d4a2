//! The executor: owns the controller and its lock, runs each operation and each timer step
//! on it one at a time, off the async runtime (map writes are system calls), and runs the
//! health checks without the lock.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::Notify;

use crate::{
    api::Status,
    config::Config,
    controller::Controller,
    error::{one_line, Error, Fault},
    health::{self, CheckJob},
    operation::Operation,
};

/// How often due canary steps, rollout phases and health checks are looked for.
const TICK: Duration = Duration::from_millis(100);

/// What an operation answers.
#[derive(Debug)]
pub enum Reply {
    /// Done, nothing to say.
    Done,
    /// `status`.
    Status(Status),
    /// `export`: TOML.
    Export(String),
}

/// The controller, behind its lock, and the daemon's stop signal.
pub struct Executor {
    controller: Mutex<Option<Controller>>,
    shutdown: Notify,
}

impl Executor {
    /// Wraps a started controller.
    pub fn new(controller: Controller) -> Arc<Self> {
        Arc::new(Self {
            controller: Mutex::new(Some(controller)),
            shutdown: Notify::new(),
        })
    }

    /// Resolves once a teardown has stopped the daemon.
    pub async fn torn_down(&self) {
        self.shutdown.notified().await
    }

    /// Runs one operation.
    pub async fn run(self: &Arc<Self>, operation: Operation) -> Result<Reply, Error> {
        match operation {
            Operation::Teardown => {
                self.on_slot(|slot| slot.take().ok_or(Error::TearingDown)?.teardown())
                    .await?;
                self.shutdown.notify_one();
                Ok(Reply::Done)
            }
            Operation::Status { service } => {
                let status = move |c: &mut Controller| c.status(service.as_deref());
                Ok(Reply::Status(self.with_controller(status).await?))
            }
            Operation::Export => {
                let export = |c: &mut Controller| Ok(Config::from_state(c.state())?.to_toml());
                Ok(Reply::Export(self.with_controller(export).await?))
            }
            Operation::Change(change) => {
                let apply = move |c: &mut Controller| c.change(|s, now| change.apply(s, now));
                self.with_controller(apply).await?;
                Ok(Reply::Done)
            }
        }
    }

    /// Steps the timed operations every [`TICK`] until the daemon stops, and runs the
    /// health checks that are due concurrently, reporting each result when it is in.
    pub async fn run_timers(self: Arc<Self>) {
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let jobs = match self.with_controller(|c| c.tick()).await {
                Ok(jobs) => jobs,
                Err(Error::TearingDown) => return,
                Err(e) => {
                    tracing::warn!("timed step failed: {}", one_line(&e));
                    continue;
                }
            };
            for job in jobs {
                let executor = self.clone();
                tokio::spawn(async move { executor.check(job).await });
            }
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

    /// Runs `f` on the controller, unless a teardown took it.
    async fn with_controller<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Controller) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        self.on_slot(|slot| f(slot.as_mut().ok_or(Error::TearingDown)?))
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
