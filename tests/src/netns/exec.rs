//! Running commands and long-lived processes inside a network namespace.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};

use anyhow::{Context, Result};

use crate::command::run_command;

/// Runs `argv` inside namespace `ns` and returns its stdout.
///
/// Uses `nsenter --net` rather than `ip netns exec`, which would remount
/// `/sys` and hide the host's bpffs. Bounded by a timeout; on failure the
/// error names the command line, exit code and stderr.
pub fn run(ns: &str, argv: &[&str]) -> Result<String> {
    run_command(&nsenter_argv(ns, argv), None)
}

/// Like [`run`], feeding `stdin` to the command (e.g. `ip -batch -`).
pub(crate) fn run_with_stdin(ns: &str, argv: &[&str], stdin: &str) -> Result<String> {
    run_command(&nsenter_argv(ns, argv), Some(stdin))
}

/// A command that runs `argv` inside namespace `ns` (for callers that bound or wire it
/// themselves).
pub(crate) fn command(ns: &str, argv: &[&str]) -> Command {
    let nsenter = nsenter_argv(ns, argv);
    let mut command = Command::new(&nsenter[0]);
    command.args(&nsenter[1..]);
    command
}

/// Starts `argv` inside namespace `ns` in its own process group, with
/// stdout and stderr appended to `log_path`.
///
/// The returned guard SIGKILLs the process group and reaps it on drop.
pub fn spawn(ns: &str, argv: &[&str], log_path: &Path) -> Result<NsProcess> {
    spawn_with_env(ns, argv, &[], log_path)
}

/// Like [`spawn`], with `env` added to the process's environment (e.g. `NOTIFY_SOCKET`).
pub fn spawn_with_env(
    ns: &str,
    argv: &[&str],
    env: &[(&str, &str)],
    log_path: &Path,
) -> Result<NsProcess> {
    let command_line = argv.join(" ");
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .with_context(|| format!("cannot open log {}", log_path.display()))?;
    let nsenter = nsenter_argv(ns, argv);
    let child = Command::new(&nsenter[0])
        .args(&nsenter[1..])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start `{command_line}` in {ns}"))?;
    Ok(NsProcess {
        child,
        command_line,
        exit_status: None,
    })
}

/// A process started by [`spawn`]; killed with SIGKILL and reaped on drop.
#[derive(Debug)]
pub struct NsProcess {
    child: Child,
    command_line: String,
    exit_status: Option<ExitStatus>,
}

impl NsProcess {
    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has not exited yet.
    pub fn is_running(&mut self) -> bool {
        self.poll_exit().is_none()
    }

    /// SIGKILLs the process group and waits for the process to exit.
    pub fn kill(&mut self) -> Result<()> {
        if self.poll_exit().is_some() {
            return Ok(());
        }
        let process_group = i32::try_from(self.pid())?;
        // SAFETY: plain syscall; the group leader is our unreaped child, so
        // its id cannot have been reused.
        unsafe { libc::kill(-process_group, libc::SIGKILL) };
        let status = self
            .child
            .wait()
            .with_context(|| format!("cannot reap `{}`", self.command_line))?;
        self.exit_status = Some(status);
        Ok(())
    }

    fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exit_status.is_none() {
            self.exit_status = self.child.try_wait().ok().flatten();
        }
        self.exit_status
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        if let Err(error) = self.kill() {
            eprintln!("warning: {error:#}");
        }
    }
}

fn nsenter_argv(ns: &str, argv: &[&str]) -> Vec<String> {
    let prefix = [
        "nsenter".to_owned(),
        format!("--net={}", super::path(ns)),
        "--".to_owned(),
    ];
    prefix
        .into_iter()
        .chain(argv.iter().map(|arg| arg.to_string()))
        .collect()
}
