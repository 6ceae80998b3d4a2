//! Runs a parsed command line: the daemon itself, or one operation sent to it and its
//! answer shown.

use std::time::Duration;

use aya::programs::XdpMode;

use crate::{
    api::Status,
    cli::{request, Cli, Command, DaemonArgs, Output, XdpModeArg},
    client::Client,
    controller::Settings,
    daemon::{self, DaemonConfig},
    dataplane::{bpffs::Layout, AttachOptions},
    report,
};

/// Executes `cli`.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Daemon(args) = cli.command {
        return run_daemon(args, &cli.socket).await;
    }
    let (operation, output) = request(cli.command)?;
    let answer = Client::new(&cli.socket)
        .with_timeout(cli.timeout)
        .run(&operation)
        .await?;
    show(output, &answer)
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

async fn run_daemon(args: DaemonArgs, socket: &std::path::Path) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = DaemonConfig {
        attach: AttachOptions {
            bpffs: Layout::new(&args.pin_dir, &args.iface),
            iface: args.iface,
            mode: match args.xdp_mode {
                XdpModeArg::Native => XdpMode::Driver,
                XdpModeArg::Skb => XdpMode::Skb,
            },
            conntrack_entries: args.conntrack_size,
        },
        state_file: daemon::state_file(&args.state_dir),
        settings: Settings {
            seed: args.hash_seed,
            flow_idle: Duration::from_secs(args.flow_idle),
            retire_timeout: args.retire_timeout,
        },
    };
    daemon::run(config, socket).await
}
