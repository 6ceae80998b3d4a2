//! Developer tasks of the balancer workspace: `cargo xtask setup|test|demo|build|bench|fuzz`.
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
        /// Only these sections, comma-separated (per-packet, end-to-end, nat, tables,
        /// control-plane, memory, sync); the report then goes to a temporary directory too.
        #[arg(long, value_name = "SECTIONS")]
        only: Option<String>,
    },
    /// Setup, then fuzz the XDP program: seeded random and mutated frames through
    /// BPF_PROG_TEST_RUN, each checked against the tests' model (the long run of the
    /// `fuzz` test, which `test` runs with 200,000 frames).
    Fuzz {
        /// How many frames.
        #[arg(long, default_value_t = cargo::FUZZ_FRAMES)]
        frames: u64,
        /// The seed (decimal or 0x hex); a fresh one by default. The run prints it, and a
        /// failure names it with the frame.
        #[arg(long)]
        seed: Option<String>,
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
        Task::Bench { quick, only } => cargo::bench(quick, only.as_deref()),
        Task::Fuzz { frames, seed } => cargo::fuzz(frames, seed.as_deref()),
    }
}
