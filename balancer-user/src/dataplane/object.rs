//! The XDP object built by `build.rs` from the `balancer-ebpf` crate.

/// The compiled eBPF object (ELF), aligned for aya's parser.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/balancer"));

/// Name of the load-balancing XDP program in [`OBJECT`].
pub const BALANCER_PROGRAM: &str = "balancer";

/// Name of the pass-everything XDP program in [`OBJECT`], for veth peers in test topologies.
pub const VETH_PASS_PROGRAM: &str = "veth_pass";

/// Baseline XDP programs for benchmarks (`baseline_drop`, `baseline_macswap`, and `sink` with
/// its per-CPU counter `SINK_PACKETS`); linked only into the programs that use it.
pub static BASELINES: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/baselines"));
