//! The forwarding modes that route, as the tests name and configure them.

use crate::traffic::SERVICE_PORT;

/// The VIP port of `nat` services in the tests: the backends serve on [`SERVICE_PORT`], so
/// every `nat` service maps the VIP's port to another backend port.
pub const NAT_VIP_PORT: u16 = 8080;

/// A forwarding mode of the routed lab, and what its services need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `--forward ipip`: backends decapsulate, hold the VIP and answer clients directly.
    Ipip,
    /// `--forward gue`: as `ipip`, inside UDP.
    Gue,
    /// `--forward nat` to port [`SERVICE_PORT`]: unmodified backends, replies through the
    /// LB.
    Nat,
    /// `--forward fullnat` to port [`SERVICE_PORT`], from the LB's own address (the pool
    /// address by default): unmodified backends routing their replies as they please.
    Fullnat,
}

impl Mode {
    /// The mode as `--forward` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Ipip => "ipip",
            Mode::Gue => "gue",
            Mode::Nat => "nat",
            Mode::Fullnat => "fullnat",
        }
    }

    /// Whether the backends decapsulate (the tunnel modes).
    pub fn tunnels(self) -> bool {
        matches!(self, Mode::Ipip | Mode::Gue)
    }

    /// The port of this mode's VIPs: the backends' own port for the tunnels (the client's
    /// packet reaches them unchanged), [`NAT_VIP_PORT`] for `nat`.
    pub fn vip_port(self) -> u16 {
        match self {
            Mode::Ipip | Mode::Gue => SERVICE_PORT,
            Mode::Nat | Mode::Fullnat => NAT_VIP_PORT,
        }
    }

    /// The options of `service add` that select the mode (for `nat`, with the backends'
    /// port).
    pub fn options(self) -> Vec<String> {
        let mut options = vec!["--forward".to_owned(), self.name().to_owned()];
        if matches!(self, Mode::Nat | Mode::Fullnat) {
            options.extend(["--backend-port".to_owned(), SERVICE_PORT.to_string()]);
        }
        options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nat_maps_its_vip_port_to_the_servers_port_and_tunnels_keep_it() {
        assert_eq!(
            Mode::Nat.options(),
            ["--forward", "nat", "--backend-port", "80"]
        );
        assert_eq!(Mode::Gue.options(), ["--forward", "gue"]);
        assert_eq!(
            Mode::Fullnat.options(),
            ["--forward", "fullnat", "--backend-port", "80"]
        );
        assert_ne!(Mode::Nat.vip_port(), SERVICE_PORT);
        assert_eq!(Mode::Ipip.vip_port(), SERVICE_PORT);
    }
}
