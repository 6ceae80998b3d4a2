//! The data plane's side of the fleet's flow-state sync, each a handle of its own opened
//! from its pin, so the sync tasks never take the controller's lock: the ring buffer the
//! program writes a record of each new connection-tracking entry into ([`Ring`]), and
//! connection tracking as peers' records are inserted into it ([`Import`]), and the count
//! of records the program lost to a full ring ([`Overflows`]).

use std::{
    os::fd::{AsRawFd, RawFd},
    path::Path,
};

use aya::maps::{HashMap, Map, MapData, PerCpuArray, RingBuf};
use balancer_common::{FlowKey, FlowRecord, FlowState, RECORD_REOPENED, SYNC_STAT_OVERFLOWS};

use super::{map_err, DataPlaneError};

/// `BPF_NOEXIST`: insert only where the key has no entry.
const BPF_NOEXIST: u64 = 1;
/// `BPF_ANY`: insert or replace.
const BPF_ANY: u64 = 0;

/// Opens the pinned map `name` of the maps directory `maps`.
fn open(maps: &Path, name: &str) -> Result<MapData, DataPlaneError> {
    let pin = maps.join(name);
    MapData::from_pin(&pin).map_err(|source| DataPlaneError::Map {
        context: format!("open {}", pin.display()),
        source,
    })
}

/// The ring buffer of new flow records (`SYNC_RING`), read by one task.
pub struct Ring {
    ring: RingBuf<MapData>,
}

impl Ring {
    /// Opens the pinned ring buffer of the maps directory `maps`.
    pub fn open(maps: &Path) -> Result<Self, DataPlaneError> {
        let ring = RingBuf::try_from(Map::RingBuf(open(maps, "SYNC_RING")?))
            .map_err(map_err("open pinned SYNC_RING"))?;
        Ok(Self { ring })
    }
}

/// The records waiting in the ring: `None` once it is empty (more may come later).
impl Iterator for Ring {
    type Item = FlowRecord;

    fn next(&mut self) -> Option<FlowRecord> {
        loop {
            let item = self.ring.next()?;
            // Every record is one `FlowRecord`; anything else would be another program's.
            if item.len() == size_of::<FlowRecord>() {
                return Some(bytemuck::pod_read_unaligned(&item));
            }
        }
    }
}

impl AsRawFd for Ring {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

/// What inserting a peer's record did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// The flow is now tracked here with the peer's backend.
    New,
    /// This host already tracks the flow: its own entry wins.
    Kept,
}

/// Connection tracking as peers' records are inserted into it.
pub struct Import {
    conntrack: HashMap<MapData, FlowKey, FlowState>,
}

impl Import {
    /// Opens the pinned maps of the maps directory `maps`.
    pub fn open(maps: &Path) -> Result<Self, DataPlaneError> {
        let conntrack = HashMap::try_from(Map::LruHashMap(open(maps, "CONNTRACK")?))
            .map_err(map_err("open pinned CONNTRACK"))?;
        Ok(Self { conntrack })
    }

    /// Inserts a peer's record where this host tracks no entry for its flow (a record of a
    /// reopened 5-tuple replaces the entry of the closed flow). The entry has no last-seen
    /// time: it counts as an active flow here only once a packet of it came here.
    pub fn insert(&mut self, record: &FlowRecord) -> Result<Inserted, DataPlaneError> {
        let state = FlowState {
            backend: record.backend,
            epoch: record.epoch,
            ..FlowState::default()
        };
        let flags = match record.flags & RECORD_REOPENED {
            0 => BPF_NOEXIST,
            _ => BPF_ANY,
        };
        match self.conntrack.insert(record.key, state, flags) {
            Ok(()) => Ok(Inserted::New),
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::EEXIST) =>
            {
                Ok(Inserted::Kept)
            }
            Err(source) => Err(DataPlaneError::Map {
                context: "insert a peer's flow record into CONNTRACK".into(),
                source,
            }),
        }
    }
}

/// The count of records the program lost because the ring buffer was full.
pub struct Overflows {
    stats: PerCpuArray<MapData, u64>,
}

impl Overflows {
    /// Opens the pinned sync counters of the maps directory `maps`.
    pub fn open(maps: &Path) -> Result<Self, DataPlaneError> {
        let stats = PerCpuArray::try_from(Map::PerCpuArray(open(maps, "SYNC_STATS")?))
            .map_err(map_err("open pinned SYNC_STATS"))?;
        Ok(Self { stats })
    }

    /// The records lost so far, summed over the CPUs.
    pub fn count(&self) -> Result<u64, DataPlaneError> {
        let values = self
            .stats
            .get(&SYNC_STAT_OVERFLOWS, 0)
            .map_err(map_err("read SYNC_STATS"))?;
        Ok(values.iter().sum())
    }
}
