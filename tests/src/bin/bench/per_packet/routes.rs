//! The bench's own network namespace with known routes and neighbours, for the rows of the
//! forwarding modes that route with the kernel's tables: `bpf_fib_lookup` reads the tables
//! of the namespace the BPF_PROG_TEST_RUN caller is in, so those rows run on a thread
//! inside it ([`Routes::enter`]).
//!
//! In it: forwarding on (IPv4 and IPv6); a veth `v0` (its peer `v1` up too) holding
//! [`LB4`] / [`LB6`], whose neighbour [`NEXT_HOP4`] / [`NEXT_HOP6`] has the permanent MAC
//! [`NEXT_HOP_MAC`]; default routes of both families via that neighbour, so every backend
//! and client address is routed to it. Removed on drop, also when the rows fail.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::Result;
use balancer_tests::netns;

/// The namespace's name (a leftover of a crashed run is removed first).
const NS: &str = "bbpp-routes";

/// The MAC of the next hop every route leads to.
pub const NEXT_HOP_MAC: [u8; 6] = [0x02, 0xbe, 0, 0, 0xdc, 0x0a];
/// `v0`'s IPv4 address: the tunnels' outer source.
pub const LB4: Ipv4Addr = Ipv4Addr::new(198, 18, 220, 1);
/// `v0`'s IPv6 address.
pub const LB6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x220, 0, 0, 0, 0, 1);
/// The IPv4 next hop.
pub const NEXT_HOP4: Ipv4Addr = Ipv4Addr::new(198, 18, 220, 10);
/// The IPv6 next hop.
pub const NEXT_HOP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x220, 0, 0, 0, 0, 0x10);

/// The namespace, deleted on drop.
pub struct Routes {
    _private: (),
}

impl Routes {
    /// Builds the namespace; if a step fails, what was made is removed.
    pub fn build() -> Result<Routes> {
        if netns::list()?.iter().any(|ns| ns == NS) {
            netns::delete(NS)?;
        }
        netns::create(NS)?;
        let routes = Routes { _private: () };
        netns::set_sysctls(
            NS,
            &[
                ("net/ipv4/conf/all/forwarding", "1"),
                ("net/ipv6/conf/all/forwarding", "1"),
            ],
        )?;
        let mac = NEXT_HOP_MAC.map(|b| format!("{b:02x}")).join(":");
        let (hop4, hop6) = (IpAddr::V4(NEXT_HOP4), IpAddr::V6(NEXT_HOP6));
        let steps: [Vec<String>; 10] = [
            words("link set lo up"),
            words("link add v0 type veth peer name v1"),
            words("link set v0 up"),
            words("link set v1 up"),
            words(&format!("address add {LB4}/24 dev v0")),
            words(&format!("address add {LB6}/64 dev v0 nodad")),
            words(&format!(
                "neigh add {hop4} lladdr {mac} dev v0 nud permanent"
            )),
            words(&format!(
                "neigh add {hop6} lladdr {mac} dev v0 nud permanent"
            )),
            words(&format!("route add default via {hop4}")),
            words(&format!("-6 route add default via {hop6}")),
        ];
        for step in steps {
            let argv: Vec<&str> = std::iter::once("ip")
                .chain(step.iter().map(String::as_str))
                .collect();
            netns::run(NS, &argv)?;
        }
        Ok(routes)
    }

    /// Runs `f` on a thread inside the namespace.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        netns::in_netns(NS, f)
    }
}

impl Drop for Routes {
    fn drop(&mut self) {
        if let Err(error) = netns::delete(NS) {
            eprintln!("warning: cannot remove namespace {NS}: {error:#}");
        }
    }
}

/// The words of an `ip` command line.
fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_owned).collect()
}
