//! Health checking: which backends answer, decided by consecutive check results, and the
//! checks themselves.

mod board;
mod check;

pub use board::{BackendHealth, CheckJob, HealthBoard};
pub use check::run;
