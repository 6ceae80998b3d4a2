//! Build script of `balancer-user`: builds the XDP program and embeds its object.

use anyhow::{anyhow, Context as _};
use aya_build::Toolchain;

#[path = "build/btf_names.rs"]
mod btf_names;

/// Builds the XDP program (crate `balancer-ebpf`) with the nightly toolchain and leaves the
/// object in OUT_DIR, where `src/dataplane/object.rs` embeds it, with the type names in its
/// BTF made acceptable to the kernel (`build/btf_names.rs`).
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
    aya_build::build_ebpf([ebpf_package], Toolchain::default())?;
    let out_dir = std::env::var_os("OUT_DIR").context("OUT_DIR")?;
    let object = std::path::Path::new(&out_dir).join("balancer");
    btf_names::sanitize(&object).context("sanitize the BTF names of the XDP object")?;
    Ok(())
}
