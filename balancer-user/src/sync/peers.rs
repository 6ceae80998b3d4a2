//! The peers of this host's flow-state sync: every other host of the fleet that publishes
//! a sync address in its host record, read from the store every second (a host whose
//! record expired is no peer any more). Records go to them, and only datagrams from them
//! are taken.

use std::{net::SocketAddr, sync::Arc, sync::RwLock, time::Duration};

use crate::{api::FleetHost, error::one_line, fleet::host, fleet::member::Member};

/// How often the hosts' records are read.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

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

/// Reads the fleet's host records every second and makes their sync addresses (but this
/// host's) the peers; when the store does not answer, the peers stay as they were.
pub async fn follow(member: Arc<Member>, peers: Arc<Peers>) {
    let mut interval = tokio::time::interval(FOLLOW_EVERY);
    loop {
        interval.tick().await;
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
}
