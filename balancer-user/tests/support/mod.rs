//! Helpers of the data-plane tests: frame builder, test data plane, fixture and model, and
//! a reader of the program's log messages.

pub mod fixture;
pub mod kernel_log;
pub mod packet;
pub mod plane;
