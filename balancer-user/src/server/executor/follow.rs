//! The neighbour watch: follows the kernel's neighbour, link and route notifications and
//! rewrites the data-plane entries of backends that moved (a new MAC after a NIC swap or a
//! VM move, another interface), within a notification's time. It reads the kernel off the
//! controller's lock and takes the lock only to read the entries and write the changed ones.
//!
//! Besides notifications, every backend is located afresh (route, interface, neighbour)
//! when links or routes change, when notifications were lost, and every
//! [`RESYNC_INTERVAL`]; a backend without a usable neighbour entry then gets a probe, so
//! that the kernel looks for it again.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use super::Executor;
use crate::{
    error::{one_line, Error, Fault},
    neighbor::{
        follow::{Seen, Sighting},
        watch::{Batch, Watch},
        NeighborError, NextHop,
    },
};

/// How often every backend is located afresh, notifications or not.
const RESYNC_INTERVAL: Duration = Duration::from_secs(30);

/// The longest wait for a notification, so that a teardown is noticed.
const WAIT: Duration = Duration::from_secs(1);

/// The shortest time between two probes of one backend.
const PROBE_INTERVAL: Duration = Duration::from_secs(10);

/// What the watch remembers between notifications.
struct Follower {
    seen: Seen,
    /// Backends that could not be located (no route, routed), said once.
    lost: BTreeSet<IpAddr>,
    /// When each backend was last probed.
    probed: HashMap<IpAddr, Instant>,
    resync_at: Instant,
}

impl Follower {
    fn new() -> Self {
        Self {
            seen: Seen::default(),
            lost: BTreeSet::new(),
            probed: HashMap::new(),
            resync_at: Instant::now(),
        }
    }
}

impl Executor {
    /// Follows the kernel's tables until the daemon stops. Without a subscription (the
    /// socket cannot be opened) backends are located only when they are added.
    pub async fn follow_neighbours(self: Arc<Self>) {
        let mut watch = match Watch::open() {
            Ok(watch) => watch,
            Err(e) => {
                tracing::error!("cannot follow the kernel's neighbour changes: {e}");
                return;
            }
        };
        let mut follower = Follower::new();
        loop {
            let wait = follower
                .resync_at
                .saturating_duration_since(Instant::now())
                .min(WAIT);
            let Ok((returned, batch)) = tokio::task::spawn_blocking(move || {
                let batch = watch.next(wait);
                (watch, batch)
            })
            .await
            else {
                tracing::error!("the neighbour watch panicked; backends are no longer followed");
                return;
            };
            watch = returned;
            let batch = batch.unwrap_or_else(|e| {
                tracing::warn!("reading the kernel's neighbour notifications failed: {e}");
                Batch {
                    resync: true,
                    ..Batch::default()
                }
            });
            match self.follow_batch(&mut follower, batch).await {
                Err(Error::TearingDown) => return,
                Err(e) => {
                    tracing::warn!("following the kernel's tables failed: {}", one_line(&e));
                    follower.resync_at = Instant::now() + WAIT;
                }
                Ok(()) => {}
            }
        }
    }

    /// Applies a batch of notifications; locates every backend afresh when it says so or
    /// when it is time.
    async fn follow_batch(
        self: &Arc<Self>,
        follower: &mut Follower,
        batch: Batch,
    ) -> Result<(), Error> {
        let news: Vec<(IpAddr, Sighting)> = batch
            .sightings
            .into_iter()
            .filter(|(addr, sighting)| follower.seen.is_news(*addr, sighting))
            .collect();
        let mut resync = batch.resync || Instant::now() >= follower.resync_at;
        if !news.is_empty() {
            let followed = self.with_controller(move |c| c.follow(&news)).await?;
            resync |= followed.relocate;
        }
        if resync {
            follower.resync_at = Instant::now() + RESYNC_INTERVAL;
            self.resync(follower).await?;
        }
        Ok(())
    }

    /// Locates every backend afresh and writes those that moved; probes those without a
    /// usable neighbour entry.
    async fn resync(self: &Arc<Self>, follower: &mut Follower) -> Result<(), Error> {
        let placements: BTreeMap<IpAddr, Option<NextHop>> =
            self.with_controller(|c| c.placements()).await?;
        let addrs: Vec<IpAddr> = placements.keys().copied().collect();
        let neighbors = self.neighbors.clone();
        let (addrs, located) = tokio::task::spawn_blocking(move || {
            let located = neighbors.locate(&addrs);
            (addrs, located)
        })
        .await
        .map_err(|e| Fault::Internal(format!("locating backends panicked: {e}")))?;
        let now = Instant::now();
        follower
            .probed
            .retain(|addr, at| placements.contains_key(addr) && now < *at + PROBE_INTERVAL);
        let mut moved = Vec::new();
        let mut probe = Vec::new();
        for (addr, result) in addrs.into_iter().zip(located) {
            match result {
                Ok(hop) => {
                    follower.lost.remove(&addr);
                    if placements[&addr] != Some(hop) {
                        moved.push((addr, Sighting::Located(hop)));
                    }
                }
                Err(NeighborError::Unresolved(..)) => {
                    if let std::collections::hash_map::Entry::Vacant(e) =
                        follower.probed.entry(addr)
                    {
                        e.insert(now);
                        probe.push(addr);
                    }
                }
                Err(e) => {
                    if follower.lost.insert(addr) {
                        tracing::warn!(
                            %addr,
                            "backend cannot be located: {}; its data-plane entry is kept",
                            one_line(&e)
                        );
                    }
                }
            }
        }
        if !moved.is_empty() {
            self.with_controller(move |c| c.follow(&moved)).await?;
        }
        if !probe.is_empty() {
            let neighbors = self.neighbors.clone();
            tokio::task::spawn_blocking(move || neighbors.probe(&probe));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        controller::fakes::{hop_of, Rig},
        state::tests::{ip, sample},
    };

    #[tokio::test]
    async fn a_resync_rewrites_the_backends_that_moved_and_only_those() {
        let rig = Rig::new(sample());
        let executor = Executor::new(rig.start(), crate::history::tests::opened("follow-moved"));
        let (moved, still) = (ip("198.18.0.101"), ip("198.18.0.102"));
        let elsewhere = NextHop {
            ifindex: 7,
            src_mac: [2, 0, 0, 0, 0, 7],
            dst_mac: [2, 0, 0, 0, 0xb0, 1],
        };
        rig.neighbors.move_to(moved, elsewhere);
        let writes = rig.plane.maps().writes;
        executor.resync(&mut Follower::new()).await.unwrap();
        assert_eq!(rig.plane.maps().writes, writes + 1);
        let placements = executor.with_controller(|c| c.placements()).await.unwrap();
        assert_eq!(placements[&moved], Some(elsewhere));
        assert_eq!(placements[&still], Some(hop_of(still)));
    }

    #[tokio::test]
    async fn tunnelled_backends_are_neither_located_nor_rewritten() {
        let mut state = sample();
        let ipip = crate::state::Forward {
            mode: crate::state::Mode::Ipip,
            ..Default::default()
        };
        let vip = "198.19.0.5:443/tcp".parse().unwrap();
        let affinity = crate::state::Affinity::Connection;
        state.add_service("tun", vip, affinity, None).unwrap();
        state.set_forward("tun", ipip).unwrap();
        let routed = ip("198.18.0.77");
        state.add_backend("tun", routed, "main", 100).unwrap();
        let rig = Rig::new(state);
        let executor = Executor::new(rig.start(), crate::history::tests::opened("follow-tunnel"));
        let elsewhere = NextHop {
            ifindex: 7,
            src_mac: [2, 0, 0, 0, 0, 7],
            dst_mac: [2, 0, 0, 0, 0xb0, 1],
        };
        rig.neighbors.move_to(routed, elsewhere);
        let (writes, backends) = {
            let maps = rig.plane.maps();
            (maps.writes, maps.backends.clone())
        };
        executor.resync(&mut Follower::new()).await.unwrap();
        let sighting = Sighting::Neighbour {
            ifindex: 7,
            mac: elsewhere.dst_mac,
        };
        let batch = Batch {
            sightings: vec![(routed, sighting)],
            resync: false,
        };
        executor
            .follow_batch(&mut Follower::new(), batch)
            .await
            .unwrap();
        let maps = rig.plane.maps();
        assert_eq!(maps.writes, writes);
        assert_eq!(maps.backends, backends);
    }

    #[tokio::test]
    async fn only_news_reaches_the_data_plane() {
        let rig = Rig::new(sample());
        let executor = Executor::new(rig.start(), crate::history::tests::opened("follow-lost"));
        let addr = ip("198.18.0.101");
        let mut follower = Follower::new();
        follower.resync_at = Instant::now() + RESYNC_INTERVAL;
        let new_mac = [2, 0, 0, 0, 0xb0, 1];
        let sighting = Sighting::Neighbour {
            ifindex: 2,
            mac: new_mac,
        };
        let batch = || Batch {
            sightings: vec![(addr, sighting), (addr, sighting)],
            resync: false,
        };
        let writes = rig.plane.maps().writes;
        executor.follow_batch(&mut follower, batch()).await.unwrap();
        executor.follow_batch(&mut follower, batch()).await.unwrap();
        assert_eq!(rig.plane.maps().writes, writes + 1);
        let placements = executor.with_controller(|c| c.placements()).await.unwrap();
        assert_eq!(placements[&addr].map(|h| h.dst_mac), Some(new_mac));
    }
}
