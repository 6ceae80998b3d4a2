//! `cargo xtask setup`: the prerequisites of building and testing. Each is
//! checked first and only installed or mounted when missing, so running it
//! again does nothing. One line is printed per action taken.

mod bpffs;
mod packages;
mod root;
mod rust;

use anyhow::Result;

/// Ensures every prerequisite (root only).
pub fn run() -> Result<()> {
    root::ensure_root()?;
    let mut progress = Progress::default();
    packages::ensure_harness_needs(&mut progress)?;
    rust::ensure_nightly(&mut progress)?;
    rust::ensure_nightly_components(&mut progress)?;
    rust::ensure_lint_components(&mut progress)?;
    rust::ensure_bpf_linker(&mut progress)?;
    bpffs::ensure_mounted(&mut progress)?;
    if progress.actions_taken == 0 {
        println!("xtask: setup: all prerequisites already present");
    }
    Ok(())
}

/// Announces the actions setup takes.
#[derive(Debug, Default)]
struct Progress {
    actions_taken: usize,
}

impl Progress {
    /// Prints one line saying what setup is about to do.
    fn action(&mut self, what: &str) {
        println!("xtask: setup: {what}");
        self.actions_taken += 1;
    }
}
