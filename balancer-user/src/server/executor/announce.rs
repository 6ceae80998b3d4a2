//! The executor's side of the VIPs' announcements (`daemon --announce-table`): a pass
//! every [`PASS_EVERY`] makes the announcement table hold a route per VIP of the
//! controller's state (read under the lock, a copy of addresses; the kernel's table is
//! changed off it), `fleet leave` and `fleet join` mark the host and pass at once,
//! `teardown` withdraws everything.

use std::{collections::BTreeSet, net::IpAddr, sync::Arc, time::Duration};

use super::Executor;
use crate::{
    announce::{AnnounceError, Announcer},
    controller::Controller,
    error::{one_line, Error},
    fleet::FleetError,
    history::{Note, Who},
};

/// How often the table is brought in line with the state (a change's VIPs announced or
/// withdrawn within this).
const PASS_EVERY: Duration = Duration::from_millis(500);

impl Executor {
    /// Announces the VIPs through `announcer` from now on (before
    /// [`Executor::announce_vips`] runs).
    pub fn announce_with(&self, announcer: Arc<Announcer>) {
        if self.announcer.set(announcer).is_err() {
            tracing::warn!("the VIPs' announcer was set twice; the first one is kept");
        }
    }

    /// Brings the announcement table in line with the state every [`PASS_EVERY`] until
    /// the daemon stops. Started once the data plane is attached and the state reconciled:
    /// a host announces nothing before.
    pub async fn announce_vips(self: Arc<Self>) {
        let mut interval = tokio::time::interval(PASS_EVERY);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing: Option<String> = None;
        loop {
            interval.tick().await;
            match self.announce_pass().await {
                Ok(()) => failing = None,
                Err(Error::TearingDown) => return,
                Err(e) => {
                    // Logged once per new failure, not at every pass.
                    let why = one_line(&e);
                    if failing.as_deref() != Some(why.as_str()) {
                        tracing::warn!("announcing the VIPs failed: {why}");
                        failing = Some(why);
                    }
                }
            }
        }
    }

    /// One pass: the table made to hold the VIPs the state has now.
    async fn announce_pass(self: &Arc<Self>) -> Result<(), Error> {
        let Some(announcer) = self.announcer.get() else {
            return Ok(());
        };
        announcer.pass(self.vips()).await
    }

    /// The VIP addresses of the controller's state.
    async fn vips(self: &Arc<Self>) -> Result<BTreeSet<IpAddr>, Error> {
        let vips = |c: &mut Controller| {
            Ok(c.state()
                .services
                .values()
                .map(|s| s.vip.addr.ip())
                .collect())
        };
        self.with_controller(vips).await
    }

    /// `fleet leave` (`left`) or `fleet join`: marks the host (on disk first) and passes at
    /// once, so that the routes are withdrawn (or announced) when it answers. Refused in
    /// one line by a daemon alone or without `--announce-table`; leaving twice (or joining
    /// twice) is no error.
    pub(super) async fn set_left(self: &Arc<Self>, left: bool, who: Who) -> Result<(), Error> {
        if self.member.is_none() {
            return Err(FleetError::Alone.into());
        }
        let announcer = self.announcer.get().ok_or(AnnounceError::Off)?;
        let was = announcer.left();
        announcer.set_left(left).await?;
        self.announce_pass().await?;
        if was != left {
            let what = match left {
                true => "left the fleet: the VIPs' announcements withdrawn",
                false => "joined the fleet: the VIPs announced again",
            };
            let at_ms = self.with_controller(|c| Ok(c.now_ms())).await?;
            self.history
                .record(vec![Note::plain(at_ms, None, what.to_string())], who);
        }
        Ok(())
    }

    /// After a teardown: every announcement withdrawn (the data plane is gone).
    pub(super) async fn withdraw_all(self: &Arc<Self>) -> Result<(), Error> {
        let Some(announcer) = self.announcer.get() else {
            return Ok(());
        };
        announcer.withdraw_all();
        announcer.pass(async { Ok(BTreeSet::new()) }).await
    }

    /// Whether this host left the fleet (for its record in the store).
    pub(super) fn has_left(&self) -> bool {
        self.announcer.get().is_some_and(|a| a.left())
    }

    /// What `status` shows of the announcements.
    pub(super) fn announcement(&self) -> Option<crate::api::Announcement> {
        self.announcer.get().map(|a| a.status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        controller::fakes::Rig,
        error::Refused,
        fleet::{member::Member, remote::fake::FakeRemote},
        operation::Operation,
        state::tests::sample,
    };

    #[tokio::test]
    async fn leave_and_join_are_refused_in_one_line_alone_or_without_a_table() {
        let rig = Rig::new(sample());
        let alone = Executor::new(rig.start(), crate::history::tests::opened("leave-alone"));
        for operation in [Operation::Leave, Operation::Join] {
            let err = alone.run(operation, Who::Uid(0)).await.unwrap_err();
            assert!(matches!(err, Error::Refused(Refused::Fleet(_))), "{err:?}");
            assert_eq!(one_line(&err).lines().count(), 1);
        }

        let rig = Rig::new(sample());
        let member = Arc::new(Member::new(
            Arc::new(FakeRemote::default()),
            "lb-1".into(),
            "etcd://198.18.0.1:2379/lb".into(),
        ));
        let history = crate::history::tests::opened("leave-no-table");
        let executor = Executor::in_fleet(rig.start(), history, Some(member));
        for operation in [Operation::Leave, Operation::Join] {
            let err = executor.run(operation, Who::Uid(0)).await.unwrap_err();
            assert!(
                matches!(err, Error::Refused(Refused::Announce(_))),
                "{err:?}"
            );
            assert_eq!(
                one_line(&err),
                "this daemon announces no VIPs: start it with --announce-table"
            );
        }
        assert!(!executor.has_left());
        assert_eq!(executor.announcement(), None);
    }
}
