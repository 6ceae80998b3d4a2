//! The decapsulator's XDP object, built by `build.rs` from the `balancer-decap-ebpf` crate.

/// The compiled eBPF object (ELF), aligned for aya's parser.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/decap"));

/// Name of the decapsulating XDP program in [`OBJECT`], the only program it holds.
pub const DECAP_PROGRAM: &str = "decap";
