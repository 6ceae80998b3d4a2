//! Reruns this build when the `bpf-linker` binary changes, an undeclared dependency of
//! building the crate for the BPF target; see `balancer-ebpf/build.rs` for the caveats.

use which::which;

fn main() {
    let bpf_linker = which("bpf-linker").unwrap();
    println!("cargo:rerun-if-changed={}", bpf_linker.to_str().unwrap());
}
