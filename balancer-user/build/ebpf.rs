//! Building one eBPF crate of the workspace for the BPF target (nightly toolchain,
//! bpf-linker) into OUT_DIR: shared by the build scripts of `balancer-user` (the product
//! program) and `tests` (the test-only programs).

use anyhow::{anyhow, Context as _};
use aya_build::Toolchain;

/// Builds the workspace package `package`; its binaries land in OUT_DIR under their names.
pub fn build(package: &str) -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf_package = packages
        .into_iter()
        .find(|cargo_metadata::Package { name, .. }| name.as_str() == package)
        .ok_or_else(|| anyhow!("{package} package not found"))?;
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
