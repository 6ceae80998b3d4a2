//! Runs a parsed command line: the daemon itself, or one operation sent to it and its
//! answer shown.

use std::{io::Write as _, path::Path, time::Duration};

use anyhow::Context as _;
use aya::programs::XdpMode;
use clap::CommandFactory as _;

use crate::{
    api::Status,
    cli::{request, Cli, Command, DaemonArgs, Output, TeardownArgs, XdpModeArg},
    client::{Client, ClientError},
    controller::Settings,
    daemon::{self, DaemonConfig},
    dataplane::bpffs::Layout,
    error::Error,
    lifecycle::{self, settings::Requested},
    operation::Operation,
    report,
    wait::{self, track::Kind, Waiting},
    watch::{self, Watch},
};

/// Executes `cli`.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Daemon(args) => return run_daemon(args, &cli.socket).await,
        Command::Teardown(args) => return teardown(args, &cli.socket).await,
        Command::Completions { shell } => return write_out(&completions(shell)),
        Command::Man { dir: None } => return write_out(&manual()?),
        Command::Man { dir: Some(dir) } => {
            clap_mangen::generate_to(Cli::command(), &dir)
                .with_context(|| format!("write the manual pages into {}", dir.display()))?;
            return Ok(());
        }
        _ => {}
    }
    let client = Client::new(&cli.socket).with_timeout(cli.timeout);
    match cli.command {
        Command::Status {
            name,
            json,
            watch: true,
            count,
        }
        | Command::Top { name, json, count } => {
            let watching = Watch {
                service: name,
                json,
                count,
            };
            return watch::run(&client, watching).await;
        }
        Command::Wait { name, wait_timeout } => {
            let waiting = Waiting {
                service: name,
                kind: Kind::Any,
                timeout: wait_timeout,
            };
            return wait::run(&client, waiting, print_line).await;
        }
        _ => {}
    }
    let waiting = cli.command.waiting();
    let (operation, output) = request(cli.command)?;
    let answer = client.run(&operation).await?;
    write_out(&show(output, &answer)?)?;
    match waiting {
        Some(waiting) => wait::run(&client, waiting, print_line).await,
        None => Ok(()),
    }
}

/// Writes one line to standard output (see [`write_out`]).
fn print_line(line: &str) -> anyhow::Result<()> {
    write_out(&format!("{line}\n"))
}

/// The completion script of `shell`, from the command-line definition.
fn completions(shell: clap_complete::Shell) -> String {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "balancer", &mut script);
    String::from_utf8_lossy(&script).into_owned()
}

/// The manual page (roff), from the command-line definition.
fn manual() -> anyhow::Result<String> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut page)?;
    Ok(String::from_utf8_lossy(&page).into_owned())
}

/// `teardown`: through the daemon if one answers; else, with `--iface`, directly.
async fn teardown(args: TeardownArgs, socket: &Path) -> anyhow::Result<()> {
    match Client::new(socket).run(&Operation::Teardown).await {
        Ok(_) => write_out("data plane detached, pins removed, daemon stopped\n"),
        Err(ClientError::Unreachable(..)) if args.iface.is_some() => {
            let iface = args.iface.unwrap_or_default();
            let pins = tokio::task::spawn_blocking(move || {
                lifecycle::teardown::teardown(&iface, &args.pin_dir)
            })
            .await?
            .map_err(Error::from)?;
            write_out(&format!(
                "no daemon was running: data plane detached, pins at {} removed\n",
                pins.display()
            ))
        }
        Err(e @ ClientError::Unreachable(..)) => Err(anyhow::Error::from(e)
            .context("no daemon to tear down (give --iface to remove its pins without one)")),
        Err(e) => Err(e.into()),
    }
}

/// Writes `text` to standard output. A reader that went away (`balancer status | head -1`)
/// is not an error: there is nobody left to tell.
fn write_out(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        written => Ok(written?),
    }
}

/// The text of the answer of a command as `output` says.
fn show(output: Output, answer: &[u8]) -> anyhow::Result<String> {
    let status = || -> anyhow::Result<Status> { Ok(serde_json::from_slice(answer)?) };
    Ok(match output {
        Output::Quiet => String::new(),
        Output::Toml => String::from_utf8_lossy(answer).into_owned(),
        Output::TornDown => "data plane detached, pins removed, daemon stopped\n".into(),
        Output::Status { json: true } => pretty(&status()?)?,
        Output::Status { json: false } => report::status(&status()?),
        Output::Services { json: true } => {
            let services: Vec<_> = status()?
                .services
                .iter()
                .map(|s| serde_json::json!({"name": s.name, "vip": s.vip, "affinity": s.affinity}))
                .collect();
            pretty(&services)?
        }
        Output::Services { json: false } => report::service_list(&status()?),
        Output::Pins { json: true } => {
            let pins: Vec<_> = status()?
                .services
                .iter()
                .flat_map(|s| {
                    s.pins.iter().map(|p| {
                        serde_json::json!({"service": s.name, "cidr": p.cidr, "group": p.group})
                    })
                })
                .collect();
            pretty(&pins)?
        }
        Output::Pins { json: false } => report::pins(&status()?),
        Output::Rollout { name } => {
            let status = status()?;
            match status.services.first().and_then(|s| s.rollout.as_ref()) {
                Some(r) => report::rollout(&name, r),
                None => format!("service {name} has had no rollout\n"),
            }
        }
    })
}

/// `value` as pretty JSON and a newline.
fn pretty<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(format!("{}\n", serde_json::to_string_pretty(value)?))
}

async fn run_daemon(args: DaemonArgs, socket: &Path) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = DaemonConfig {
        pins: Layout::new(&args.pin_dir, &args.iface),
        iface: args.iface,
        state_dir: args.state_dir,
        empty_state: args.empty_state,
        metrics_listen: args.metrics_listen,
        requested: Requested {
            conntrack_size: args.conntrack_size,
            xdp_mode: args.xdp_mode.map(|mode| match mode {
                XdpModeArg::Native => XdpMode::Driver,
                XdpModeArg::Skb => XdpMode::Skb,
            }),
        },
        settings: Settings {
            seed: args.hash_seed,
            flow_idle: Duration::from_secs(args.flow_idle),
            retire_timeout: args.retire_timeout,
        },
    };
    daemon::run(config, socket).await
}
