//! `balancer decap`: the decapsulator for backends of `ipip` and `gue` services on hosts
//! without the kernel's ipip, ip6tnl or fou modules. Its XDP program (crate
//! `balancer-decap-ebpf`, an object of its own: loading it creates none of the load
//! balancer's maps) is attached through a bpf_link pinned at
//! `<root>/<iface>/link`, so it stays attached after the command exits; its counters are
//! pinned beside it (`<root>/<iface>/stats`).
//!
//! * `program`: the object loaded with its settings (GUE port, allowed outer sources), and
//!   `BPF_PROG_TEST_RUN` for the tests.
//! * `pins`: attaching (atomically replacing an earlier decapsulator on the interface),
//!   removing, and reading the counters.

mod error;
pub mod object;
mod pins;
mod program;

pub use error::DecapError;
pub use pins::{attach, counters, remove, Attached, Counters, DEFAULT_ROOT};
pub use program::{Decapsulator, Settings, MAX_ALLOWED};
