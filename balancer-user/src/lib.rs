//! Userspace of `balancer`: the daemon that owns the XDP data plane, its control API, and
//! the CLI client. `ARCHITECTURE.md` at the repository root maps the modules.

pub mod announce;
pub mod api;
pub mod basis_points;
pub mod cli;
pub mod client;
pub mod clock;
pub mod commands;
pub mod compile;
pub mod config;
pub mod controller;
pub mod daemon;
pub mod daemon_file;
pub mod dataplane;
pub mod decap;
pub mod digest;
pub mod duration;
pub mod error;
pub mod fleet;
pub mod forwarding;
pub mod gate;
pub mod health;
pub mod history;
pub mod lifecycle;
pub mod logging;
pub mod maglev;
pub mod metrics;
pub mod neighbor;
pub mod operation;
pub mod quiet;
pub mod release;
pub mod report;
pub mod server;
pub mod split;
pub mod state;
pub mod sync;
#[cfg(test)]
mod test_rng;
pub mod vip;
pub mod wait;
pub mod watch;
