//! nftables DNAT load balancing in the LB's namespace: a prerouting rule per protocol maps
//! a jhash of the client's address and port onto the backends. Backends then see their
//! own address as destination and answer through the LB, whose conntrack undoes the NAT.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use balancer_tests::netns;

use crate::end_to_end::{generator::FLOOD_PORT, responder::TCP_PORT};

/// The DNAT of one topology: where, under which table name, from which VIP to which
/// backends.
#[derive(Clone, Debug)]
pub struct Dnat {
    /// The LB's namespace.
    pub ns: String,
    /// The table's name, unique to the section.
    pub table: String,
    /// The VIP.
    pub vip: Ipv4Addr,
    /// The backends.
    pub backends: Vec<Ipv4Addr>,
}

impl Dnat {
    /// The DNAT rule for `protocol` to `port`.
    fn rule(&self, protocol: &str, port: u16) -> String {
        let map: Vec<String> = self
            .backends
            .iter()
            .enumerate()
            .map(|(i, addr)| format!("{i} : {addr}"))
            .collect();
        format!(
            "ip daddr {} {protocol} dport {port} dnat to jhash ip saddr . {protocol} sport mod {} \
             map {{ {} }}",
            self.vip,
            self.backends.len(),
            map.join(", ")
        )
    }

    /// The configuration, for the report.
    pub fn describe(&self) -> String {
        format!(
            "table `ip {}`, nat chain on prerouting: `{}` (and the same for `tcp dport \
             {TCP_PORT}`); `ip_forward=1`",
            self.table,
            self.rule("udp", FLOOD_PORT)
        )
    }
}

/// The table, deleted on drop.
pub struct Table {
    dnat: Dnat,
    file: PathBuf,
}

impl Table {
    /// Adds the table of `dnat` (its ruleset file goes under `scratch`).
    pub fn add(dnat: &Dnat, scratch: &Path) -> Result<Self> {
        let ruleset = format!(
            "table ip {} {{\n  chain prerouting {{\n    type nat hook prerouting priority \
             dstnat; policy accept;\n    {}\n    {}\n  }}\n}}\n",
            dnat.table,
            dnat.rule("udp", FLOOD_PORT),
            dnat.rule("tcp", TCP_PORT)
        );
        let file = scratch.join("nftables.conf");
        std::fs::write(&file, ruleset)?;
        let table = Table {
            dnat: dnat.clone(),
            file,
        };
        let path = table.file.to_str().context("non-UTF-8 path")?;
        netns::run(&dnat.ns, &["nft", "-f", path])?;
        Ok(table)
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        let (ns, table) = (&self.dnat.ns, &self.dnat.table);
        if let Err(error) = netns::run(ns, &["nft", "delete", "table", "ip", table]) {
            eprintln!("warning: {error:#}");
        }
        std::fs::remove_file(&self.file).ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_maps_a_hash_onto_every_backend() {
        let dnat = Dnat {
            ns: "lb".into(),
            table: "t".into(),
            vip: Ipv4Addr::new(198, 19, 10, 1),
            backends: vec![Ipv4Addr::new(198, 18, 11, 2), Ipv4Addr::new(198, 18, 12, 2)],
        };
        assert_eq!(
            dnat.rule("udp", 9),
            "ip daddr 198.19.10.1 udp dport 9 dnat to jhash ip saddr . udp sport mod 2 map \
             { 0 : 198.18.11.2, 1 : 198.18.12.2 }"
        );
    }
}
