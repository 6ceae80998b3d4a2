//! The Rust tools beyond the stable toolchain: nightly with `rust-src`
//! (the XDP programs are built with `-Z build-std`) and clippy (to check
//! them), rustfmt and clippy for the host checks, and bpf-linker (the XDP
//! programs' linker).

use std::process::Command;

use anyhow::{ensure, Result};

use super::Progress;
use crate::{cargo::cargo, command};

/// The bpf-linker release the XDP program is built with.
const BPF_LINKER_VERSION: &str = "0.10.1";

/// Components the checks of `cargo xtask test` need in the toolchain that
/// runs xtask.
const LINT_COMPONENTS: [&str; 2] = ["rustfmt", "clippy"];

/// Components the nightly toolchain needs: `rust-src` to build the eBPF crates
/// with `-Z build-std=core`, clippy to check them for the BPF target.
const NIGHTLY_COMPONENTS: [&str; 2] = ["rust-src", "clippy"];

/// Installs a nightly toolchain (minimal profile) unless one is installed.
pub(super) fn ensure_nightly(progress: &mut Progress) -> Result<()> {
    let toolchains = command::stdout_of(rustup().args(["toolchain", "list"]))?;
    if toolchains.lines().any(is_undated_nightly) {
        return Ok(());
    }
    progress.action("installing the nightly toolchain");
    command::run(rustup().args(["toolchain", "install", "nightly", "--profile", "minimal"]))
}

/// Adds [`NIGHTLY_COMPONENTS`] to the nightly toolchain unless it has them.
pub(super) fn ensure_nightly_components(progress: &mut Progress) -> Result<()> {
    let installed = command::stdout_of(rustup().args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    let missing: Vec<&str> = NIGHTLY_COMPONENTS
        .into_iter()
        .filter(|component| !installed.lines().any(|line| is_component(line, component)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    progress.action(&format!(
        "adding {} to the nightly toolchain",
        missing.join(" ")
    ));
    command::run(
        rustup()
            .args(["component", "add", "--toolchain", "nightly"])
            .args(&missing),
    )
}

/// Adds rustfmt and clippy to the toolchain running xtask (the one its
/// cargo runs use) unless it has them.
pub(super) fn ensure_lint_components(progress: &mut Progress) -> Result<()> {
    let installed = command::stdout_of(rustup().args(["component", "list", "--installed"]))?;
    let missing: Vec<&str> = LINT_COMPONENTS
        .into_iter()
        .filter(|component| !installed.lines().any(|line| is_component(line, component)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    progress.action(&format!("adding {} to the toolchain", missing.join(" ")));
    command::run(rustup().args(["component", "add"]).args(&missing))
}

/// Installs bpf-linker [`BPF_LINKER_VERSION`] with `cargo install` unless
/// `bpf-linker --version` already reports it.
pub(super) fn ensure_bpf_linker(progress: &mut Progress) -> Result<()> {
    if installed_bpf_linker().as_deref() == Some(BPF_LINKER_VERSION) {
        return Ok(());
    }
    let found = installed_bpf_linker().unwrap_or_else(|| "none".to_owned());
    progress.action(&format!(
        "installing bpf-linker {BPF_LINKER_VERSION} (found: {found}; this takes a few minutes)"
    ));
    command::run(&mut cargo(&[
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--locked",
    ]))?;
    let now = installed_bpf_linker();
    ensure!(
        now.as_deref() == Some(BPF_LINKER_VERSION),
        "bpf-linker {BPF_LINKER_VERSION} was installed, but the bpf-linker on PATH reports {} \
         (is cargo's bin directory, usually ~/.cargo/bin, on PATH?)",
        now.as_deref().unwrap_or("nothing")
    );
    Ok(())
}

/// The version `bpf-linker --version` reports, if it runs.
fn installed_bpf_linker() -> Option<String> {
    let output = command::stdout_of(Command::new("bpf-linker").arg("--version")).ok()?;
    // The output reads `bpf-linker 0.10.1`.
    output.split_whitespace().nth(1).map(str::to_owned)
}

/// Whether a line of `rustup toolchain list` names the moving nightly
/// (`nightly-<host>`), which `+nightly` selects, not a dated one.
fn is_undated_nightly(line: &str) -> bool {
    let name = line.split_whitespace().next().unwrap_or_default();
    name == "nightly"
        || name
            .strip_prefix("nightly-")
            .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
}

/// Whether a line of `rustup component list --installed` names `component`
/// (`clippy-x86_64-unknown-linux-gnu` for `clippy`).
fn is_component(line: &str, component: &str) -> bool {
    let name = line.trim();
    name == component
        || name
            .strip_prefix(component)
            .is_some_and(|rest| rest.starts_with('-'))
}

/// `rustup`.
fn rustup() -> Command {
    Command::new("rustup")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_moving_nightly_counts() {
        assert!(is_undated_nightly("nightly-x86_64-unknown-linux-gnu"));
        assert!(is_undated_nightly(
            "nightly-x86_64-unknown-linux-gnu (default)"
        ));
        assert!(!is_undated_nightly(
            "nightly-2025-01-01-x86_64-unknown-linux-gnu"
        ));
        assert!(!is_undated_nightly("stable-x86_64-unknown-linux-gnu"));
        assert!(!is_undated_nightly("no installed toolchains"));
    }

    #[test]
    fn components_match_with_or_without_target() {
        assert!(is_component("clippy-x86_64-unknown-linux-gnu", "clippy"));
        assert!(is_component("rustfmt", "rustfmt"));
        assert!(!is_component("rust-src", "rustfmt"));
    }
}
