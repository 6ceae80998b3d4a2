//! The decapsulator's (`balancer decap`) counters, shared by its XDP program and the CLI
//! that reads them: slots of its per-CPU array `DECAP_STATS`.

/// Tunnel packets whose inner packet was passed on to the kernel.
pub const DECAP_DECAPSULATED: u32 = 0;
/// Tunnel packets from an outer source outside the allowed prefixes: dropped.
pub const DECAP_REFUSED: u32 = 1;
/// Tunnel packets with truncated or inconsistent outer or inner headers: passed untouched.
pub const DECAP_MALFORMED: u32 = 2;
/// Everything else (not a tunnel packet): passed untouched.
pub const DECAP_PASSED: u32 = 3;
/// Number of counters.
pub const DECAP_STAT_COUNT: u32 = 4;
