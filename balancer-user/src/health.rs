//! Health checking: which backends answer, decided by consecutive check results, and the
//! checks themselves.

mod board;
mod probe;

pub use board::{BackendHealth, HealthBoard, ProbeJob};
pub use probe::probe;
