//! The cargo runs of the tasks. They use the cargo (and toolchain) that
//! runs xtask, from the workspace root, with cargo's usual target directory
//! (`target/`, or `$CARGO_TARGET_DIR` if the caller set it).

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use crate::command;

/// The XDP program's crate: `balancer-user`'s build script builds it for
/// the BPF target. Built for the host it would clash with the daemon (same
/// binary name, and `balancer-common`'s user-space feature turned on).
const EBPF_PACKAGE: &str = "balancer-ebpf";

/// The test-only XDP programs' crate: `balancer-tests`' build script builds
/// it for the BPF target; like [`EBPF_PACKAGE`], nothing in it runs on the host.
const TEST_EBPF_PACKAGE: &str = "balancer-test-ebpf";

/// `cargo fmt --all -- --check`, clippy denying warnings, then every test, closing with
/// one line that totals the tests of every test binary.
pub fn test() -> Result<()> {
    run_steps(&[
        &["fmt", "--all", "--", "--check"],
        &[
            "clippy",
            "--workspace",
            "--exclude",
            EBPF_PACKAGE,
            "--exclude",
            TEST_EBPF_PACKAGE,
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    ])?;
    let mut step = cargo(&[
        "test",
        "--workspace",
        "--exclude",
        EBPF_PACKAGE,
        "--exclude",
        TEST_EBPF_PACKAGE,
    ]);
    println!("xtask: ==> {}", command::command_line(&step));
    let totals = command::run_counting_tests(&mut step)?;
    println!(
        "xtask: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    Ok(())
}

/// Builds the daemon and runs the rollout demo of `balancer-tests`.
pub fn demo() -> Result<()> {
    run_steps(&[
        &["build", "-p", "balancer-user"],
        &["run", "-p", "balancer-tests", "--bin", "demo"],
    ])
}

/// Builds the daemon and runs the benchmark (both release builds), which writes
/// `bench/REPORT.md`. The benchmark's control-plane section drives the release daemon
/// (`$BALANCER_BIN`, unless the caller set it).
pub fn bench(quick: bool) -> Result<()> {
    run_steps(&[&["build", "--release", "-p", "balancer-user"]])?;
    let mut args = vec![
        "run",
        "--release",
        "-p",
        "balancer-tests",
        "--bin",
        "bench",
        "--",
    ];
    if quick {
        args.push("--quick");
    }
    let mut step = cargo(&args);
    if env::var_os("BALANCER_BIN").is_none() {
        step.env(
            "BALANCER_BIN",
            target_dir().join("release").join("balancer"),
        );
    }
    println!("xtask: ==> {}", command::command_line(&step));
    command::run(&mut step)
}

/// Builds the whole workspace in release mode.
pub fn build_release() -> Result<()> {
    run_steps(&[&[
        "build",
        "--workspace",
        "--exclude",
        EBPF_PACKAGE,
        "--exclude",
        TEST_EBPF_PACKAGE,
        "--release",
    ]])
}

/// Runs `cargo ARGS` for each of `steps` in turn, announcing each, and
/// stops at the first that fails.
fn run_steps(steps: &[&[&str]]) -> Result<()> {
    for args in steps {
        let mut step = cargo(args);
        println!("xtask: ==> {}", command::command_line(&step));
        command::run(&mut step)?;
    }
    Ok(())
}

/// `cargo ARGS`, run from the workspace root.
pub fn cargo(args: &[&str]) -> Command {
    let program = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(program);
    command.args(args).current_dir(workspace_root());
    command
}

/// Cargo's target directory: `$CARGO_TARGET_DIR`, else `target/` in the workspace root.
fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The workspace root: the parent of this crate's directory.
fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in a directory of the workspace")
}
