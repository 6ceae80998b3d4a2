//! The XDP_PASS program on the veth peer that receives the LB's XDP_TX frames: the veth
//! driver only delivers such frames when the receiving side runs an XDP program. A test
//! topology artefact; real NICs need nothing of the kind.

use std::path::Path;

use anyhow::{Context, Result};
use aya::{
    programs::{Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use balancer_user::dataplane::{
    bpffs,
    object::{OBJECT, VETH_PASS_PROGRAM},
};

use crate::netns::in_netns;

/// Keeps the program attached while alive.
pub struct VethPass {
    _ebpf: Ebpf,
}

impl VethPass {
    /// Attaches `veth_pass` in native mode to `iface` in namespace `ns`. The object's maps
    /// are created at minimal size and unpinned again at once (`scratch` names a private
    /// directory for that).
    pub fn attach(ns: &str, iface: &str, scratch: &Path) -> Result<Self> {
        let pins = Path::new("/sys/fs/bpf").join(format!(
            "balancer-pass-{}",
            scratch.file_name().and_then(|n| n.to_str()).unwrap_or("x")
        ));
        bpffs::ensure(&pins).context("bpffs for the veth pass program")?;
        let iface = iface.to_string();
        let pins_for_thread = pins.clone();
        let ebpf = in_netns(ns, move || -> Result<Ebpf> {
            let mut loader = EbpfLoader::new();
            loader.default_map_pin_directory(&pins_for_thread);
            for map in [
                "VIPS",
                "GENERATION",
                "TABLES",
                "RINGS",
                "BACKENDS",
                "BACKEND_STATS",
                "CONNTRACK",
            ] {
                loader.map_max_entries(map, 1);
            }
            let mut ebpf = loader.load(OBJECT).context("load the XDP object")?;
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
        std::fs::remove_dir_all(&pins).ok();
        Ok(Self { _ebpf: ebpf })
    }
}
