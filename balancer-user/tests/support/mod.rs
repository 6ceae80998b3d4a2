//! Helpers of the data-plane tests: frame builder, test data plane, fixture and model.

pub mod fixture;
pub mod packet;
pub mod plane;
