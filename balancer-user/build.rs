//! Build script of `balancer-user`: builds the XDP program and embeds its object.

use anyhow::{anyhow, Context as _};
use aya_build::Toolchain;

/// Builds the XDP program (crate `balancer-ebpf`) with the nightly toolchain and leaves the
/// object in OUT_DIR, where `src/dataplane/object.rs` embeds it.
fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf_package = packages
        .into_iter()
        .find(|cargo_metadata::Package { name, .. }| name.as_str() == "balancer-ebpf")
        .ok_or_else(|| anyhow!("balancer-ebpf package not found"))?;
    let cargo_metadata::Package {
        name,
        manifest_path,
        ..
    } = ebpf_package;
    let root_dir = manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {manifest_path}"))?
        .as_str();
    let ebpf_package = aya_build::Package {
        name: name.as_str(),
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf_package], Toolchain::default())
}
