//! nftables DNAT load balancing in the LB's namespace: a prerouting rule per protocol maps
//! a jhash of the client's address and port onto the two backends. Backends then see their
//! own address as destination and answer through the LB, whose conntrack undoes the NAT.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use balancer_tests::netns;

use crate::end_to_end::{
    generator::FLOOD_PORT,
    responder::TCP_PORT,
    topology::{backend_addr, LB_NS, VIP},
};

/// Name of the nftables table, unique to this section.
const TABLE: &str = "bbe2e";

/// The DNAT rule for `protocol` to `port`.
fn rule(protocol: &str, port: u16) -> String {
    format!(
        "ip daddr {VIP} {protocol} dport {port} dnat to jhash ip saddr . {protocol} sport mod 2 \
         map {{ 0 : {}, 1 : {} }}",
        backend_addr(0),
        backend_addr(1)
    )
}

/// The configuration, for the report.
pub fn describe() -> String {
    format!(
        "table `ip {TABLE}`, nat chain on prerouting: `{}` (and the same for `tcp dport \
         {TCP_PORT}`); `ip_forward=1`",
        rule("udp", FLOOD_PORT)
    )
}

/// The table, deleted on drop.
pub struct Table {
    file: PathBuf,
}

impl Table {
    /// Adds the table (its ruleset file goes under `scratch`).
    pub fn add(scratch: &Path) -> Result<Self> {
        let ruleset = format!(
            "table ip {TABLE} {{\n  chain prerouting {{\n    type nat hook prerouting priority \
             dstnat; policy accept;\n    {}\n    {}\n  }}\n}}\n",
            rule("udp", FLOOD_PORT),
            rule("tcp", TCP_PORT)
        );
        let file = scratch.join("nftables.conf");
        std::fs::write(&file, ruleset)?;
        let table = Table { file };
        let path = table.file.to_str().context("non-UTF-8 path")?;
        netns::run(LB_NS, &["nft", "-f", path])?;
        Ok(table)
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        if let Err(error) = netns::run(LB_NS, &["nft", "delete", "table", "ip", TABLE]) {
            eprintln!("warning: {error:#}");
        }
        std::fs::remove_file(&self.file).ok();
    }
}
