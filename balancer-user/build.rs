//! Build script of `balancer-user`: builds the XDP program (crate `balancer-ebpf`) and the
//! decapsulator (crate `balancer-decap-ebpf`) with the nightly toolchain and leaves their
//! objects in OUT_DIR, where `src/dataplane/object.rs` and `src/decap/object.rs` embed
//! them, with the type names in their BTF made acceptable to the kernel
//! (`build/btf_names.rs`).

use anyhow::Context as _;

#[path = "build/btf_names.rs"]
mod btf_names;
#[path = "build/ebpf.rs"]
mod ebpf;

fn main() -> anyhow::Result<()> {
    ebpf::build("balancer-ebpf")?;
    ebpf::build("balancer-decap-ebpf")?;
    let out_dir = std::env::var_os("OUT_DIR").context("OUT_DIR")?;
    for object in ["balancer", "decap"] {
        let object = std::path::Path::new(&out_dir).join(object);
        btf_names::sanitize(&object)
            .with_context(|| format!("sanitize the BTF names of {}", object.display()))?;
    }
    Ok(())
}
