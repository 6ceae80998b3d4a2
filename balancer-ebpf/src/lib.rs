#![no_std]
// This file exists to enable the library target, which `balancer-user`'s build script
// depends on so that cargo rebuilds the XDP object when this crate changes.
