//! The executor's side of a fleet (`daemon --store`): changes are prepared under the
//! controller's lock, stored with compare-and-swap off it, then adopted; the store is
//! followed (read, then watched; read again after each break) and every newer revision
//! adopted; the daemon's own changes (timed steps) are stored after they are made; this
//! host's record is renewed every second. No call to the store is made under the lock.

use std::{sync::Arc, time::Duration};

use tokio::sync::mpsc;

use super::{Executor, LOCATE_ROUNDS};
use crate::{
    api::{FleetHost, FleetStatus},
    controller::Controller,
    error::{one_line, Error, Fault},
    fleet::{
        commit::{commit, decode},
        host,
        member::Member,
        remote::Stored,
        FleetError,
    },
    history::Who,
    operation::Change,
    state::State,
};

/// How long the follower waits before reading the store again after a break.
const RETRY: Duration = Duration::from_millis(500);

/// How often the daemon's own changes are looked for, to be stored.
const STAGED_EVERY: Duration = Duration::from_millis(100);

/// How often this host's record is renewed.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);

impl Executor {
    /// An operator's change in a fleet: applied to a copy under the lock (refused there as
    /// alone, and its new backends resolved off the lock first), stored with
    /// compare-and-swap on the revision the copy was made on, then adopted here (the
    /// other hosts adopt it from their watch). Refused without changing anything anywhere
    /// when the state moved on meanwhile or the store does not answer.
    pub(super) async fn change_shared(
        self: &Arc<Self>,
        member: &Arc<Member>,
        change: Change,
        who: Who,
    ) -> Result<(), Error> {
        for _ in 0..LOCATE_ROUNDS {
            let attempt = change.clone();
            let prepared = {
                let member = member.clone();
                move |c: &mut Controller| {
                    let next = c.prepare(|s, now| attempt.apply(s, now))?;
                    Ok((member.revision(), next))
                }
            };
            let (base, next) = match self.with_controller(prepared).await {
                Err(Error::Unlocated(addrs)) => {
                    self.resolve(addrs).await?;
                    continue;
                }
                prepared => prepared?,
            };
            let revision = commit(&*member.remote, base, &next).await?;
            return self
                .adopt(member, revision, next, who, Some(change.clone()))
                .await;
        }
        Err(Fault::Internal(
            "new backends were resolved but left the neighbour table again at once".into(),
        )
        .into())
    }

    /// Makes stored `state` at `revision` the controller's, unless it already has that
    /// revision or a later one; new backends are resolved off the lock first.
    async fn adopt(
        self: &Arc<Self>,
        member: &Arc<Member>,
        revision: i64,
        state: State,
        who: Who,
        change: Option<Change>,
    ) -> Result<(), Error> {
        for _ in 0..LOCATE_ROUNDS {
            let adopt = {
                let (member, state) = (member.clone(), state.clone());
                move |c: &mut Controller| {
                    if member.revision() >= revision {
                        return Ok(());
                    }
                    c.adopt(state)?;
                    member.settle(revision);
                    Ok(())
                }
            };
            match self.with_controller_by(who, change.clone(), adopt).await {
                Err(Error::Unlocated(addrs)) => self.resolve(addrs).await?,
                done => return done,
            }
        }
        Err(Fault::Internal(format!(
            "the backends of revision {revision} left the neighbour table again at once"
        ))
        .into())
    }

    /// Follows the fleet's store until the daemon stops: reads it and adopts what it
    /// holds, then watches it and adopts each newer revision; after a break (etcd away),
    /// reads again every [`RETRY`] until it answers, so a daemon catches up with the
    /// latest revision. Meanwhile the data plane keeps forwarding with the last state.
    pub async fn follow_store(self: Arc<Self>) {
        let Some(member) = self.member.clone() else {
            return;
        };
        let mut away = false;
        loop {
            match member.remote.read().await {
                Ok(stored) => {
                    if away {
                        tracing::info!(
                            revision = stored.revision,
                            "the fleet's store answers again"
                        );
                        away = false;
                    }
                    self.seed(&member, &stored).await;
                    self.follow(&member, stored).await;
                }
                Err(e) => {
                    if !away {
                        tracing::warn!("{}; forwarding with the last state", one_line(&e));
                        away = true;
                    }
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            }
            let (to, mut from) = mpsc::channel(16);
            let remote = member.remote.clone();
            let after = member.revision();
            let mut watching = tokio::spawn(async move { remote.watch(after, to).await });
            loop {
                tokio::select! {
                    stored = from.recv() => match stored {
                        Some(stored) => self.follow(&member, stored).await,
                        None => break,
                    },
                    ended = &mut watching => {
                        if let Ok(Err(e)) = ended {
                            tracing::warn!("watching the fleet's store broke: {}", one_line(&e));
                            away = true;
                        }
                        break;
                    }
                }
            }
            watching.abort();
            tokio::time::sleep(RETRY).await;
        }
    }

    /// At the first revision: when nothing is stored yet and this daemon's state (from its
    /// state file) has services, stages it, so that a single host becomes a fleet with
    /// what it serves.
    async fn seed(self: &Arc<Self>, member: &Arc<Member>, stored: &Stored) {
        if stored.revision != 0 || member.revision() != 0 {
            return;
        }
        let member = member.clone();
        let seed = move |c: &mut Controller| {
            if !c.state().services.is_empty() && member.revision() == 0 {
                member.stage(c.state().clone());
            }
            Ok(())
        };
        if let Err(e) = self.with_controller(seed).await {
            tracing::warn!("seeding the fleet's store failed: {}", one_line(&e));
        }
    }

    /// Adopts `stored` when it is newer than the controller's state; one that does not load
    /// or cannot be published here is logged, and the data plane keeps the last state.
    async fn follow(self: &Arc<Self>, member: &Arc<Member>, stored: Stored) {
        if stored.revision <= member.revision() || stored.document.is_none() {
            return;
        }
        let revision = stored.revision;
        let adopted = match decode(&stored) {
            Ok(state) => self.adopt(member, revision, state, Who::Daemon, None).await,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = adopted {
            tracing::warn!(
                revision,
                "not following the fleet's store: {}; the data plane keeps the last state",
                one_line(&e)
            );
        }
    }

    /// Stores the states the daemon made itself (timed steps, and the seed) until it
    /// stops: each with compare-and-swap on the revision it was made on. One that loses
    /// to another host's change is dropped: the watch brings the other one, which this
    /// host adopts (so two hosts driving one timed step store it once). One the store does
    /// not take now is tried again.
    pub async fn store_staged(self: Arc<Self>) {
        let Some(member) = self.member.clone() else {
            return;
        };
        let mut interval = tokio::time::interval(STAGED_EVERY);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let taken = {
                let member = member.clone();
                move |_: &mut Controller| Ok(member.take_staged())
            };
            let Ok(Some((base, state))) = self.with_controller(taken).await else {
                continue;
            };
            match commit(&*member.remote, base, &state).await {
                Ok(revision) => {
                    let member_now = member.clone();
                    let settle = move |_: &mut Controller| {
                        if member_now.revision() == base {
                            member_now.settle_stored(revision);
                        }
                        Ok(())
                    };
                    let _ = self.with_controller(settle).await;
                }
                Err(FleetError::Moved { revision }) => tracing::info!(
                    revision,
                    "a change of this daemon's own lost to a concurrent one; following the store"
                ),
                Err(e) => {
                    let member_now = member.clone();
                    let put_back = move |_: &mut Controller| {
                        member_now.restage(base, state);
                        Ok(())
                    };
                    let _ = self.with_controller(put_back).await;
                    tracing::debug!("storing the daemon's own change waits: {}", one_line(&e));
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// Renews this host's record (its revision and tables' digests) every second until
    /// the daemon stops.
    pub async fn announce(self: Arc<Self>) {
        let Some(member) = self.member.clone() else {
            return;
        };
        let mut interval = tokio::time::interval(ANNOUNCE_EVERY);
        loop {
            interval.tick().await;
            let record = {
                let member = member.clone();
                move |c: &mut Controller| {
                    Ok(FleetHost {
                        host: member.host.clone(),
                        revision: member.revision(),
                        digests: c.digests().clone(),
                        seen_ms: c.now_ms(),
                    })
                }
            };
            let Ok(record) = self.with_controller(record).await else {
                continue;
            };
            if let Err(e) = member
                .remote
                .announce(&member.host, host::encode(&record))
                .await
            {
                tracing::debug!("renewing this host's record waits: {}", one_line(&e));
            }
        }
    }

    /// `fleet status`: every live host's record, read off the lock.
    pub(super) async fn fleet_status(
        self: &Arc<Self>,
        member: &Arc<Member>,
    ) -> Result<FleetStatus, Error> {
        let records = member.remote.hosts().await?;
        let hosts = host::decode(&records)?;
        let now_ms = self.with_controller(|c| Ok(c.now_ms())).await?;
        Ok(FleetStatus {
            store: member.store.clone(),
            revision: member.revision(),
            leader: None,
            now_ms,
            hosts,
        })
    }
}
