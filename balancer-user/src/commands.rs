//! Runs a parsed command line: the daemon itself, or one operation sent to it and its
//! answer shown.

use std::{path::Path, time::Duration};

use aya::programs::XdpMode;

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
};

/// Executes `cli`.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Daemon(args) => return run_daemon(args, &cli.socket).await,
        Command::Teardown(args) => return teardown(args, &cli.socket).await,
        _ => {}
    }
    let (operation, output) = request(cli.command)?;
    let answer = Client::new(&cli.socket).run(&operation).await?;
    show(output, &answer)
}

/// `teardown`: through the daemon if one answers; else, with `--iface`, directly.
async fn teardown(args: TeardownArgs, socket: &Path) -> anyhow::Result<()> {
    match Client::new(socket).run(&Operation::Teardown).await {
        Ok(_) => show(Output::TornDown, &[]),
        Err(ClientError::Unreachable(..)) if args.iface.is_some() => {
            let iface = args.iface.unwrap_or_default();
            let pins = tokio::task::spawn_blocking(move || {
                lifecycle::teardown::teardown(&iface, &args.pin_dir)
            })
            .await?
            .map_err(Error::from)?;
            println!(
                "no daemon was running: data plane detached, pins at {} removed",
                pins.display()
            );
            Ok(())
        }
        Err(e @ ClientError::Unreachable(..)) => Err(anyhow::Error::from(e)
            .context("no daemon to tear down (give --iface to remove its pins without one)")),
        Err(e) => Err(e.into()),
    }
}

/// Prints the answer of a command as `output` says.
fn show(output: Output, answer: &[u8]) -> anyhow::Result<()> {
    let status = || -> anyhow::Result<Status> { Ok(serde_json::from_slice(answer)?) };
    match output {
        Output::Quiet => {}
        Output::Toml => print!("{}", String::from_utf8_lossy(answer)),
        Output::TornDown => println!("data plane detached, pins removed, daemon stopped"),
        Output::Status { json: true } => println!("{}", serde_json::to_string_pretty(&status()?)?),
        Output::Status { json: false } => print!("{}", report::status(&status()?)),
        Output::Services { json } => {
            let status = status()?;
            if json {
                let services: Vec<_> = status
                    .services
                    .iter()
                    .map(|s| serde_json::json!({"name": s.name, "vip": s.vip, "affinity": s.affinity}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&services)?);
            } else {
                print!("{}", report::service_list(&status));
            }
        }
        Output::Pins { json } => {
            let status = status()?;
            if json {
                let pins: Vec<_> = status
                    .services
                    .iter()
                    .flat_map(|s| {
                        s.pins.iter().map(|p| {
                            serde_json::json!({"service": s.name, "cidr": p.cidr, "group": p.group})
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&pins)?);
            } else {
                print!("{}", report::pins(&status));
            }
        }
        Output::Rollout { name } => {
            let status = status()?;
            match status.services.first().and_then(|s| s.rollout.as_ref()) {
                Some(r) => print!("{}", report::rollout(&name, r)),
                None => println!("service {name} has had no rollout"),
            }
        }
    }
    Ok(())
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
        },
    };
    daemon::run(config, socket).await
}
