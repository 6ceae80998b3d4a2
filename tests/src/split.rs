//! The split the daemon stored, read from its state file, and the group it gives a client
//! under client affinity: the expectation that namespace tests compare what clients reach
//! with, computed from the flow hash like the data plane does.

use std::{net::IpAddr, path::Path};

use anyhow::{Context, Result};
use balancer_common::{flow_hash, FlowKey, SPLIT_CELLS};
use balancer_user::vip::{addr_bytes, family};

/// One service's split as stored: its group names and each cell's group.
pub struct StoredSplit {
    groups: Vec<String>,
    cells: Vec<u8>,
}

impl StoredSplit {
    /// Reads the split of `service` from the state file at `path`.
    pub fn load(path: &Path, service: &str) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let state: balancer_user::state::State = serde_json::from_str(&text)?;
        let service = state.service(service)?;
        Ok(Self {
            groups: service.groups.iter().map(|g| g.name.clone()).collect(),
            cells: service.split_table()?.cells().to_vec(),
        })
    }

    /// The group `client`'s new flows get with client affinity and the daemon's default
    /// hash seed (0): the client address alone picks the cell.
    pub fn group_of(&self, client: IpAddr) -> Result<&str> {
        let key = FlowKey {
            src: addr_bytes(client),
            family: family(client),
            ..FlowKey::default()
        };
        let cell = flow_hash(&key.client_only(), 0)
            .cell(SPLIT_CELLS as u32)
            .context("no cells")?;
        let group = self.cells[cell as usize];
        self.groups
            .get(usize::from(group))
            .map(String::as_str)
            .with_context(|| format!("cell {cell} has no group"))
    }
}
