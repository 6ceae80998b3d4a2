//! The release strategies the product exists for, one room each: blue-green [`flip`],
//! gradual [`canary`] (gated by an [`analysis`] of both versions' signals when asked),
//! rolling replacement ([`rollout`]) and backend [`drain`].
//!
//! Each is a small state machine: a plan (what the operator asked), progress (persisted
//! with the desired state, so a restarted daemon resumes), and a `step(now)` that returns
//! the change of the desired state it wants while recording the decision and why. The
//! controller drives them on its clock; they never touch the data plane themselves.

pub mod analysis;
pub mod canary;
mod decision;
pub mod drain;
pub mod flip;
pub mod rollout;

pub use decision::Decision;
