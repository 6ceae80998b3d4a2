//! What the binary ships for installing it: shell completion scripts and the manual page,
//! generated from the command-line definitions, with no daemon running.

use std::process::{Command, Output};

use anyhow::{ensure, Result};
use balancer_tests::balancer::binary;

fn balancer(args: &[&str]) -> Result<Output> {
    Ok(Command::new(binary()?).args(args).output()?)
}

#[test]
fn completions_name_every_command_and_bash_parses_its_script() -> Result<()> {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = balancer(&["completions", shell])?;
        let script = String::from_utf8(out.stdout)?;
        ensure!(out.status.success(), "{shell}: {out:?}", out = out.status);
        for word in ["undrain", "canary", "rollout", "metrics-listen"] {
            ensure!(script.contains(word), "{shell}: no {word:?} in the script");
        }
        if shell == "bash" {
            let path = std::env::temp_dir().join("balancer-completion.bash");
            std::fs::write(&path, &script)?;
            let check = Command::new("bash").arg("-n").arg(&path).output()?;
            ensure!(check.status.success(), "bash -n: {check:?}");
        }
    }
    let out = balancer(&["completions", "tcsh"])?;
    ensure!(
        out.status.code() == Some(2) && String::from_utf8_lossy(&out.stderr).contains("tcsh"),
        "an unknown shell is a usage error: {out:?}"
    );
    Ok(())
}

#[test]
fn the_manual_pages_are_roff_one_per_command() -> Result<()> {
    let out = balancer(&["man"])?;
    ensure!(out.status.success(), "{out:?}");
    let page = String::from_utf8(out.stdout)?;
    ensure!(
        page.contains(".TH balancer 1") && page.contains(".SH SUBCOMMANDS"),
        "not the top page: {page}"
    );
    let dir = std::env::temp_dir().join("balancer-man");
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir)?;
    let out = balancer(&["man", "--dir", &dir.to_string_lossy()])?;
    ensure!(out.status.success(), "{out:?}");
    for name in [
        "balancer",
        "balancer-daemon",
        "balancer-backend-undrain",
        "balancer-canary-start",
        "balancer-teardown",
    ] {
        let page = std::fs::read_to_string(dir.join(format!("{name}.1")))?;
        ensure!(
            page.contains(&format!(".TH {name} 1")),
            "{name}.1 is not its page"
        );
    }
    let out = balancer(&["man", "--dir", "/nonexistent/man"])?;
    ensure!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).trim().lines().count() == 1,
        "an unwritable directory is one line: {out:?}"
    );
    Ok(())
}
