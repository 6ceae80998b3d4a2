//! The pending table (flows that sent only their first packet) mapped into the daemon's
//! memory: the program creates it `BPF_F_MMAPABLE`, so the daemon reads and empties slots in
//! place, without a system call per slot.

use aya::maps::{Array, MapData};
use balancer_common::{pending_check, pending_hash, PendingSlot};
use memmap2::MmapMut;

use super::{mapping, DataPlaneError};

/// The pending table's slots, shared with the program.
pub(super) struct PendingTable {
    /// Keeps the map (and so the mapping's object) alive.
    _map: Array<MapData, PendingSlot>,
    slots: MmapMut,
    len: usize,
}

impl PendingTable {
    /// Maps the pending table of `map` into memory.
    pub(super) fn map(map: Array<MapData, PendingSlot>) -> Result<Self, DataPlaneError> {
        let len = map.len() as usize;
        let slots = mapping::shared(&map, len, "map the pending table into memory")?;
        Ok(Self {
            _map: map,
            slots,
            len,
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
            let slot = unsafe { std::ptr::read_volatile(self.slot(index)) };
            (slot.check != 0 && slot.check == pending_check(pending_hash(&slot.key), &slot.state))
                .then_some((index, slot))
        })
    }

    /// Where slot `index` is in the mapping (`index` < `len`, checked by the callers).
    fn slot(&self, index: usize) -> *mut PendingSlot {
        self.slots
            .as_ptr()
            .cast::<PendingSlot>()
            .cast_mut()
            .wrapping_add(index)
    }

    /// Empties slot `index` (its check word to 0): its flow's next packet is balanced afresh.
    pub(super) fn empty(&mut self, index: usize) {
        assert!(index < self.len, "pending slot {index} of {}", self.len);
        // SAFETY: index < len; an aligned 8-byte store into the shared mapping.
        unsafe { std::ptr::write_volatile(std::ptr::addr_of_mut!((*self.slot(index)).check), 0) };
    }
}
