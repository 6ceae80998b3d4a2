//! The peers of this host's flow-state sync: every other host of the fleet that publishes
//! a sync address in its host record, read from the store when a host's record appears or
//! goes (a watch), and every 5 s (a host whose record expired is no peer any more).
//! Records go to them, and only datagrams from them are taken.

use std::{net::SocketAddr, sync::Arc, sync::RwLock, time::Duration};

use tokio::sync::mpsc;

use crate::{api::FleetHost, error::one_line, fleet::host, fleet::member::Member};

/// How often the hosts' records are read (besides when a host joins or leaves).
pub const FOLLOW_EVERY: Duration = Duration::from_secs(5);

/// The peers' sync addresses.
#[derive(Debug, Default)]
pub struct Peers {
    addrs: RwLock<Vec<SocketAddr>>,
}

impl Peers {
    /// Makes `addrs` the peers.
    pub fn set(&self, addrs: Vec<SocketAddr>) {
        *self.addrs.write().unwrap_or_else(|e| e.into_inner()) = addrs;
    }

    /// The peers' addresses.
    pub fn list(&self) -> Vec<SocketAddr> {
        self.addrs.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether a datagram from `from` comes from a peer (its sync address: peers send
    /// from the address they listen on).
    pub fn knows(&self, from: SocketAddr) -> bool {
        self.addrs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&from)
    }
}

/// The sync addresses of `hosts` but the one named `own`, sorted and without repeats.
pub fn of(hosts: &[FleetHost], own: &str) -> Vec<SocketAddr> {
    let mut addrs: Vec<_> = hosts
        .iter()
        .filter(|h| h.host != own)
        .filter_map(|h| h.sync)
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs
}

/// Reads the fleet's host records every `every` (the daemon: [`FOLLOW_EVERY`]), and at
/// once when a host joins or leaves (a watch on the records), and makes their sync
/// addresses (but this host's) the peers; when the store does not answer, the peers stay
/// as they were.
pub async fn follow(member: Arc<Member>, peers: Arc<Peers>, every: Duration) {
    let (to, mut moved) = mpsc::channel(1);
    let mut watching = None;
    let mut interval = tokio::time::interval(every);
    loop {
        let watch = watching.get_or_insert_with(|| member.remote.watch_hosts(to.clone()));
        let mut broke = false;
        tokio::select! {
            _ = interval.tick() => {}
            Some(()) = moved.recv() => {}
            ended = watch => {
                if let Err(e) = ended {
                    tracing::debug!("watching the hosts' records broke: {}", one_line(&e));
                }
                broke = true;
            }
        }
        if broke {
            // Read, and watched again, at the next tick (etcd may be away).
            watching = None;
            interval.tick().await;
        }
        let hosts = match member.remote.hosts().await {
            Ok(records) => host::decode(&records),
            Err(e) => Err(e),
        };
        match hosts {
            Ok(hosts) => peers.set(of(&hosts, &member.host)),
            Err(e) => tracing::debug!("the sync peers stay as they were: {}", one_line(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, sync: Option<&str>) -> FleetHost {
        FleetHost {
            host: name.into(),
            revision: 1,
            digests: Default::default(),
            seen_ms: 0,
            left: false,
            sync: sync.map(|s| s.parse().unwrap()),
        }
    }

    #[test]
    fn peers_are_the_other_hosts_that_publish_a_sync_address() {
        let hosts = [
            host("lb-1", Some("198.18.1.1:7070")),
            host("lb-2", Some("198.18.1.2:7070")),
            host("lb-3", None),
            host("lb-4", Some("198.18.1.2:7070")),
        ];
        let peers = Peers::default();
        peers.set(of(&hosts, "lb-1"));
        assert_eq!(peers.list(), vec!["198.18.1.2:7070".parse().unwrap()]);
        assert!(peers.knows("198.18.1.2:7070".parse().unwrap()));
        // Not this host, nor a peer's address from another port.
        assert!(!peers.knows("198.18.1.1:7070".parse().unwrap()));
        assert!(!peers.knows("198.18.1.2:7071".parse().unwrap()));
    }

    #[tokio::test]
    async fn a_host_that_joins_is_a_peer_at_once_not_at_the_next_read() {
        use crate::fleet::remote::{fake::FakeRemote, Remote};

        let remote = FakeRemote::default();
        let record = |name: &str, addr: &str| crate::fleet::host::encode(&host(name, Some(addr)));
        remote
            .announce("lb-1", record("lb-1", "198.18.1.1:7070"))
            .await
            .unwrap();
        remote
            .announce("lb-2", record("lb-2", "198.18.1.2:7070"))
            .await
            .unwrap();
        let member = Arc::new(Member::new(
            Arc::new(remote.clone()),
            "lb-1".into(),
            "etcd://198.18.0.1:2379/lb".into(),
        ));
        let peers = Arc::new(Peers::default());
        // Read once at the start, then only every hour: a new peer found sooner came by
        // the watch.
        let following = tokio::spawn(follow(member, peers.clone(), Duration::from_secs(3600)));
        let within = |want: usize| {
            let peers = peers.clone();
            async move {
                let start = std::time::Instant::now();
                while peers.list().len() != want {
                    assert!(
                        start.elapsed() < Duration::from_secs(5),
                        "{:?}, not {want} peers",
                        peers.list()
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        within(1).await;
        // The follower is watching by now (it watches as it waits for the next read).
        tokio::time::sleep(Duration::from_millis(100)).await;
        remote
            .announce("lb-3", record("lb-3", "198.18.1.3:7070"))
            .await
            .unwrap();
        within(2).await;
        assert!(peers.knows("198.18.1.3:7070".parse().unwrap()));
        following.abort();
    }
}
