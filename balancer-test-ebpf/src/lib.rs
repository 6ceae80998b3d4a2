//! Empty: the library target only exists so that `balancer-tests`' build script can depend
//! on this crate, and cargo rebuilds the test programs' object when it changes.
#![no_std]
