//! Running external programs: either with their output shown to the
//! operator, or quietly to inspect what they print.

use std::env;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{bail, Context, Result};

/// Runs `command` with inherited stdin, stdout and stderr; fails naming
/// the command line unless it exits successfully.
pub fn run(command: &mut Command) -> Result<()> {
    let line = command_line(command);
    let status = command
        .status()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Test counts summed over cargo's `test result:` lines.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TestTotals {
    /// Tests that passed.
    pub passed: u64,
    /// Tests that failed.
    pub failed: u64,
    /// Tests that were ignored.
    pub ignored: u64,
}

impl TestTotals {
    /// Adds the counts of one `test result: ok. 3 passed; 0 failed; 1 ignored; ...` line;
    /// other lines are left alone.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(kind), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match kind {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => {}
            }
        }
    }
}

/// How a test run ended: the totals of its `test result:` lines and cargo's exit status.
#[derive(Debug)]
pub struct TestRun {
    /// The tests counted.
    pub totals: TestTotals,
    /// Cargo's exit status: a failure when a test failed or did not build.
    pub status: ExitStatus,
}

/// Runs `command` with inherited stdin and stderr, echoing its stdout line by line while
/// summing the `test result:` lines cargo prints; the caller judges the exit status.
pub fn run_counting_tests(command: &mut Command) -> Result<TestRun> {
    use std::io::{BufRead, BufReader};
    let line = command_line(command);
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{line}`"))?;
    let mut totals = TestTotals::default();
    if let Some(stdout) = child.stdout.take() {
        for text in BufReader::new(stdout).lines() {
            let text = text.with_context(|| format!("reading the output of `{line}`"))?;
            println!("{text}");
            totals.add_line(&text);
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{line}`"))?;
    Ok(TestRun { totals, status })
}

/// Runs `command` quietly and returns its stdout; fails naming the command
/// line (and its stderr) unless it exits successfully.
pub fn stdout_of(command: &mut Command) -> Result<String> {
    let line = command_line(command);
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !output.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Whether an executable file named `program` is in a directory of `$PATH`.
pub fn on_path(program: &str) -> bool {
    env::var_os("PATH").is_some_and(|path| {
        env::split_paths(&path).any(|directory| is_executable(&directory.join(program)))
    })
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

/// `command` as the operator would type it: the program's file name and
/// the arguments (without the environment).
pub fn command_line(command: &Command) -> String {
    let program = command.get_program();
    let program_name = Path::new(program).file_name().unwrap_or(program);
    std::iter::once(program_name)
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_cargo_test_result_lines() {
        let mut totals = TestTotals::default();
        totals.add_line("test result: ok. 35 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 9.03s");
        totals.add_line(
            "test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        totals.add_line("running 4 tests");
        assert_eq!(
            totals,
            TestTotals {
                passed: 38,
                failed: 1,
                ignored: 2
            }
        );
    }
}
