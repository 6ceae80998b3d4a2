//! The maps of `nat` backends: the destination each one's packets are rewritten to
//! (`REWRITES`, by backend index), and the VIP its replies are rewritten to come from
//! (`REPLIES`, by the backend's endpoint), with the pre-filter bit of each reply port.

use std::collections::BTreeSet;

use balancer_common::{reply_port_bit, Endpoint, Reply, ReplyStats, Rewrite};

use super::{map_err, missing, DataPlane, DataPlaneError};

impl DataPlane {
    /// Writes the rewrite of a `nat` backend, before the backend entry that names the mode.
    pub fn set_rewrite(&mut self, index: u32, rewrite: &Rewrite) -> Result<(), DataPlaneError> {
        self.rewrites
            .set(index, rewrite, 0)
            .map_err(map_err("write REWRITES"))
    }

    /// The rewrite entry of a backend index as the data plane has it.
    pub fn rewrite(&self, index: u32) -> Result<Rewrite, DataPlaneError> {
        self.rewrites
            .get(&index, 0)
            .map_err(map_err("read REWRITES"))
    }

    /// Rewrites the replies from `backend` as `reply` says (to come from its VIP, counted
    /// for its backend index), and lets packets from the backend's port through the
    /// pre-filter.
    pub fn set_reply(&mut self, backend: &Endpoint, reply: &Reply) -> Result<(), DataPlaneError> {
        self.replies
            .insert(backend, reply, 0)
            .map_err(map_err("write REPLIES"))?;
        self.mark_port(
            u16::from_be(backend.port_be),
            reply_port_bit(backend.proto),
            true,
        )
    }

    /// Stops rewriting the replies from `backend`; its port leaves the pre-filter when no
    /// other `nat` backend answers from it.
    pub fn remove_reply(&mut self, backend: &Endpoint) -> Result<(), DataPlaneError> {
        match self.replies.remove(backend) {
            Err(e) if !missing(&e) => return Err(map_err("remove from REPLIES")(e)),
            _ => {}
        }
        let shared: BTreeSet<(u16, u8)> = self
            .replies()?
            .iter()
            .map(|(other, _)| (other.port_be, other.proto))
            .collect();
        if shared.contains(&(backend.port_be, backend.proto)) {
            return Ok(());
        }
        self.mark_port(
            u16::from_be(backend.port_be),
            reply_port_bit(backend.proto),
            false,
        )
    }

    /// What the replies of backend index `index` said, summed over CPUs.
    pub fn reply_counters(&self, index: u32) -> Result<ReplyStats, DataPlaneError> {
        let values = self
            .reply_stats
            .get(&index, 0)
            .map_err(map_err("read REPLY_STATS"))?;
        Ok(values.iter().fold(ReplyStats::default(), |mut sum, cpu| {
            sum.packets += cpu.packets;
            sum.bytes += cpu.bytes;
            sum.resets += cpu.resets;
            sum.handshakes += cpu.handshakes;
            sum.handshake_ns += cpu.handshake_ns;
            for (total, count) in sum.buckets.iter_mut().zip(cpu.buckets) {
                *total += count;
            }
            sum
        }))
    }

    /// Every backend endpoint whose replies are rewritten, with its reply entry.
    pub fn replies(&self) -> Result<Vec<(Endpoint, Reply)>, DataPlaneError> {
        self.replies
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err("list REPLIES"))
    }
}
