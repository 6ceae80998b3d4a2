//! `balancer`: the daemon and the CLI in one binary.
//!
//! Exit codes: 0 done, 1 refused (bad input; nothing changed), 2 bad usage, 3 the daemon
//! cannot be reached or did not answer within `--timeout`, 4 a fault of the host (I/O,
//! kernel). A wait (`--wait` on `canary start`, `rollout` and `flip`, and `balancer wait`)
//! exits 0 when the release completed, 5 when it was aborted (by the operator, or
//! overridden by a split, flip or apply), 6 when it rolled back by itself (a canary's
//! automatic rollback on health checks or analysis, a rollout whose new backend never
//! became healthy or had worse signals), 7 when
//! `--wait-timeout` came first (the release goes on): `wait::{ABORTED, ROLLED_BACK,
//! TIMED_OUT}`; `fleet leave` exits 7 too when packets still reach the host's VIPs at its
//! `--wait-timeout` (`quiet::Busy`).

use std::process::ExitCode;

use balancer_user::{
    cli::Cli,
    client::ClientError,
    commands,
    error::{one_line, Error, Refused},
    quiet::Busy,
    wait::{Unfinished, TIMED_OUT},
};
use clap::{error::ErrorKind, Parser};

/// Exit code of a refused command (bad input; nothing changed).
const REFUSED: u8 = 1;
/// Exit code of bad usage (clap's).
const USAGE: u8 = 2;
/// Exit code when the daemon cannot be reached (or is tearing down).
const UNREACHABLE: u8 = 3;
/// Exit code of a host fault (I/O, kernel): the command may not have been carried out.
const FAULT: u8 = 4;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::from(USAGE);
        }
        Err(e) => {
            // One line: clap's first line names the problem; the usage hint follows.
            let text = e.to_string();
            eprintln!(
                "{}",
                text.lines().next().unwrap_or("error: invalid arguments")
            );
            return ExitCode::from(USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(FAULT);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "error: {}",
                one_line(AsRef::<dyn std::error::Error>::as_ref(&e))
            );
            ExitCode::from(exit_code(&e))
        }
    }
}

/// 1 refused, 3 daemon unreachable or silent past --timeout, 4 fault; 5, 6, 7 a wait's
/// release aborted, rolled back, or still running at --wait-timeout.
fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(client) = e.downcast_ref::<ClientError>() {
        return client.exit_code();
    }
    if let Some(unfinished) = e.downcast_ref::<Unfinished>() {
        return unfinished.exit_code();
    }
    if e.downcast_ref::<Busy>().is_some() {
        return TIMED_OUT;
    }
    match e.downcast_ref::<Error>() {
        Some(Error::Refused(_)) => REFUSED,
        Some(Error::TearingDown) => UNREACHABLE,
        // Unlocated never leaves the daemon (the executor resolves and runs the change again).
        Some(Error::Fault(_) | Error::Unlocated(_)) => FAULT,
        None if e.downcast_ref::<Refused>().is_some() => REFUSED,
        None => FAULT,
    }
}
