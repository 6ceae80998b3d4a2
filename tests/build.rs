//! Builds the test-only XDP programs (crate `balancer-test-ebpf`) with the nightly toolchain
//! and leaves their object in OUT_DIR, where `src/test_programs.rs` embeds it.

#[path = "../balancer-user/build/ebpf.rs"]
mod ebpf;

fn main() -> anyhow::Result<()> {
    ebpf::build("balancer-test-ebpf")
}
