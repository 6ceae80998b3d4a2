//! Helpers of the data-plane tests: frame builder, test data plane, fixture and model, the
//! parser's rules as a model of their own, and a reader of the program's log messages.

pub mod fixture;
pub mod kernel_log;
pub mod packet;
pub mod plane;
pub mod routes;
pub mod tracking;
pub mod verdict;
