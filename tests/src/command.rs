//! Running an external command to completion within a deadline.

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Longest time any harness command (`ip`, `ethtool`, ...) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a running command is polled for completion.
const POLL_INTERVAL: Duration = Duration::from_millis(2);

/// Runs `argv`, feeding it `stdin`, and returns its stdout.
///
/// Fails with the command line, exit code and stderr if the command exits
/// unsuccessfully, and kills it if it runs longer than [`COMMAND_TIMEOUT`].
pub(crate) fn run_command(argv: &[String], stdin: Option<&str>) -> Result<String> {
    let (program, args) = argv.split_first().context("empty command line")?;
    let mut command = Command::new(program);
    command.args(args);
    let finished = run_bounded(&mut command, stdin, COMMAND_TIMEOUT)?;
    if !finished.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            argv.join(" "),
            finished.status,
            finished.stderr.trim_end()
        );
    }
    Ok(finished.stdout)
}

/// How a command run by [`run_bounded`] ended, and what it printed.
pub(crate) struct Finished {
    /// Its exit status.
    pub(crate) status: ExitStatus,
    /// Its standard output.
    pub(crate) stdout: String,
    /// Its standard error.
    pub(crate) stderr: String,
}

/// Runs `command`, feeding it `stdin`, until it exits; kills it and fails naming the
/// command line if it runs longer than `timeout`.
pub(crate) fn run_bounded(
    command: &mut Command,
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<Finished> {
    let command_line = command_line(command);
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{command_line}`"))?;

    let stdin_writer = child.stdin.take().map(|mut pipe| {
        let input = stdin.unwrap_or_default().to_owned();
        thread::spawn(move || pipe.write_all(input.as_bytes()))
    });
    let stdout_reader = read_to_end_in_background(child.stdout.take());
    let stderr_reader = read_to_end_in_background(child.stderr.take());

    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{command_line}` timed out after {timeout:?}");
        }
        thread::sleep(POLL_INTERVAL);
    };

    if let Some(writer) = stdin_writer {
        // A command may legitimately exit without reading all its input.
        let _ = writer.join();
    }
    Ok(Finished {
        status,
        stdout: join_reader(stdout_reader),
        stderr: join_reader(stderr_reader),
    })
}

/// `command` as typed: the program and its arguments.
fn command_line(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

fn read_to_end_in_background(
    pipe: Option<impl Read + Send + 'static>,
) -> Option<JoinHandle<String>> {
    pipe.map(|mut pipe| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    })
}

fn join_reader(reader: Option<JoinHandle<String>>) -> String {
    reader
        .and_then(|reader| reader.join().ok())
        .unwrap_or_default()
}

/// [`run_command`] for a command run in the harness's own namespace.
pub(crate) fn run_in_host(argv: &[&str]) -> Result<String> {
    let argv: Vec<String> = argv.iter().map(|arg| arg.to_string()).collect();
    run_command(&argv, None)
}
