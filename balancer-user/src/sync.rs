//! Flow-state sync between the LB hosts of a fleet (`daemon --sync-listen ADDR:PORT`), so
//! that a flow the router moves to another LB host keeps its backend even when the tables
//! changed since it began.
//!
//! The data plane writes a record of each new connection-tracking entry (a flow's second
//! packet, or a new connection on a closed flow's 5-tuple) into a ring buffer
//! (`dataplane::sync::Ring`); [`send`] reads it whenever it has records and sends them, up
//! to [`wire::MAX_RECORDS`] a datagram, to every peer: the other hosts of the fleet that
//! publish a sync address in their host record ([`peers`]). [`receive`] takes datagrams
//! from known peers only, decodes them whole ([`wire`]) and inserts each record into
//! connection tracking where this host has no entry for the flow (`dataplane::sync::Import`:
//! a local entry always wins). Backend identities (index, epoch) are the same on every
//! host, whose state is the fleet's. Nothing here takes the controller's lock.

pub mod counters;
pub mod peers;
pub mod receive;
pub mod send;
pub mod wire;

use std::{net::SocketAddr, sync::Arc};

use tokio::{net::UdpSocket, task::JoinHandle};

use crate::{
    api::SyncStatus,
    dataplane::{
        bpffs::Layout,
        sync::{Import, Overflows, Ring},
        DataPlaneError,
    },
    fleet::member::Member,
};

use counters::Counters;
use peers::Peers;

/// A daemon's flow-state sync: its address, its peers and its counters.
pub struct Exchange {
    /// The address it listens on and sends from (`--sync-listen`), which it publishes.
    pub listen: SocketAddr,
    /// The hosts it sends to and takes records from.
    pub peers: Arc<Peers>,
    /// What it did.
    pub counters: Arc<Counters>,
    overflows: Overflows,
}

impl Exchange {
    /// Starts the sync of the data plane pinned at `pins` on the bound `socket`, with the
    /// peers that `member`'s fleet lists: the tasks that send, receive and follow the
    /// peers, which run until aborted.
    pub fn start(
        socket: UdpSocket,
        pins: &Layout,
        member: Arc<Member>,
    ) -> Result<(Arc<Self>, Vec<JoinHandle<()>>), DataPlaneError> {
        let maps = pins.maps();
        let ring = Ring::open(&maps)?;
        let import = Import::open(&maps)?;
        let listen = socket.local_addr().map_err(|source| DataPlaneError::Io {
            context: "read the sync socket's address".into(),
            source,
        })?;
        let exchange = Arc::new(Self {
            listen,
            peers: Arc::new(Peers::default()),
            counters: Arc::new(Counters::default()),
            overflows: Overflows::open(&maps)?,
        });
        let socket = Arc::new(socket);
        let (peers, counters) = (exchange.peers.clone(), exchange.counters.clone());
        let tasks = vec![
            tokio::spawn(send::run(
                ring,
                socket.clone(),
                peers.clone(),
                counters.clone(),
            )),
            tokio::spawn(receive::run(socket, peers.clone(), import, counters)),
            tokio::spawn(peers::follow(member, peers, peers::FOLLOW_EVERY)),
        ];
        Ok((exchange, tasks))
    }

    /// Its counters now, with the records the data plane lost to a full ring buffer (0
    /// when they do not read).
    pub fn status(&self) -> SyncStatus {
        let overflows = self.overflows.count().unwrap_or_else(|e| {
            tracing::debug!("cannot read the sync ring's overflows: {e}");
            0
        });
        self.counters
            .status(self.listen, self.peers.list().len(), overflows)
    }
}
