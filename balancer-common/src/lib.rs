//! Types shared by the XDP program and the userspace daemon.
//!
//! Every type here is `#[repr(C)]` and derives `bytemuck::Pod`, which refuses to compile
//! when a struct has implicit padding: the kernel and userspace see the same bytes.
#![no_std]

mod decap;
mod hash;
mod layout;
mod nat;
mod sync;
mod tables;

pub use decap::*;
pub use hash::{flow_hash, FlowHash};
pub use layout::*;
pub use nat::*;
pub use sync::*;
pub use tables::*;
