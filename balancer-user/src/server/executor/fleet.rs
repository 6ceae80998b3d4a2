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
            let left = self.has_left();
            let record = {
                let member = member.clone();
                move |c: &mut Controller| {
                    Ok(FleetHost {
                        host: member.host.clone(),
                        revision: member.revision(),
                        digests: c.digests().clone(),
                        seen_ms: c.now_ms(),
                        left,
                        sync: member.sync,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        controller::fakes::Rig,
        error::Refused,
        fleet::{commit::encode, remote::fake::FakeRemote, remote::Remote},
        operation::Operation,
        state::tests::{ip, sample},
    };

    /// An executor of a controller started on `rig` (holding `sample()`), member of a
    /// fleet whose store holds `sample()` too, caught up with it.
    async fn member_of(rig: &Rig, remote: &FakeRemote, name: &str) -> (Arc<Executor>, Arc<Member>) {
        let revision = commit(remote, 0, &sample()).await.unwrap();
        let member = Arc::new(Member::new(
            Arc::new(remote.clone()),
            "lb-1".into(),
            "etcd://198.18.0.1:2379/lb".into(),
        ));
        let history = crate::history::tests::opened(name);
        let executor = Executor::in_fleet(rig.start(), history, Some(member.clone()));
        executor.follow(&member, remote.read().await.unwrap()).await;
        assert_eq!(member.revision(), revision);
        (executor, member)
    }

    fn set_weight(weight: u16) -> Operation {
        Operation::Change(Change::SetWeight {
            service: "web".into(),
            addr: ip("198.18.0.101"),
            weight,
        })
    }

    async fn state(executor: &Arc<Executor>) -> State {
        executor
            .with_controller(|c| Ok(c.state().clone()))
            .await
            .unwrap()
    }

    async fn stored(remote: &FakeRemote) -> (i64, State) {
        let stored = remote.read().await.unwrap();
        (stored.revision, decode(&stored).unwrap())
    }

    #[tokio::test]
    async fn a_change_is_stored_then_published_and_one_made_on_an_old_revision_changes_nothing() {
        let rig = Rig::new(sample());
        let remote = FakeRemote::default();
        let (executor, member) = member_of(&rig, &remote, "fleet-cas").await;
        let before = member.revision();
        executor.run(set_weight(7), Who::Uid(0)).await.unwrap();
        let (revision, held) = stored(&remote).await;
        assert!(revision > before);
        assert_eq!(member.revision(), revision);
        assert_eq!(state(&executor).await, held);
        assert!(rig.live_matches(&held));

        // Another host stores a change this one has not seen yet.
        let mut other = held.clone();
        other.set_weight("web", ip("198.18.0.102"), 3).unwrap();
        let theirs = commit(&remote, revision, &other).await.unwrap();
        let err = executor.run(set_weight(9), Who::Uid(0)).await.unwrap_err();
        assert!(matches!(err, Error::Refused(Refused::Fleet(_))), "{err:?}");
        assert_eq!(
            one_line(&err),
            format!("the state changed meanwhile (revision {theirs}): try again")
        );
        assert_eq!(
            state(&executor).await,
            held,
            "the refused change changed the state"
        );
        assert!(rig.live_matches(&held));
        assert_eq!(stored(&remote).await, (theirs, other.clone()));

        // Following the store brings the other host's change; then a change goes through.
        executor.follow(&member, remote.read().await.unwrap()).await;
        assert_eq!(state(&executor).await, other);
        assert!(rig.live_matches(&other));
        executor.run(set_weight(9), Who::Uid(0)).await.unwrap();
        let (_, last) = stored(&remote).await;
        let b102 = last
            .service("web")
            .unwrap()
            .backends()
            .find(|(_, b)| b.addr == ip("198.18.0.102"));
        assert_eq!(
            b102.unwrap().1.weight,
            3,
            "the other host's change was lost"
        );
    }

    #[tokio::test]
    async fn a_daemon_alone_refuses_fleet_status_in_one_line() {
        let rig = Rig::new(sample());
        let executor = Executor::new(rig.start(), crate::history::tests::opened("fleet-alone"));
        let err = executor
            .run(Operation::Fleet, Who::Uid(0))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Refused(_)), "{err:?}");
        assert_eq!(
            one_line(&err),
            "this daemon keeps its state in a file, not in a fleet's store (daemon --store)"
        );
    }

    #[tokio::test]
    async fn with_the_store_down_a_change_is_refused_and_changes_nothing() {
        let rig = Rig::new(sample());
        let remote = FakeRemote::default();
        let (executor, _) = member_of(&rig, &remote, "fleet-down").await;
        remote.set_down(true);
        let err = executor.run(set_weight(7), Who::Uid(0)).await.unwrap_err();
        assert_eq!(one_line(&err), "store unavailable: connection refused");
        assert_eq!(state(&executor).await, sample());
        assert!(rig.live_matches(&sample()));
        let fleet = executor
            .run(Operation::Fleet, Who::Uid(0))
            .await
            .unwrap_err();
        assert_eq!(one_line(&fleet), "store unavailable: connection refused");
        remote.set_down(false);
        assert_eq!(stored(&remote).await.1, sample());
    }

    #[tokio::test]
    async fn a_stored_state_that_does_not_load_is_not_followed() {
        let rig = Rig::new(sample());
        let remote = FakeRemote::default();
        let (executor, member) = member_of(&rig, &remote, "fleet-bad").await;
        let revision = member.revision();
        let bad = String::from_utf8(encode(&sample()))
            .unwrap()
            .replace("\"slot\":1", "\"slot\":0");
        remote.swap(revision, bad.into_bytes()).await.unwrap();
        executor.follow(&member, remote.read().await.unwrap()).await;
        assert_eq!(member.revision(), revision);
        assert_eq!(state(&executor).await, sample());
    }

    #[tokio::test]
    async fn the_daemons_own_change_is_stored_unless_another_won_meanwhile() {
        let rig = Rig::new(sample());
        let remote = FakeRemote::default();
        let (executor, member) = member_of(&rig, &remote, "fleet-staged").await;
        let base = member.revision();
        let mut own = sample();
        own.set_weight("web", ip("198.18.0.103"), 1).unwrap();
        member.stage(own.clone());
        let storing = tokio::spawn(executor.clone().store_staged());
        let start = std::time::Instant::now();
        while remote.read().await.unwrap().revision == base {
            assert!(start.elapsed() < Duration::from_secs(5), "never stored");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (revision, held) = stored(&remote).await;
        assert_eq!(held, own);
        // Another host's change wins over the next one of this daemon's: it is dropped.
        let mut theirs = own.clone();
        theirs.set_weight("web", ip("198.18.0.101"), 2).unwrap();
        commit(&remote, revision, &theirs).await.unwrap();
        let mut lost = own.clone();
        lost.set_weight("web", ip("198.18.0.102"), 5).unwrap();
        let member_now = member.clone();
        executor
            .with_controller(move |_| {
                member_now.stage(lost);
                Ok(())
            })
            .await
            .unwrap();
        // Until the storing task took it (looked at under the lock, put back as found).
        loop {
            let member_now = member.clone();
            let waiting = executor
                .with_controller(move |_| {
                    let staged = member_now.take_staged();
                    let waiting = staged.is_some();
                    if let Some((base, state)) = staged {
                        member_now.restage(base, state);
                    }
                    Ok(waiting)
                })
                .await
                .unwrap();
            if !waiting {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        storing.abort();
        assert_eq!(stored(&remote).await.1, theirs);
    }
}
