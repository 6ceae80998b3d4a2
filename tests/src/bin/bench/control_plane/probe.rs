//! Asking the live data plane where a new flow goes, without sending a packet.
//!
//! A second copy of the XDP program is loaded in this process, unattached, with its maps
//! opened from the daemon's pins: it reads exactly the tables the daemon writes. Each probe
//! is one `BPF_PROG_TEST_RUN` of a TCP SYN from a source never used before, and the
//! destination MAC of the frame it returns names the backend the flow was given.

use anyhow::{bail, Context, Result};
use balancer_tests::{balancer::LB_IFACE, lab::Lab, netns, topology::VIP4, traffic::SERVICE_PORT};
use balancer_user::dataplane::{bpffs::Layout, DataPlane};

use crate::frames::frame_v4;

/// Connection-tracking size passed to the loader; only used if a map had to be created,
/// which [`Prober::attach_to`] rules out first.
const CONNTRACK_ENTRIES: u32 = 65_536;

/// Where new flows go in a lab's live data plane.
pub struct Prober {
    dp: DataPlane,
    /// The MAC of backend `i`'s interface, at index `i`.
    macs: Vec<[u8; 6]>,
    vip: [u8; 4],
    /// Flows probed so far: the next probe's source is derived from it.
    flows: u32,
}

impl Prober {
    /// Loads the program over the pinned maps of `lab`'s daemon and learns the MACs of the
    /// lab's first `backends` backends.
    pub fn attach_to(lab: &Lab, backends: usize) -> Result<Self> {
        let pins = Layout::new(lab.balancer.pin_root(), LB_IFACE);
        // Loading with no pins would create (and pin) fresh, empty maps instead.
        if !pins.maps().join("VIPS").exists() {
            bail!(
                "the daemon's maps are not pinned under {}",
                pins.dir().display()
            );
        }
        let dp = DataPlane::load_unattached(&pins, CONNTRACK_ENTRIES)
            .context("load the program over the daemon's pinned maps")?;
        let macs = (0..backends)
            .map(|i| netns::eth0_mac(lab.topology.backend_ns(i)))
            .collect::<Result<_>>()?;
        let std::net::IpAddr::V4(vip) = VIP4 else {
            bail!("the lab's IPv4 VIP is not IPv4");
        };
        Ok(Self {
            dp,
            macs,
            vip: vip.octets(),
            flows: 0,
        })
    }

    /// The backend (index in the lab) that a new TCP flow to the VIP is sent to, or None if
    /// the frame comes back addressed to none of them (not balanced).
    pub fn new_flow(&mut self) -> Result<Option<usize>> {
        let n = self.flows;
        self.flows += 1;
        // 198.18.128.0/17 and ports from 20000: a 5-tuple no earlier probe used.
        let source = [198, 18, 128 | (n >> 8) as u8 & 0x7f, n as u8];
        let port = 20_000 + (n >> 15) as u16;
        let frame = frame_v4(source, port, self.vip, SERVICE_PORT);
        let out = self.dp.test_run(&frame, 1)?.packet;
        let dst = out.get(..6).context("the program returned a runt frame")?;
        Ok(self.macs.iter().position(|mac| mac == dst))
    }
}
