//! The sections of the report, and `--only` to run some of them.

use anyhow::{bail, Result};

/// A section of the report, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// Per-packet cost with BPF_PROG_TEST_RUN, every forwarding mode.
    PerPacket,
    /// End-to-end forwarding through veth namespaces: DSR, nftables DNAT, HAProxy.
    EndToEnd,
    /// `nat` against nftables DNAT on the routed lab.
    Nat,
    /// Lookup table build times and disruption.
    Tables,
    /// The control plane: CLI changes, table swaps, metrics scrape, live view.
    ControlPlane,
    /// The data plane's maps and their memory.
    Memory,
    /// Flow-state sync between two LB hosts: its cost per new flow, its delay, and new
    /// connections/s with and without it.
    Sync,
}

impl Section {
    /// Every section, in report order.
    pub const ALL: [Section; 7] = [
        Section::PerPacket,
        Section::EndToEnd,
        Section::Nat,
        Section::Tables,
        Section::ControlPlane,
        Section::Memory,
        Section::Sync,
    ];

    /// The name `--only` takes.
    pub fn name(self) -> &'static str {
        match self {
            Section::PerPacket => "per-packet",
            Section::EndToEnd => "end-to-end",
            Section::Nat => "nat",
            Section::Tables => "tables",
            Section::ControlPlane => "control-plane",
            Section::Memory => "memory",
            Section::Sync => "sync",
        }
    }

    /// The sections named in `list` (comma-separated names), in report order.
    pub fn parse_list(list: &str) -> Result<Vec<Section>> {
        let mut chosen = Vec::new();
        for name in list.split(',').map(str::trim) {
            match Section::ALL.into_iter().find(|s| s.name() == name) {
                Some(section) => chosen.push(section),
                None => bail!(
                    "unknown section {name:?} in --only (sections: {})",
                    Section::names()
                ),
            }
        }
        Ok(Section::ALL
            .into_iter()
            .filter(|s| chosen.contains(s))
            .collect())
    }

    /// Every section's name, comma-separated.
    pub fn names() -> String {
        Section::ALL.map(Section::name).join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_gives_its_sections_in_report_order() {
        assert_eq!(
            Section::parse_list("memory,per-packet").unwrap(),
            vec![Section::PerPacket, Section::Memory]
        );
        assert_eq!(Section::parse_list("nat").unwrap(), vec![Section::Nat]);
    }

    #[test]
    fn an_unknown_name_is_refused_naming_the_sections() {
        let error = Section::parse_list("per-packet,speed")
            .unwrap_err()
            .to_string();
        assert!(error.contains("\"speed\""), "{error}");
        assert!(error.contains("per-packet, end-to-end, nat"), "{error}");
    }
}
