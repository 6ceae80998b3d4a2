//! Empty: the library target only exists so that `balancer-user`'s build script can depend
//! on this crate, and cargo rebuilds the decapsulator's object when it changes.
#![no_std]
