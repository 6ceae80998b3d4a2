//! Health checking: which backends answer, decided by consecutive check results, and the
//! checks themselves.

mod board;
mod check;
mod record;

pub use board::{BackendHealth, CheckJob, HealthBoard, Serving};
pub use check::run;
pub use record::{HealthRecord, Observed};
