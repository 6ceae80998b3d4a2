//! Runs a parsed command line: the daemon itself, or one request to it.

use std::{io::Read, time::Duration};

use anyhow::Context as _;
use aya::programs::XdpMode;
use hyper::Method;

use crate::{
    api::{
        AddBackend, AddService, Flip, PinRequest, SetHealth, SetSplit, SetWeight, StartCanary,
        StartDrain, StartRollout, Status,
    },
    cli::{
        BackendCommand, CanaryCommand, Cli, Command, DaemonArgs, PinCommand, RolloutAction,
        RolloutArgs, ServiceCommand, XdpModeArg,
    },
    client::{segment, Client},
    controller::ControllerConfig,
    daemon,
    dataplane::{pins::PinLayout, AttachOptions},
    report,
    state::{format_basis_points, Preset},
};

/// Executes `cli`.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = Client::new(&cli.socket);
    match cli.command {
        Command::Daemon(args) => run_daemon(args, &cli.socket).await,
        Command::Service(cmd) => service(&client, cmd).await,
        Command::Backend(cmd) => backend(&client, cmd).await,
        Command::Pin(cmd) => pin(&client, cmd).await,
        Command::Canary(cmd) => canary(&client, cmd).await,
        Command::Rollout(args) => rollout(&client, args).await,
        Command::Split { name, shares } => {
            client
                .send_json(
                    Method::PUT,
                    &format!("/services/{}/split", segment(&name)),
                    &SetSplit { shares },
                )
                .await?;
            Ok(())
        }
        Command::Flip {
            name,
            to,
            drain_timeout,
        } => {
            let body = Flip {
                to,
                drain_timeout_ms: drain_timeout.map(|d| d.as_millis() as u64),
            };
            client
                .send_json(
                    Method::PUT,
                    &format!("/services/{}/flip", segment(&name)),
                    &body,
                )
                .await?;
            Ok(())
        }
        Command::Status { name, json } => {
            let path = match &name {
                Some(n) => format!("/status?service={}", segment(n)),
                None => "/status".to_string(),
            };
            let status: Status = client.get_json(&path).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", report::status(&status));
            }
            Ok(())
        }
        Command::Apply { file } => {
            let text = if file.as_os_str() == "-" {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text)?;
                text
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            };
            client
                .send(
                    Method::POST,
                    "/apply",
                    Some((text.into_bytes(), "application/toml")),
                )
                .await?;
            Ok(())
        }
        Command::Export => {
            let bytes = client.send(Method::GET, "/export", None).await?;
            print!("{}", String::from_utf8_lossy(&bytes));
            Ok(())
        }
        Command::Teardown => {
            client.send(Method::POST, "/teardown", None).await?;
            println!("data plane detached, pins removed, daemon stopped");
            Ok(())
        }
    }
}

async fn run_daemon(args: DaemonArgs, socket: &std::path::Path) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = ControllerConfig {
        attach: AttachOptions {
            pins: PinLayout::new(&args.pin_dir, &args.iface),
            iface: args.iface,
            mode: match args.xdp_mode {
                XdpModeArg::Native => XdpMode::Driver,
                XdpModeArg::Skb => XdpMode::Skb,
            },
            conntrack_entries: args.conntrack_size,
        },
        state_file: daemon::state_file(&args.state_dir),
        seed: args.hash_seed,
        flow_idle: Duration::from_secs(args.flow_idle),
    };
    daemon::run(config, socket).await
}

async fn service(client: &Client, cmd: ServiceCommand) -> anyhow::Result<()> {
    match cmd {
        ServiceCommand::Add {
            name,
            vip,
            affinity,
            table_size,
            health,
        } => {
            let body = AddService {
                name,
                vip,
                affinity: affinity.into(),
                table_size,
                health: health.check()?,
            };
            client.send_json(Method::POST, "/services", &body).await?;
        }
        ServiceCommand::Set {
            name,
            health,
            no_health,
        } => {
            let health = health.check()?;
            if health.is_none() && !no_health {
                anyhow::bail!("nothing to set: give --health KIND or --no-health");
            }
            client
                .send_json(
                    Method::PUT,
                    &format!("/services/{}/health", segment(&name)),
                    &SetHealth { health },
                )
                .await?;
        }
        ServiceCommand::Remove { name } => {
            client
                .send(
                    Method::DELETE,
                    &format!("/services/{}", segment(&name)),
                    None,
                )
                .await?;
        }
        ServiceCommand::List { json } => {
            let status: Status = client.get_json("/status").await?;
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
    }
    Ok(())
}

async fn backend(client: &Client, cmd: BackendCommand) -> anyhow::Result<()> {
    match cmd {
        BackendCommand::Add {
            name,
            addr,
            group,
            weight,
        } => {
            let body = AddBackend {
                addr,
                group,
                weight: Some(weight),
            };
            client
                .send_json(
                    Method::POST,
                    &format!("/services/{}/backends", segment(&name)),
                    &body,
                )
                .await?;
        }
        BackendCommand::SetWeight { name, addr, weight } => {
            client
                .send_json(
                    Method::PUT,
                    &format!("/services/{}/backends/{addr}/weight", segment(&name)),
                    &SetWeight { weight },
                )
                .await?;
        }
        BackendCommand::Drain {
            name,
            addr,
            timeout,
        } => {
            client
                .send_json(
                    Method::POST,
                    &format!("/services/{}/backends/{addr}/drain", segment(&name)),
                    &StartDrain {
                        timeout_ms: timeout.map(|t| t.as_millis() as u64),
                    },
                )
                .await?;
        }
        BackendCommand::Remove { name, addr } => {
            client
                .send(
                    Method::DELETE,
                    &format!("/services/{}/backends/{addr}", segment(&name)),
                    None,
                )
                .await?;
        }
    }
    Ok(())
}

async fn pin(client: &Client, cmd: PinCommand) -> anyhow::Result<()> {
    match cmd {
        PinCommand::Add { name, cidr, group } => {
            client
                .send_json(
                    Method::POST,
                    &format!("/services/{}/pins", segment(&name)),
                    &PinRequest { cidr, group },
                )
                .await?;
        }
        PinCommand::Remove { name, cidr } => {
            client
                .send_json(
                    Method::DELETE,
                    &format!("/services/{}/pins", segment(&name)),
                    &PinRequest {
                        cidr,
                        group: String::new(),
                    },
                )
                .await?;
        }
        PinCommand::List { name, json } => {
            let path = match &name {
                Some(n) => format!("/status?service={}", segment(n)),
                None => "/status".to_string(),
            };
            let status: Status = client.get_json(&path).await?;
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
    }
    Ok(())
}

async fn canary(client: &Client, cmd: CanaryCommand) -> anyhow::Result<()> {
    let (name, action) = match cmd {
        CanaryCommand::Start {
            name,
            from,
            to,
            steps,
            interval,
            preset,
            auto_rollback,
            rollback_threshold,
        } => {
            let (steps, interval_ms) = match preset {
                Some(preset) => {
                    let (steps, interval_ms) = Preset::from(preset).plan();
                    (
                        steps.into_iter().map(format_basis_points).collect(),
                        interval_ms,
                    )
                }
                None => {
                    let interval_ms = interval.map_or(0, |d| d.as_millis() as u64);
                    if steps.len() > 1 && interval_ms == 0 {
                        anyhow::bail!("--interval is needed with several --steps");
                    }
                    (steps, interval_ms)
                }
            };
            let body = StartCanary {
                from,
                to,
                steps,
                interval_ms,
                auto_rollback: auto_rollback.then_some(rollback_threshold),
            };
            client
                .send_json(
                    Method::POST,
                    &format!("/services/{}/canary", segment(&name)),
                    &body,
                )
                .await?;
            return Ok(());
        }
        CanaryCommand::Pause { name } => (name, "pause"),
        CanaryCommand::Resume { name } => (name, "resume"),
        CanaryCommand::Promote { name } => (name, "promote"),
        CanaryCommand::Abort { name } => (name, "abort"),
    };
    client
        .send(
            Method::POST,
            &format!("/services/{}/canary/{action}", segment(&name)),
            None,
        )
        .await?;
    Ok(())
}

async fn rollout(client: &Client, args: RolloutArgs) -> anyhow::Result<()> {
    match args.action {
        Some(RolloutAction::Status { name }) => {
            let status: Status = client
                .get_json(&format!("/status?service={}", segment(&name)))
                .await?;
            let rollout = status.services.first().and_then(|s| s.rollout.as_ref());
            match rollout {
                Some(r) => print!("{}", report::rollout(&name, r)),
                None => println!("service {name} has had no rollout"),
            }
        }
        Some(RolloutAction::Abort { name }) => {
            client
                .send(
                    Method::POST,
                    &format!("/services/{}/rollout/abort", segment(&name)),
                    None,
                )
                .await?;
        }
        None => {
            let (Some(name), Some(group)) = (args.name, args.group) else {
                anyhow::bail!("give NAME and --group");
            };
            let body = StartRollout {
                group,
                pairs: args.replace,
                ready_timeout_ms: args.ready_timeout.as_millis() as u64,
                slow_start_ms: args.slow_start.as_millis() as u64,
                drain_timeout_ms: args.drain_timeout.map(|d| d.as_millis() as u64),
            };
            client
                .send_json(
                    Method::POST,
                    &format!("/services/{}/rollout", segment(&name)),
                    &body,
                )
                .await?;
        }
    }
    Ok(())
}
