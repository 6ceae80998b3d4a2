//! A service's tables map (`balancer_common::tables`): the image encoded into chunks, and
//! the map made for it — an array sized for the service, filled through a memory mapping
//! in one copy, before it is put in `TABLES`.

use aya::maps::{Array, MapData};
use balancer_common::{
    cell_position, ring_chunks, slot_position, tables_chunks, Chunk, TablesHeader, NONE,
    TABLES_MAP_FLAGS,
};

use super::{map_err, mapping, DataPlaneError, ServiceImage};

/// The chunks of `image` as generation `generation`: header, split cells, then each
/// group's ring of `image.ring_size` slots (slots past it in a ring's last chunk: [`NONE`]).
pub(crate) fn encode(image: &ServiceImage, generation: u32) -> Vec<Chunk> {
    let groups = image.rings.len() as u32;
    let per_ring = ring_chunks(image.ring_size);
    let mut chunks = vec![Chunk::default(); tables_chunks(groups, image.ring_size) as usize];
    chunks[0] = Chunk::from_header(&TablesHeader {
        ring_size: image.ring_size,
        flags: image.flags,
        seed: image.seed,
        cells: image.cells.len() as u32,
        groups,
        ring_chunks: per_ring,
        generation,
        reserved: [0; 8],
    });
    for (cell, &group) in image.cells.iter().enumerate() {
        let (chunk, byte) = cell_position(cell as u32);
        chunks[chunk as usize].cells_mut()[byte as usize] = group;
    }
    for (group, ring) in image.rings.iter().enumerate() {
        let first = slot_position(per_ring, group as u32, 0).0 as usize;
        for chunk in &mut chunks[first..first + per_ring as usize] {
            chunk.words.fill(NONE);
        }
        for (slot, &index) in ring.iter().enumerate() {
            let (chunk, word) = slot_position(per_ring, group as u32, slot as u32);
            chunks[chunk as usize].words[word as usize] = index;
        }
    }
    chunks
}

/// A new tables map holding `chunks`, not yet in `TABLES`.
pub(crate) fn create(chunks: &[Chunk]) -> Result<Array<MapData, Chunk>, DataPlaneError> {
    let map = Array::<MapData, Chunk>::create(chunks.len() as u32, TABLES_MAP_FLAGS)
        .map_err(map_err("create a service's tables map"))?;
    let mut values = mapping::shared(&map, chunks.len(), "fill a service's tables map")?;
    // Nothing else writes the new map: no program can reach it yet.
    values.copy_from_slice(bytemuck::cast_slice(chunks));
    Ok(map)
}

/// The header of a tables map (its chunk 0).
pub(crate) fn header(map: &Array<MapData, Chunk>) -> Result<TablesHeader, DataPlaneError> {
    Ok(*map
        .get(&0, 0)
        .map_err(map_err("read a service's tables header"))?
        .header())
}

#[cfg(test)]
mod tests {
    use balancer_common::{FIRST_RING_CHUNK, SPLIT_CELLS};

    use super::*;

    fn image(groups: usize, ring_size: u32) -> ServiceImage {
        ServiceImage {
            ring_size,
            flags: 2,
            seed: 77,
            cells: (0..SPLIT_CELLS).map(|c| (c % groups) as u8).collect(),
            rings: (0..groups)
                .map(|g| (0..ring_size).map(|s| g as u32 * 1000 + s).collect())
                .collect(),
            client_pins: Vec::new(),
        }
    }

    /// Every cell and slot of the image reads back from the chunks where the program looks
    /// for it, the header says how to read them, and a ring's last chunk ends in `NONE`.
    #[test]
    fn the_chunks_hold_the_image_where_the_program_reads_it() {
        let (groups, ring_size) = (3, 61);
        let image = image(groups, ring_size);
        let chunks = encode(&image, 1);
        assert_eq!(chunks.len(), (FIRST_RING_CHUNK + 3 * 4) as usize);
        let header = *chunks[0].header();
        assert_eq!(
            (header.ring_size, header.flags, header.seed, header.cells),
            (61, 2, 77, SPLIT_CELLS as u32)
        );
        assert_eq!(
            (header.groups, header.ring_chunks, header.generation),
            (3, 4, 1)
        );
        for (cell, &group) in image.cells.iter().enumerate() {
            let (chunk, byte) = cell_position(cell as u32);
            assert_eq!(
                chunks[chunk as usize].cell(byte),
                Some(group),
                "cell {cell}"
            );
        }
        for (group, ring) in image.rings.iter().enumerate() {
            for (slot, &index) in ring.iter().enumerate() {
                let (chunk, word) = slot_position(4, group as u32, slot as u32);
                assert_eq!(chunks[chunk as usize].slot(word), Some(index));
            }
            let (last, word) = slot_position(4, group as u32, ring_size - 1);
            assert!(chunks[last as usize].words[word as usize + 1..]
                .iter()
                .all(|&w| w == NONE));
        }
    }

    /// The map grows with the service: its rings, of its own table size, not the largest.
    #[test]
    fn a_small_service_makes_a_small_map() {
        let small = encode(&image(1, 251), 0).len();
        let large = encode(&image(16, 65537), 0).len();
        assert_eq!(small, (FIRST_RING_CHUNK + 16) as usize);
        assert_eq!(large, (FIRST_RING_CHUNK + 16 * 4097) as usize);
    }
}
