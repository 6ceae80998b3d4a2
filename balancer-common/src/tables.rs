//! A service's tables as the data plane holds them: one array map per service (an inner
//! map of `TABLES`, sized for the service), made of 64-byte [`Chunk`]s.
//!
//! Chunk 0 is the [`TablesHeader`]; chunks `1..=CELL_CHUNKS` hold the split cells, one
//! byte each, 64 to a chunk; then each group's Maglev ring, `ring_chunks` chunks of 16
//! backend indices each. A new flow reads three chunks: the header, its cell's and its
//! ring slot's. The program and the daemon find a cell or a slot with the same functions
//! ([`cell_position`], [`slot_position`]).

use bytemuck::{Pod, Zeroable};

use crate::SPLIT_CELLS;

/// The flags of every service's tables map, the program's template included:
/// `BPF_F_INNER_MAP` (each map's number of chunks is its own) and `BPF_F_MMAPABLE` (the
/// daemon fills a new map in place).
pub const TABLES_MAP_FLAGS: u32 = BPF_F_INNER_MAP | BPF_F_MMAPABLE;
/// The kernel's `BPF_F_MMAPABLE` map flag.
const BPF_F_MMAPABLE: u32 = 1 << 10;
/// The kernel's `BPF_F_INNER_MAP` map flag.
const BPF_F_INNER_MAP: u32 = 1 << 12;

/// Bytes of one chunk, the value of a tables map.
pub const CHUNK_BYTES: usize = 64;
/// Backend indices (ring slots) per chunk.
pub const CHUNK_SLOTS: u32 = (CHUNK_BYTES / 4) as u32;
/// Chunks that hold the split cells (one byte per cell).
pub const CELL_CHUNKS: u32 = SPLIT_CELLS.div_ceil(CHUNK_BYTES) as u32;
/// The chunk of the first group's ring.
pub const FIRST_RING_CHUNK: u32 = 1 + CELL_CHUNKS;

/// One value of a service's tables map: 64 bytes, read as the header, as 64 split cells or
/// as 16 ring slots depending on its index.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Chunk {
    /// The chunk's bytes as 32-bit words (ring slots: backend indices).
    pub words: [u32; CHUNK_SLOTS as usize],
}

impl Default for Chunk {
    fn default() -> Self {
        Self::zeroed()
    }
}

/// Chunk 0 of a service's tables: how to read the rest, and how to hash.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct TablesHeader {
    /// Number of used slots in each group ring (a prime).
    pub ring_size: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Seed of the flow hash.
    pub seed: u64,
    /// Number of split cells in use, [`SPLIT_CELLS`]. Read from the map rather than
    /// compiled in, so the bounds check before the cell lookup stays visible to the verifier.
    pub cells: u32,
    /// Number of group rings.
    pub groups: u32,
    /// Chunks per group ring: `ring_size` slots, [`CHUNK_SLOTS`] to a chunk.
    pub ring_chunks: u32,
    /// The generation (0 or 1) of these tables: the client pins of the service that they
    /// use are those of this generation (`ClientPinKey::generation`).
    pub generation: u32,
    /// Reserved, zero.
    pub reserved: [u32; 8],
}

const _: () = assert!(core::mem::size_of::<TablesHeader>() == CHUNK_BYTES);
const _: () = assert!(core::mem::size_of::<Chunk>() == CHUNK_BYTES);
const _: () = assert!(core::mem::align_of::<TablesHeader>() == core::mem::align_of::<Chunk>());

impl Chunk {
    /// The chunk read as the header (chunk 0).
    #[inline(always)]
    pub fn header(&self) -> &TablesHeader {
        bytemuck::cast_ref(self)
    }

    /// The chunk read as split cells: the group of cell `byte` (below [`CHUNK_BYTES`]).
    #[inline(always)]
    pub fn cell(&self, byte: u32) -> Option<u8> {
        bytemuck::cast_ref::<Chunk, [u8; CHUNK_BYTES]>(self)
            .get(byte as usize)
            .copied()
    }

    /// The chunk read as ring slots: the backend index of slot `word` (below
    /// [`CHUNK_SLOTS`]).
    #[inline(always)]
    pub fn slot(&self, word: u32) -> Option<u32> {
        self.words.get(word as usize).copied()
    }

    /// The header as a chunk.
    pub fn from_header(header: &TablesHeader) -> Self {
        bytemuck::cast(*header)
    }

    /// The split cells' bytes of this chunk, to write.
    pub fn cells_mut(&mut self) -> &mut [u8; CHUNK_BYTES] {
        bytemuck::cast_mut(self)
    }
}

/// Chunks per group ring of `ring_size` slots.
#[inline(always)]
pub const fn ring_chunks(ring_size: u32) -> u32 {
    ring_size.div_ceil(CHUNK_SLOTS)
}

/// Entries of a tables map with `groups` rings of `ring_size` slots.
pub const fn tables_chunks(groups: u32, ring_size: u32) -> u32 {
    FIRST_RING_CHUNK + groups * ring_chunks(ring_size)
}

/// (chunk, byte in it) of split cell `cell`.
#[inline(always)]
pub const fn cell_position(cell: u32) -> (u32, u32) {
    (1 + cell / CHUNK_BYTES as u32, cell % CHUNK_BYTES as u32)
}

/// (chunk, word in it) of slot `slot` of group `group`'s ring, rings of `ring_chunks`
/// chunks each.
#[inline(always)]
pub const fn slot_position(ring_chunks: u32, group: u32, slot: u32) -> (u32, u32) {
    (
        FIRST_RING_CHUNK + group * ring_chunks + slot / CHUNK_SLOTS,
        slot % CHUNK_SLOTS,
    )
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    /// Every cell and every ring slot has a place of its own, inside the map's chunks.
    #[test]
    fn positions_are_distinct_and_inside_the_map() {
        let (groups, ring_size) = (3, 61);
        let chunks = tables_chunks(groups, ring_size);
        let mut seen = std::collections::BTreeSet::new();
        for cell in 0..SPLIT_CELLS as u32 {
            let (chunk, byte) = cell_position(cell);
            assert!((1..FIRST_RING_CHUNK).contains(&chunk) && byte < CHUNK_BYTES as u32);
            assert!(seen.insert((chunk, byte * 8)), "cell {cell} shares a place");
        }
        for group in 0..groups {
            for slot in 0..ring_size {
                let (chunk, word) = slot_position(ring_chunks(ring_size), group, slot);
                assert!((FIRST_RING_CHUNK..chunks).contains(&chunk) && word < CHUNK_SLOTS);
                assert!(
                    seen.insert((chunk, word * 32)),
                    "slot {slot} shares a place"
                );
            }
        }
    }

    /// The header and cells written through a chunk read back through it.
    #[test]
    fn a_chunk_reads_back_what_was_written() {
        let header = TablesHeader {
            ring_size: 65537,
            flags: 3,
            seed: 0x0123_4567_89ab_cdef,
            cells: 10_000,
            groups: 16,
            ring_chunks: 4097,
            generation: 1,
            reserved: [0; 8],
        };
        assert_eq!(*Chunk::from_header(&header).header(), header);
        let mut chunk = Chunk::zeroed();
        chunk.cells_mut()[5] = 7;
        chunk.words[15] = 42;
        assert_eq!(chunk.cell(5), Some(7));
        assert_eq!(chunk.cell(4), Some(0));
        assert_eq!(chunk.cell(64), None);
        assert_eq!(chunk.slot(15), Some(42));
        assert_eq!(chunk.slot(16), None);
    }
}
