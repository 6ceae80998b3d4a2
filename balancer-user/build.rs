//! Build script of `balancer-user`: builds the XDP program (crate `balancer-ebpf`) with the
//! nightly toolchain and leaves the object in OUT_DIR, where `src/dataplane/object.rs`
//! embeds it, with the type names in its BTF made acceptable to the kernel
//! (`build/btf_names.rs`).

use anyhow::Context as _;

#[path = "build/btf_names.rs"]
mod btf_names;
#[path = "build/ebpf.rs"]
mod ebpf;

fn main() -> anyhow::Result<()> {
    ebpf::build("balancer-ebpf")?;
    let out_dir = std::env::var_os("OUT_DIR").context("OUT_DIR")?;
    let object = std::path::Path::new(&out_dir).join("balancer");
    btf_names::sanitize(&object).context("sanitize the BTF names of the XDP object")?;
    Ok(())
}
