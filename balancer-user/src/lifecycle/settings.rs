//! Start-time flags a pinned data plane keeps: connection tracking keeps the size it was
//! created with (resizing would forget every tracked flow), and a program that replaces
//! another in the pinned link runs in that link's XDP mode. A flag that asks for something
//! else is ignored, and said so in one line naming the pinned value.

use aya::programs::XdpMode;

/// Flags as given on the command line (`None`: not given).
#[derive(Clone, Copy, Debug, Default)]
pub struct Requested {
    /// `--conntrack-size`.
    pub conntrack_size: Option<u32>,
    /// `--xdp-mode`.
    pub xdp_mode: Option<XdpMode>,
}

/// What the pinned data plane has (`None`: nothing pinned that keeps it).
#[derive(Clone, Copy, Debug, Default)]
pub struct Pinned {
    /// Size of the pinned connection tracking.
    pub conntrack_size: Option<u32>,
    /// Mode of the pinned link that the program replaced its predecessor in.
    pub xdp_mode: Option<XdpMode>,
}

/// One warning per flag that the pinned data plane overrides.
pub fn ignored(requested: Requested, pinned: Pinned) -> Vec<String> {
    let mut warnings = Vec::new();
    if let (Some(asked), Some(kept)) = (requested.conntrack_size, pinned.conntrack_size) {
        if asked != kept {
            warnings.push(format!(
                "--conntrack-size {asked} ignored: the pinned connection tracking holds {kept} \
                 flows (to resize it, `balancer teardown` and start again, which forgets every \
                 tracked flow)"
            ));
        }
    }
    if let (Some(asked), Some(kept)) = (requested.xdp_mode, pinned.xdp_mode) {
        if asked != kept {
            warnings.push(format!(
                "--xdp-mode {} ignored: the pinned program runs in {} mode (to change it, \
                 `balancer teardown` and start again)",
                flag(asked),
                flag(kept)
            ));
        }
    }
    warnings
}

/// A mode as `--xdp-mode` spells it.
fn flag(mode: XdpMode) -> &'static str {
    match mode {
        XdpMode::Driver => "native",
        XdpMode::Skb => "skb",
        XdpMode::Hardware => "hardware",
        XdpMode::Default => "default",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_flags_given_and_different_from_the_pinned_values_are_reported() {
        let pinned = Pinned {
            conntrack_size: Some(65536),
            xdp_mode: Some(XdpMode::Driver),
        };
        assert!(ignored(Requested::default(), pinned).is_empty());
        let same = Requested {
            conntrack_size: Some(65536),
            xdp_mode: Some(XdpMode::Driver),
        };
        assert!(ignored(same, pinned).is_empty());
        assert!(ignored(same, Pinned::default()).is_empty());
        let other = Requested {
            conntrack_size: Some(1024),
            xdp_mode: Some(XdpMode::Skb),
        };
        assert_eq!(
            ignored(other, pinned),
            [
                "--conntrack-size 1024 ignored: the pinned connection tracking holds 65536 \
                 flows (to resize it, `balancer teardown` and start again, which forgets every \
                 tracked flow)",
                "--xdp-mode skb ignored: the pinned program runs in native mode (to change it, \
                 `balancer teardown` and start again)"
            ]
        );
    }
}
