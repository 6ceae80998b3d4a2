//! The cargo runs of the tasks. They use the cargo (and toolchain) that
//! runs xtask, from the workspace root, with cargo's usual target directory
//! (`target/`, or `$CARGO_TARGET_DIR` if the caller set it); only the clippy
//! run for the BPF target uses the nightly toolchain's cargo.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Result};

use crate::command;

/// The XDP program's crate: `balancer-user`'s build script builds it for
/// the BPF target. Built for the host it would clash with the daemon (same
/// binary name, and `balancer-common`'s user-space feature turned on).
const EBPF_PACKAGE: &str = "balancer-ebpf";

/// The decapsulator's crate (`balancer decap`): `balancer-user`'s build script builds it
/// for the BPF target, like [`EBPF_PACKAGE`].
const DECAP_EBPF_PACKAGE: &str = "balancer-decap-ebpf";

/// The test-only XDP programs' crate: `balancer-tests`' build script builds
/// it for the BPF target; like [`EBPF_PACKAGE`], nothing in it runs on the host.
const TEST_EBPF_PACKAGE: &str = "balancer-test-ebpf";

/// The target aya-build builds the eBPF crates for (on a little-endian host).
const BPF_TARGET: &str = "bpfel-unknown-none";

/// `cargo fmt --all -- --check`, clippy denying warnings on the host and on the eBPF crates
/// for the BPF target, then the daemon's build and every test binary on it (all of them,
/// even after a failure), closing with one line that totals the tests of every test
/// binary; fails if anything failed.
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
            "--exclude",
            DECAP_EBPF_PACKAGE,
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    ])?;
    let mut step = bpf_clippy();
    println!("xtask: ==> {}", command::command_line(&step));
    command::run(&mut step)?;
    run_steps(&[&["build", "-p", "balancer-user"]])?;
    let mut step = cargo(&[
        "test",
        "--workspace",
        "--exclude",
        EBPF_PACKAGE,
        "--exclude",
        TEST_EBPF_PACKAGE,
        "--exclude",
        DECAP_EBPF_PACKAGE,
        "--no-fail-fast",
    ]);
    use_balancer(&mut step, "debug");
    if env::var_os("BALANCER_FUZZ_SEED").is_none() {
        step.env("BALANCER_FUZZ_SEED", TEST_FUZZ_SEED);
    }
    let line = command::command_line(&step);
    println!("xtask: ==> {line}");
    let run = command::run_counting_tests(&mut step)?;
    println!(
        "xtask: {} passed, {} failed, {} skipped",
        run.totals.passed, run.totals.failed, run.totals.ignored
    );
    if !run.status.success() {
        bail!("`{line}` failed ({})", run.status);
    }
    Ok(())
}

/// Builds the daemon and runs the rollout demo of `balancer-tests` on it.
pub fn demo() -> Result<()> {
    run_steps(&[&["build", "-p", "balancer-user"]])?;
    let mut step = cargo(&["run", "-p", "balancer-tests", "--bin", "demo"]);
    use_balancer(&mut step, "debug");
    println!("xtask: ==> {}", command::command_line(&step));
    command::run(&mut step)
}

/// Points `step` at the daemon of `profile` cargo has just built (`$BALANCER_BIN`,
/// unless the caller set it).
fn use_balancer(step: &mut Command, profile: &str) {
    if env::var_os("BALANCER_BIN").is_none() {
        step.env("BALANCER_BIN", target_dir().join(profile).join("balancer"));
    }
}

/// Builds the daemon and runs the benchmark (both release builds), which writes
/// `bench/REPORT.md`, or with `quick` or `only` (some sections, comma-separated) a report
/// in a temporary directory (it prints where), so a smoke or partial run leaves the
/// committed report alone. The benchmark's sections that run the daemon drive the release
/// build (`$BALANCER_BIN`, unless the caller set it).
pub fn bench(quick: bool, only: Option<&str>) -> Result<()> {
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
    if let Some(sections) = only {
        args.extend(["--only", sections]);
    }
    let mut step = cargo(&args);
    use_balancer(&mut step, "release");
    println!("xtask: ==> {}", command::command_line(&step));
    command::run(&mut step)
}

/// The fuzz seed of `cargo xtask test`: its short pass is the same every run (fresh seeds
/// are `cargo xtask fuzz`'s job).
const TEST_FUZZ_SEED: &str = "0x5eedba1a";

/// Frames of the long fuzzing run.
pub const FUZZ_FRAMES: u64 = 1_000_000;

/// Runs `balancer-user`'s `fuzz` test (a debug build, like `test`'s) on `frames` frames from
/// `seed` (else the one `$BALANCER_FUZZ_SEED` gives, else a fresh one), with its output
/// shown: the seed, then frames/s and the verdict totals.
pub fn fuzz(frames: u64, seed: Option<&str>) -> Result<()> {
    let mut step = cargo(&[
        "test",
        "-p",
        "balancer-user",
        "--test",
        "fuzz",
        "--",
        "--nocapture",
    ]);
    step.env("BALANCER_FUZZ_FRAMES", frames.to_string());
    if let Some(seed) = seed {
        step.env("BALANCER_FUZZ_SEED", seed);
    }
    println!(
        "xtask: ==> BALANCER_FUZZ_FRAMES={frames}{} {}",
        seed.map(|s| format!(" BALANCER_FUZZ_SEED={s}"))
            .unwrap_or_default(),
        command::command_line(&step)
    );
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
        "--exclude",
        DECAP_EBPF_PACKAGE,
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

/// Clippy on [`EBPF_PACKAGE`], [`TEST_EBPF_PACKAGE`] and [`DECAP_EBPF_PACKAGE`] for [`BPF_TARGET`], denying
/// warnings, from the workspace root. Like aya-build's builds of those crates it runs the
/// nightly cargo through rustup, with `-Z build-std=core` (no prebuilt `core` exists for
/// the target) and without the caller's `RUSTC` and `RUSTC_WORKSPACE_WRAPPER`, which would
/// pick another toolchain's compiler. aya-build's RUSTFLAGS are left out: `--cfg
/// bpf_target_arch` only matters to aya-ebpf, whose build script sets it when missing, and
/// the others only affect linking, which a check does not do.
fn bpf_clippy() -> Command {
    let mut command = Command::new("rustup");
    command
        .args(["run", "nightly", "cargo", "clippy"])
        .args(["-p", EBPF_PACKAGE, "-p", TEST_EBPF_PACKAGE])
        .args(["-p", DECAP_EBPF_PACKAGE])
        .args(["--target", BPF_TARGET, "-Z", "build-std=core"])
        .args(["--", "-D", "warnings"])
        .current_dir(workspace_root());
    for key in ["RUSTC", "RUSTC_WORKSPACE_WRAPPER"] {
        command.env_remove(key);
    }
    command
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
