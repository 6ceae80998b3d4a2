//! The XDP_PASS program on the veth peer that receives the LB's XDP_TX frames: the veth
//! driver only delivers such frames when the receiving side runs an XDP program. A test
//! topology artefact; real NICs need nothing of the kind.

use anyhow::{Context, Result};
use aya::{
    programs::{Xdp, XdpMode},
    Ebpf,
};

use crate::{
    netns::in_netns,
    test_programs::{OBJECT, VETH_PASS_PROGRAM},
};

/// Keeps the program attached while alive.
pub struct VethPass {
    _ebpf: Ebpf,
}

impl VethPass {
    /// Attaches `veth_pass` in native mode to `iface` in namespace `ns`.
    pub fn attach(ns: &str, iface: &str) -> Result<Self> {
        let iface = iface.to_string();
        let ebpf = in_netns(ns, move || -> Result<Ebpf> {
            let mut ebpf = Ebpf::load(OBJECT).context("load the test programs")?;
            let program: &mut Xdp = ebpf
                .program_mut(VETH_PASS_PROGRAM)
                .context("veth_pass program missing")?
                .try_into()?;
            program.load()?;
            program
                .attach(&iface, XdpMode::Driver)
                .with_context(|| format!("attach veth_pass to {iface}"))?;
            Ok(ebpf)
        })??;
        Ok(Self { _ebpf: ebpf })
    }
}
