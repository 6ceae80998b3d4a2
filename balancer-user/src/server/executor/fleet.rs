//! The executor's side of a fleet (`daemon --store`): changes are prepared under the
//! controller's lock, stored with compare-and-swap off it, then adopted; the store is
//! followed (read, then watched; read again after each break) and every newer revision
//! adopted; the daemon's own changes (timed steps) are stored after they are made; this
//! host's record is renewed every second. One daemon leads ([`Executor::campaign`]): only
//! it drives timed work, and its own changes are stored only while its term lasts; every
//! host publishes its own health checks, the leader decides the fleet's view of them and
//! every host compiles its tables from that view ([`Executor::rule_health`]). No call to
//! the store is made under the lock.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use super::{Executor, LOCATE_ROUNDS};
use crate::{
    api::{FleetHost, FleetStatus},
    controller::Controller,
    error::{one_line, Error, Fault},
    fleet::{
        commit::{commit, commit_fenced, decode},
        host,
        member::Member,
        remote::{Campaign, Stored},
        report::{self, Peers, Report},
        ruling::{self, Checks, Ruling},
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

/// How often a daemon that does not lead tries to take the leader key (a free key is taken
/// within this time of the former leader's lease expiring).
const CAMPAIGN_EVERY: Duration = Duration::from_millis(200);

/// How often the fleet's health view is read (and, by the leader, decided).
const HEALTH_EVERY: Duration = Duration::from_millis(250);

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
                .adopt(member, revision, next, who, Some(change.clone()), false)
                .await;
        }
        Err(Fault::Internal(
            "new backends were resolved but left the neighbour table again at once".into(),
        )
        .into())
    }

    /// Makes stored `state` at `revision` the controller's, unless it already has that
    /// revision (and not `again`: a state of its own that was not stored is put back to
    /// the stored one) or a later one; new backends are resolved off the lock first.
    async fn adopt(
        self: &Arc<Self>,
        member: &Arc<Member>,
        revision: i64,
        state: State,
        who: Who,
        change: Option<Change>,
        again: bool,
    ) -> Result<(), Error> {
        for _ in 0..LOCATE_ROUNDS {
            let adopt = {
                let (member, state) = (member.clone(), state.clone());
                move |c: &mut Controller| {
                    let held = member.revision();
                    if held > revision || (held == revision && !again) {
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
            Ok(state) => {
                self.adopt(member, revision, state, Who::Daemon, None, false)
                    .await
            }
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
            // The seed (nothing stored yet) needs no term: one host only stores on nothing.
            let stored = match (base, member.leading()) {
                (0, _) => commit(&*member.remote, base, &state).await,
                (_, Some(term)) => commit_fenced(&*member.remote, base, term, &state).await,
                (_, None) => Err(FleetError::Deposed { term: 0 }),
            };
            match stored {
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
                Err(FleetError::Moved { revision }) => {
                    tracing::info!(
                        revision,
                        "a change of this daemon's own lost to a concurrent one; following the store"
                    );
                    self.revert(&member).await;
                }
                Err(e @ FleetError::Deposed { .. }) => {
                    tracing::warn!(
                        "a timed step not stored: {}; following the store",
                        one_line(&e)
                    );
                    self.revert(&member).await;
                }
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

    /// Puts the controller back to the stored state (read now) after a change of its own
    /// was not stored: nothing stays of it here.
    async fn revert(self: &Arc<Self>, member: &Arc<Member>) {
        let reverted = match member.remote.read().await {
            Ok(stored) if stored.document.is_some() => match decode(&stored) {
                Ok(state) => {
                    self.adopt(member, stored.revision, state, Who::Daemon, None, true)
                        .await
                }
                Err(e) => Err(e.into()),
            },
            Ok(_) => Ok(()),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = reverted {
            tracing::warn!(
                "going back to the stored state failed: {}; the next revision brings it",
                one_line(&e)
            );
        }
    }

    /// Whether this daemon drives the timed work: alone, or as the fleet's leader.
    pub(super) fn drives(&self) -> bool {
        self.member.as_ref().is_none_or(|m| m.leading().is_some())
    }

    /// Campaigns for the fleet's leadership until the daemon stops: the leader renews its
    /// lease every third of its time to live, the others try to take a free leader key
    /// every [`CAMPAIGN_EVERY`]. A daemon that becomes leader first adopts the latest
    /// stored state (the progress of every release), then drives from there; one whose
    /// lease may have run out (etcd not answering) stops driving at the lease's end.
    pub async fn campaign(self: Arc<Self>) {
        let Some(member) = self.member.clone() else {
            return;
        };
        let ttl = i64::try_from(member.leader_ttl.as_secs()).unwrap_or(i64::MAX);
        loop {
            let sent = Instant::now();
            let pause = match member.remote.campaign(&member.host, ttl).await {
                Ok(Campaign::Leading { term, ttl }) => {
                    let lasts = Duration::from_secs(u64::try_from(ttl).unwrap_or(0));
                    if member.leading() != Some(term) {
                        // Catch up with the stored progress before driving anything.
                        match member.remote.read().await {
                            Ok(stored) => self.follow(&member, stored).await,
                            Err(e) => {
                                tracing::warn!("leading waits for the store: {}", one_line(&e));
                                tokio::time::sleep(CAMPAIGN_EVERY).await;
                                continue;
                            }
                        }
                        tracing::info!(term, host = member.host, "this host leads the fleet");
                        member.lead(term, sent + lasts);
                        // Windows the former leader began counted its counters, not ours;
                        // the other hosts' counters count again from their next reports.
                        let again = |c: &mut Controller| {
                            let mut names = c.count_peers(Peers::default())?;
                            names.extend(c.restart_windows()?);
                            Ok(names)
                        };
                        match self.with_controller(again).await {
                            Ok(names) if !names.is_empty() => tracing::info!(
                                ?names,
                                "analysis windows in progress start again on this host"
                            ),
                            Ok(_) => {}
                            Err(e) => tracing::warn!(
                                "starting analysis windows again failed: {}",
                                one_line(&e)
                            ),
                        }
                    }
                    member.lead(term, sent + lasts);
                    lasts / 3
                }
                Ok(Campaign::Following { leader }) => {
                    if member.leading().is_some() {
                        tracing::warn!(?leader, "this host no longer leads the fleet");
                    }
                    member.follow();
                    CAMPAIGN_EVERY
                }
                Err(e) => {
                    tracing::debug!("campaigning waits for the store: {}", one_line(&e));
                    CAMPAIGN_EVERY
                }
            };
            tokio::time::sleep(pause.max(CAMPAIGN_EVERY / 2)).await;
        }
    }

    /// At a clean stop: gives up the leadership (the lease is revoked, the leader key goes
    /// with it), so that another host takes over at its next try instead of after the
    /// lease's time to live. A store that does not answer lets the lease expire.
    pub async fn resign(self: &Arc<Self>) {
        let Some(member) = self.member.clone() else {
            return;
        };
        let leading = member.leading().is_some();
        member.follow();
        match member.remote.resign(&member.host).await {
            Ok(()) if leading => tracing::info!("this host gave up leading the fleet"),
            Ok(()) => {}
            Err(e) => tracing::warn!("giving up the leader lease failed: {}", one_line(&e)),
        }
    }

    /// Keeps the fleet's health view until the daemon stops: every [`HEALTH_EVERY`], the
    /// leader reads the live hosts' reports, decides the view from their checks
    /// ([`ruling::decide`]) and stores it while its term lasts, and takes the other hosts'
    /// analysis counters ([`Controller::count_peers`]); every host reads the view and, when
    /// it changed, compiles its tables from it ([`Controller::overrule`]).
    pub async fn rule_health(self: Arc<Self>) {
        let Some(member) = self.member.clone() else {
            return;
        };
        let mut applied: Option<Ruling> = None;
        let mut interval = tokio::time::interval(HEALTH_EVERY);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let stored = match member.remote.health().await {
                Ok(Some(document)) => match ruling::decode(&document) {
                    Ok(view) => Some(view),
                    Err(e) => {
                        tracing::warn!("{}; the tables keep the last view", one_line(&e));
                        None
                    }
                },
                Ok(None) => None,
                Err(_) => continue,
            };
            let view = match member.leading() {
                Some(term) => self.lead_health(&member, term, stored).await,
                None => stored,
            };
            let Some(view) = view.filter(|v| applied.as_ref() != Some(v)) else {
                continue;
            };
            let services = view.services.clone();
            match self.with_controller(move |c| c.overrule(services)).await {
                Ok(()) => applied = Some(view),
                Err(e) => tracing::warn!("the fleet's health view not applied: {}", one_line(&e)),
            }
        }
    }

    /// The leader's part: the live hosts' reports read, their counters handed to the
    /// controller, and the view decided from their checks (see [`Executor::decide`]).
    async fn lead_health(
        self: &Arc<Self>,
        member: &Arc<Member>,
        term: i64,
        stored: Option<Ruling>,
    ) -> Option<Ruling> {
        let reports = match member.remote.reports().await {
            Ok(documents) => report::decode(&documents),
            Err(_) => return stored,
        };
        let peers = Peers::of(&reports, &member.host);
        match self.with_controller(move |c| c.count_peers(peers)).await {
            Ok(names) if !names.is_empty() => tracing::info!(
                ?names,
                "the hosts that count changed: analysis windows in progress start again"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("the other hosts' counters not taken: {}", one_line(&e)),
        }
        let checks: Vec<Checks> = reports.into_iter().map(|r| r.checks).collect();
        self.decide(member, term, stored, &checks).await
    }

    /// The leader's decision of the fleet's health view from the live hosts' `checks`,
    /// given the `stored` one; stored when it differs, while the leader's term lasts. The
    /// view the fleet holds after it (none: none stored yet).
    async fn decide(
        self: &Arc<Self>,
        member: &Arc<Member>,
        term: i64,
        stored: Option<Ruling>,
        checks: &[Checks],
    ) -> Option<Ruling> {
        let current = stored.clone().unwrap_or_default();
        let next = ruling::decide(&current, checks);
        if stored.as_ref() == Some(&next) {
            return stored;
        }
        match member.remote.rule(term, ruling::encode(&next)).await {
            Ok(true) => Some(next),
            Ok(false) => {
                tracing::info!(term, "the health view not stored: this host's term is over");
                stored
            }
            Err(_) => stored,
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
            let unanswered = self.unanswered().unwrap_or_default();
            let record = {
                let member = member.clone();
                move |c: &mut Controller| {
                    let record = FleetHost {
                        host: member.host.clone(),
                        revision: member.revision(),
                        digests: c.digests().clone(),
                        seen_ms: c.now_ms(),
                        left,
                        sync: member.sync,
                    };
                    let report = Report {
                        host: member.host.clone(),
                        started_ms: member.started_ms,
                        checks: c.own_checks(),
                        counters: c.own_counters(&unanswered)?,
                    };
                    Ok((record, report))
                }
            };
            let Ok((record, report)) = self.with_controller(record).await else {
                continue;
            };
            if let Err(e) = member
                .remote
                .announce(&member.host, host::encode(&record))
                .await
            {
                tracing::debug!("renewing this host's record waits: {}", one_line(&e));
                continue;
            }
            // What this host's own checks say and its analysis counters, for the leader.
            if let Err(e) = member
                .remote
                .report(&member.host, report::encode(&report))
                .await
            {
                tracing::debug!("publishing this host's checks waits: {}", one_line(&e));
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
        let leader = member.remote.leader().await?;
        let now_ms = self.with_controller(|c| Ok(c.now_ms())).await?;
        Ok(FleetStatus {
            store: member.store.clone(),
            revision: member.revision(),
            leader,
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
        commit(remote, 0, &sample()).await.unwrap();
        host_of(rig, remote, name, "lb-1").await
    }

    /// Like [`member_of`], on a store that holds a state already, as host `host`.
    async fn host_of(
        rig: &Rig,
        remote: &FakeRemote,
        name: &str,
        host: &str,
    ) -> (Arc<Executor>, Arc<Member>) {
        let revision = remote.read().await.unwrap().revision;
        let member = Arc::new(Member::new(
            Arc::new(remote.clone()),
            host.into(),
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
        let Campaign::Leading { term, .. } = remote.campaign("lb-1", 2).await.unwrap() else {
            panic!("lb-1 does not lead");
        };
        member.lead(term, Instant::now() + Duration::from_secs(60));
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

    /// Polls `check` every 10 ms for at most 5 s.
    async fn eventually(what: &str, check: impl Fn() -> bool) {
        let start = std::time::Instant::now();
        while !check() {
            assert!(start.elapsed() < Duration::from_secs(5), "never: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn leader_shown(executor: &Arc<Executor>) -> Option<String> {
        match executor.run(Operation::Fleet, Who::Uid(0)).await.unwrap() {
            crate::server::executor::Reply::Fleet(status) => status.leader,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn one_host_leads_and_another_takes_over_once_its_lease_expired() {
        let remote = FakeRemote::default();
        commit(&remote, 0, &sample()).await.unwrap();
        let (rig1, rig2) = (Rig::new(sample()), Rig::new(sample()));
        let (one, m1) = host_of(&rig1, &remote, "lead-1", "lb-1").await;
        let first = tokio::spawn(one.clone().campaign());
        eventually("lb-1 leads", || m1.leading().is_some()).await;
        let (two, m2) = host_of(&rig2, &remote, "lead-2", "lb-2").await;
        let second = tokio::spawn(two.clone().campaign());
        // lb-2 campaigns several times: lb-1 holds the key, lb-2 follows and does not drive.
        tokio::time::sleep(CAMPAIGN_EVERY * 3).await;
        assert!(m2.leading().is_none() && !two.drives());
        assert!(one.drives());
        assert_eq!(leader_shown(&two).await.as_deref(), Some("lb-1"));
        let term = m1.leading().unwrap();
        // lb-1 dies (no more renewals) and its lease expires: lb-2 takes over, new term.
        first.abort();
        remote.expire_leader();
        eventually("lb-2 leads", || m2.leading().is_some()).await;
        assert!(m2.leading().unwrap() > term);
        assert_eq!(leader_shown(&one).await.as_deref(), Some("lb-2"));
        second.abort();
    }

    #[tokio::test]
    async fn a_leader_that_stops_cleanly_resigns_and_another_takes_over_at_once() {
        let remote = FakeRemote::default();
        commit(&remote, 0, &sample()).await.unwrap();
        let (rig1, rig2) = (Rig::new(sample()), Rig::new(sample()));
        let (one, m1) = host_of(&rig1, &remote, "resign-1", "lb-1").await;
        let first = tokio::spawn(one.clone().campaign());
        eventually("lb-1 leads", || m1.leading().is_some()).await;
        first.abort();
        let (two, m2) = host_of(&rig2, &remote, "resign-2", "lb-2").await;
        let second = tokio::spawn(two.clone().campaign());
        tokio::time::sleep(CAMPAIGN_EVERY * 2).await;
        assert!(m2.leading().is_none(), "lb-2 leads beside lb-1");
        one.resign().await;
        assert!(!one.drives());
        eventually("lb-2 leads", || m2.leading().is_some()).await;
        second.abort();
    }

    #[tokio::test]
    async fn a_former_leaders_step_is_refused_and_it_goes_back_to_the_stored_state() {
        let remote = FakeRemote::default();
        let rig = Rig::new(sample());
        let (executor, member) = member_of(&rig, &remote, "fleet-fenced").await;
        let Campaign::Leading { term, .. } = remote.campaign("lb-1", 2).await.unwrap() else {
            panic!("lb-1 does not lead");
        };
        // lb-1 believes it still leads (paused past its lease), but lb-2 took over.
        member.lead(term, Instant::now() + Duration::from_secs(60));
        remote.expire_leader();
        let taken = remote.campaign("lb-2", 2).await.unwrap();
        assert!(matches!(taken, Campaign::Leading { term: t, .. } if t > term));
        let (revision, held) = stored(&remote).await;
        // lb-1 takes a timed step: its controller has it, and stages it for the store.
        // (The rig's store is no fleet cache: staged here as the cache does.)
        let member_now = member.clone();
        executor
            .with_controller(move |c| {
                c.change(|s, _| s.set_weight("web", ip("198.18.0.103"), 1))?;
                member_now.stage(c.state().clone());
                Ok(())
            })
            .await
            .unwrap();
        assert_ne!(state(&executor).await, held);
        let storing = tokio::spawn(executor.clone().store_staged());
        let wanted = held.clone();
        let rig_live = move || rig.live_matches(&wanted);
        let executor_now = executor.clone();
        eventually("lb-1 back at the stored state", || {
            let executor = executor_now.clone();
            let current = std::thread::spawn(move || {
                tokio::runtime::Runtime::new()
                    .unwrap()
                    .block_on(async move { state(&executor).await })
            })
            .join()
            .unwrap();
            current == held && rig_live()
        })
        .await;
        storing.abort();
        assert_eq!(
            stored(&remote).await,
            (revision, sample()),
            "a fenced step was stored"
        );
        assert_eq!(member.revision(), revision);
        // Its fenced write is refused in one line, also when tried directly.
        let err = commit_fenced(&remote, revision, term, &sample())
            .await
            .unwrap_err();
        assert_eq!(
            one_line(&err),
            format!("this daemon no longer leads the fleet (term {term} is over)")
        );
    }

    #[tokio::test]
    async fn the_leader_decides_the_fleets_health_view_and_every_host_applies_it() {
        let remote = FakeRemote::default();
        commit(&remote, 0, &crate::state::tests::checked_sample())
            .await
            .unwrap();
        let rig = Rig::new(crate::state::tests::checked_sample());
        let (executor, member) = host_of(&rig, &remote, "fleet-health", "lb-1").await;
        let Campaign::Leading { term, .. } = remote.campaign("lb-1", 2).await.unwrap() else {
            panic!("lb-1 does not lead");
        };
        member.lead(term, Instant::now() + Duration::from_secs(60));
        // Two of three hosts see .101 down; one sees .102 down.
        let b = |a: &str| ip(a);
        let report = |host: &str, down101: bool, down102: bool| {
            report::encode(&Report {
                host: host.into(),
                checks: Checks::from([(
                    "web".to_string(),
                    [(b("198.18.0.101"), !down101), (b("198.18.0.102"), !down102)].into(),
                )]),
                ..Report::default()
            })
        };
        remote
            .report("lb-1", report("lb-1", true, false))
            .await
            .unwrap();
        remote
            .report("lb-2", report("lb-2", true, true))
            .await
            .unwrap();
        remote
            .report("lb-3", report("lb-3", false, false))
            .await
            .unwrap();
        let view = executor.lead_health(&member, term, None).await.unwrap();
        assert_eq!(view.get("web", b("198.18.0.101")), Some(false));
        assert_eq!(view.get("web", b("198.18.0.102")), Some(true));
        let held = ruling::decode(&remote.health().await.unwrap().unwrap()).unwrap();
        assert_eq!(held, view);
        // A host that no longer leads stores nothing.
        remote.expire_leader();
        remote
            .report("lb-3", report("lb-3", true, true))
            .await
            .unwrap();
        let kept = executor
            .lead_health(&member, term, Some(view.clone()))
            .await;
        assert_eq!(kept, Some(view.clone()));
        assert_eq!(
            ruling::decode(&remote.health().await.unwrap().unwrap()).unwrap(),
            view
        );
        // Every host applies the stored view: .101 leaves this host's tables.
        member.follow();
        let applying = tokio::spawn(executor.clone().rule_health());
        let web = sample_web();
        let down: std::collections::BTreeSet<_> = [b("198.18.0.101")].into();
        let wanted = crate::compile::compile(&web, crate::controller::fakes::SEED, &down)
            .unwrap()
            .image;
        eventually("the view applied", || {
            rig.plane.maps().live.get(&web.slot) == Some(&wanted)
        })
        .await;
        applying.abort();
    }

    fn sample_web() -> crate::state::Service {
        crate::state::tests::checked_sample()
            .service("web")
            .unwrap()
            .clone()
    }
}
