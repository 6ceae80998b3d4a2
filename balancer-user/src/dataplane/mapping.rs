//! Shared memory mappings of `BPF_F_MMAPABLE` arrays: the daemon reads and writes their
//! values in place, without a system call per value.

use std::os::fd::{AsFd, AsRawFd};

use aya::maps::{Array, IterableMap, MapData};
use memmap2::{MmapMut, MmapOptions};

use super::DataPlaneError;

/// A shared read-write mapping of `map`'s values (`BPF_F_MMAPABLE`), `len` values of `V`
/// long; unmapped when dropped. `context` names it in the error.
pub(super) fn shared<V: aya::Pod>(
    map: &Array<MapData, V>,
    len: usize,
    context: &str,
) -> Result<MmapMut, DataPlaneError> {
    let fd = IterableMap::map(map).fd().as_fd().as_raw_fd();
    // SAFETY: a shared mapping of a BPF array's values: plain data that only the program
    // and this daemon write, every access through it a copy of whole values or words.
    unsafe { MmapOptions::new().len(len * size_of::<V>()).map_mut(fd) }.map_err(|source| {
        DataPlaneError::Io {
            context: context.into(),
            source,
        }
    })
}
