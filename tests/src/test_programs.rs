//! The test-only XDP programs, built by `build.rs` from the `balancer-test-ebpf` crate: the
//! veth helper of the test topologies and the benchmark's baselines and sink.
//! The daemon's own object ([`balancer_user::dataplane::object::OBJECT`]) holds none of them.

/// The compiled eBPF object (ELF) of the test programs, aligned for aya's parser.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/test-programs"));

/// Name of the pass-everything XDP program in [`OBJECT`], for veth peers in test topologies.
pub const VETH_PASS_PROGRAM: &str = "veth_pass";
