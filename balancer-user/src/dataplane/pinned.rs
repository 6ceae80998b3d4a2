//! What a pinned data plane holds, read without loading or attaching anything: whether it
//! serves VIPs, and the capacity its connection tracking was created with.

use std::path::Path;

use aya::maps::{HashMap, Map, MapData};
use balancer_common::{VipInfo, VipKey};

use super::{bpffs::Layout, map_err, DataPlaneError};

/// How many VIPs the data plane pinned at `layout` serves (0 when nothing is pinned).
pub fn vip_count(layout: &Layout) -> Result<usize, DataPlaneError> {
    let Some(data) = open(&layout.maps().join("VIPS"))? else {
        return Ok(0);
    };
    let vips: HashMap<MapData, VipKey, VipInfo> =
        HashMap::try_from(Map::HashMap(data)).map_err(map_err("open the pinned VIPS"))?;
    let mut count = 0;
    for key in vips.keys() {
        match key {
            Ok(_) => count += 1,
            // Removed while walking: not there.
            Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err("list the pinned VIPS")(e)),
        }
    }
    Ok(count)
}

/// How many flows the pinned connection tracking holds at most, if it is pinned.
pub fn conntrack_capacity(layout: &Layout) -> Result<Option<u32>, DataPlaneError> {
    let Some(data) = open(&layout.maps().join("CONNTRACK"))? else {
        return Ok(None);
    };
    let info = data
        .info()
        .map_err(map_err("read the pinned CONNTRACK's size"))?;
    Ok(Some(info.max_entries()))
}

fn open(pin: &Path) -> Result<Option<MapData>, DataPlaneError> {
    match pin.try_exists() {
        Ok(false) => return Ok(None),
        Ok(true) => {}
        Err(source) => {
            return Err(DataPlaneError::Io {
                context: format!("look for {}", pin.display()),
                source,
            })
        }
    }
    MapData::from_pin(pin)
        .map(Some)
        .map_err(|source| DataPlaneError::Map {
            context: format!("open {}", pin.display()),
            source,
        })
}
