//! Developer tasks of the balancer workspace: `cargo xtask setup|test|demo|build|bench`.
//!
//! This crate deliberately depends on no workspace crate: building those
//! needs bpf-linker, which `setup` installs first.

mod cargo;
mod command;
mod setup;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Developer tasks of the balancer workspace. Every task runs `setup`
/// first, so every task must run as root.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    task: Task,
}

/// The tasks.
#[derive(Debug, Subcommand)]
enum Task {
    /// Install the prerequisites (apt tools, nightly + rust-src + clippy, bpf-linker,
    /// bpffs); only what is missing.
    Setup,
    /// Setup, then check formatting, run clippy (host and BPF target) and run every test.
    Test,
    /// Setup, build the daemon, then run the blue/green rollout demo.
    Demo,
    /// Setup, then build the workspace in release mode.
    Build,
    /// Setup, then measure the data plane and the control plane and write bench/REPORT.md.
    Bench {
        /// Fewer repetitions: a smoke run that finishes in a few minutes, its report written
        /// to a temporary directory instead of bench/.
        #[arg(long)]
        quick: bool,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse().task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> Result<()> {
    setup::run()?;
    match task {
        Task::Setup => Ok(()),
        Task::Test => cargo::test(),
        Task::Demo => cargo::demo(),
        Task::Build => cargo::build_release(),
        Task::Bench { quick } => cargo::bench(quick),
    }
}
