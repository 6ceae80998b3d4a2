//! The XDP object built by `build.rs` from the `balancer-ebpf` crate.

/// The compiled eBPF object (ELF), aligned for aya's parser.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/balancer"));

/// Name of the load-balancing XDP program in [`OBJECT`], the only program it holds.
pub const BALANCER_PROGRAM: &str = "balancer";
