//! The pending table (flows that sent only their first packet) mapped into the daemon's
//! memory: the program creates it `BPF_F_MMAPABLE`, so the daemon reads and empties slots in
//! place, without a system call per slot.

use std::{
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
};

use aya::maps::{Array, IterableMap, MapData};
use balancer_common::{pending_check, pending_hash, PendingSlot};

use super::DataPlaneError;

/// The pending table's slots, shared with the program.
pub(super) struct PendingTable {
    /// Keeps the map (and so the mapping's object) alive.
    _map: Array<MapData, PendingSlot>,
    slots: NonNull<PendingSlot>,
    len: usize,
    bytes: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; every access goes
// through volatile reads and writes of whole words.
unsafe impl Send for PendingTable {}

// SAFETY: `&self` only reads (volatile copies, each checked); writes need `&mut self`.
unsafe impl Sync for PendingTable {}

impl PendingTable {
    /// Maps the pending table of `map` into memory.
    pub(super) fn map(map: Array<MapData, PendingSlot>) -> Result<Self, DataPlaneError> {
        let len = map.len() as usize;
        let page = page_size();
        let bytes = (len * size_of::<PendingSlot>()).div_ceil(page) * page;
        let fd = IterableMap::map(&map).fd().as_fd().as_raw_fd();
        // SAFETY: a shared read-write mapping of a BPF_F_MMAPABLE array's fd, of the
        // array's size rounded up to pages; checked for failure below.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(DataPlaneError::Io {
                context: "map the pending table into memory".into(),
                source: std::io::Error::last_os_error(),
            });
        }
        let slots = NonNull::new(address.cast()).ok_or_else(|| DataPlaneError::Io {
            context: "map the pending table into memory".into(),
            source: std::io::Error::other("mmap returned a null address"),
        })?;
        Ok(Self {
            _map: map,
            slots,
            len,
            bytes,
        })
    }

    /// How many slots the table has.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The slots that hold a flow whole (their check word matches), with their indices.
    pub(super) fn flows(&self) -> impl Iterator<Item = (usize, PendingSlot)> + '_ {
        (0..self.len).filter_map(|index| {
            // SAFETY: index < len slots of the mapping; a volatile copy of plain data that
            // the program may be writing meanwhile (a torn copy fails the check).
            let slot = unsafe { std::ptr::read_volatile(self.slots.as_ptr().add(index)) };
            (slot.check != 0 && slot.check == pending_check(pending_hash(&slot.key), &slot.state))
                .then_some((index, slot))
        })
    }

    /// Empties slot `index` (its check word to 0): its flow's next packet is balanced afresh.
    pub(super) fn empty(&mut self, index: usize) {
        assert!(index < self.len, "pending slot {index} of {}", self.len);
        // SAFETY: index < len; an aligned 8-byte store into the shared mapping.
        unsafe {
            std::ptr::write_volatile(
                std::ptr::addr_of_mut!((*self.slots.as_ptr().add(index)).check),
                0,
            )
        };
    }
}

impl Drop for PendingTable {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`.
        unsafe { libc::munmap(self.slots.as_ptr().cast(), self.bytes) };
    }
}

/// The memory page size.
fn page_size() -> usize {
    // SAFETY: plain libc call.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}
