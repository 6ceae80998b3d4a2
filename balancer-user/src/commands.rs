//! Runs a parsed command line: the daemon itself, or one operation sent to it and its
//! answer shown, or `events`: pages of the history, and with `--follow` new ones as they
//! come.

use std::{io::Write as _, path::Path, time::Duration};

use anyhow::Context as _;
use aya::programs::XdpMode;
use clap::CommandFactory as _;

use crate::{
    announce,
    api::{Events, FleetStatus, Status},
    cli::{request, Cli, Command, DaemonArgs, DecapArgs, EventsArgs, Output, TeardownArgs},
    client::{Client, ClientError},
    controller::Settings,
    daemon::{self, DaemonConfig, Fleet},
    daemon_file,
    dataplane::bpffs::Layout,
    decap,
    error::{Error, Refused},
    history::{Query, MAX_PAGE},
    lifecycle::{self, settings::Requested},
    logging,
    operation::Operation,
    quiet, report,
    wait::{self, track::Kind, Waiting},
    watch::{self, Watch},
};

/// How often `events --follow` asks for new events.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Executes `cli`.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Daemon(args) => return run_daemon(args, &cli.socket).await,
        Command::Teardown(args) => return teardown(args, &cli.socket).await,
        Command::Decap(args) => {
            let text = tokio::task::spawn_blocking(move || decap(args)).await??;
            return write_out(&text);
        }
        Command::Events(args) => {
            let client = Client::new(&cli.socket).with_timeout(cli.timeout);
            return events(args, &client).await;
        }
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
    let leaving = cli.command.leaving();
    let (operation, output) = request(cli.command)?;
    let answer = client.run(&operation).await?;
    write_out(&show(output, &answer)?)?;
    if let Some((quiet, timeout)) = leaving {
        print_line(&format!(
            "waiting until no packet reaches this host's VIPs for {}",
            humantime::format_duration(quiet)
        ))?;
        let stopped = quiet::run(&client, quiet, timeout).await?;
        return print_line(&format!(
            "no packet since {:.1} s after leaving, for {}: this host's flows are served elsewhere",
            stopped.as_secs_f64(),
            humantime::format_duration(quiet)
        ));
    }
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
            ))?;
            match args.announce_table {
                Some(table) => {
                    let withdrawn =
                        tokio::task::spawn_blocking(move || announce::routes::withdraw(table))
                            .await?
                            .map_err(Error::from)?;
                    write_out(&format!(
                        "{withdrawn} VIP announcement(s) withdrawn from routing table {table}\n"
                    ))
                }
                None => Ok(()),
            }
        }
        Err(e @ ClientError::Unreachable(..)) => Err(anyhow::Error::from(e)
            .context("no daemon to tear down (give --iface to remove its pins without one)")),
        Err(e) => Err(e.into()),
    }
}

/// `decap`: attaches, removes or reads the decapsulator; the text to print.
fn decap(args: DecapArgs) -> anyhow::Result<String> {
    let DecapArgs { iface, pin_dir, .. } = &args;
    if args.remove {
        decap::remove(pin_dir, iface).map_err(Error::from)?;
        return Ok(format!(
            "decapsulator detached from {iface}, pins removed\n"
        ));
    }
    if args.status {
        let counters = decap::counters(pin_dir, iface).map_err(Error::from)?;
        return Ok(match args.json {
            true => format!("{}\n", serde_json::to_string(&counters)?),
            false => report::decap(iface, &counters),
        });
    }
    let settings = decap::Settings {
        gue_port: args.gue_port,
        allow: args.allow.clone(),
    };
    let attached =
        decap::attach(pin_dir, iface, args.xdp_mode.into(), &settings).map_err(Error::from)?;
    let how = match attached {
        decap::Attached::New => "attached to",
        decap::Attached::Replaced => "replaced on",
    };
    Ok(format!(
        "decapsulator {how} {iface} (GUE port {}, {}), pinned under {}\n",
        settings.gue_port,
        match settings.allow.is_empty() {
            true => "from any source".to_string(),
            false => format!("from {} allowed prefixes", settings.allow.len()),
        },
        pin_dir.join(iface).display()
    ))
}

/// `events`: every kept event (of one service), a page at a time; with `--follow`, then
/// every new one, asking every [`FOLLOW_POLL`], until interrupted or standard output is
/// closed.
async fn events(args: EventsArgs, client: &Client) -> anyhow::Result<()> {
    let mut after = 0;
    loop {
        let query = Query {
            service: args.name.clone(),
            after,
            limit: MAX_PAGE,
        };
        let answer = client.run(&Operation::Events(query)).await?;
        let Events { events } = serde_json::from_slice(&answer)?;
        let text: String = events
            .iter()
            .map(|e| match args.json {
                true => e.line(),
                false => report::event(e),
            })
            .collect();
        if !written(&text)? {
            return Ok(());
        }
        after = events.last().map_or(after, |e| e.seq);
        if events.len() == MAX_PAGE {
            continue;
        }
        if !args.follow || stdout_closed() {
            return Ok(());
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

/// Writes `text` to standard output. A reader that went away (`balancer status | head -1`)
/// is not an error: there is nobody left to tell.
fn write_out(text: &str) -> anyhow::Result<()> {
    written(text).map(drop)
}

/// Writes `text` to standard output; false when its reader went away.
fn written(text: &str) -> anyhow::Result<bool> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        written => Ok(written.map(|()| true)?),
    }
}

/// Whether standard output was closed at its other end (the reader of a pipe exited, the
/// terminal hung up), so that a follower with nothing to write notices too.
fn stdout_closed() -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no waiting.
    let ready = unsafe { libc::poll(&mut fd, 1, 0) };
    ready > 0 && fd.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

/// The text of the answer of a command as `output` says.
fn show(output: Output, answer: &[u8]) -> anyhow::Result<String> {
    let status = || -> anyhow::Result<Status> { Ok(serde_json::from_slice(answer)?) };
    Ok(match output {
        Output::Quiet => String::new(),
        Output::Toml => String::from_utf8_lossy(answer).into_owned(),
        Output::Fleet { json } => {
            let fleet: FleetStatus = serde_json::from_slice(answer)?;
            match json {
                true => pretty(&fleet)?,
                false => crate::fleet::view::render(&fleet),
            }
        }
        Output::TornDown => "data plane detached, pins removed, daemon stopped\n".into(),
        Output::Left => "left the fleet: this host's VIPs are withdrawn\n".into(),
        Output::Joined => "joined the fleet: this host's VIPs are announced\n".into(),
        Output::Status { json: true } => pretty(&status()?)?,
        Output::Status { json: false } => report::status(&status()?),
        Output::Services { json: true } => pretty(&status()?.service_entries())?,
        Output::Services { json: false } => report::service_list(&status()?),
        Output::Pins { json: true } => pretty(&status()?.pin_entries())?,
        Output::Pins { json: false } => report::pins(&status()?),
        Output::Rollout { name, json } => {
            let status = status()?;
            let rollout = status.services.first().and_then(|s| s.rollout.as_ref());
            match (rollout, json) {
                (_, true) => pretty(&rollout)?,
                (Some(r), false) => report::rollout(&name, r),
                (None, false) => format!("service {name} has had no rollout\n"),
            }
        }
    })
}

/// `value` as pretty JSON and a newline.
fn pretty<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(format!("{}\n", serde_json::to_string_pretty(value)?))
}

/// Refuses the daemon's fleet flags given without `--store` (in one line).
fn fleet_flags(args: &DaemonArgs) -> Result<(), Refused> {
    if args.store.is_some() {
        return Ok(());
    }
    if args.host_name.is_some() {
        let alone = "--host-name names this host in a fleet: give --store too";
        return Err(Refused::Request(alone.into()));
    }
    if args.sync_listen.is_some() {
        let alone = "--sync-listen syncs flows with a fleet's other hosts: give --store too";
        return Err(Refused::Request(alone.into()));
    }
    if args.leader_ttl.is_some() {
        let alone = "--leader-ttl is the lease of a fleet's leader: give --store too";
        return Err(Refused::Request(alone.into()));
    }
    Ok(())
}

async fn run_daemon(args: DaemonArgs, socket: &Path) -> anyhow::Result<()> {
    let (args, socket) = match args.config {
        // The file's settings, where the command line gives none.
        Some(_) => {
            let argv: Vec<_> = std::env::args_os().collect();
            daemon_file::merge(&argv).map_err(Refused::from)?
        }
        None => (args, socket.to_path_buf()),
    };
    fleet_flags(&args)?;
    let Some(iface) = args.iface else {
        // Only with --config: without it, clap requires --iface.
        let file = args.config.unwrap_or_default();
        let missing = format!("{}: no iface, and no --iface given", file.display());
        return Err(Refused::Request(missing).into());
    };
    logging::init(args.log_format);
    let config = DaemonConfig {
        pins: Layout::new(&args.pin_dir, &iface),
        iface,
        state_dir: args.state_dir,
        empty_state: args.empty_state,
        metrics_listen: args.metrics_listen,
        announce_table: args.announce_table,
        sync_listen: args.sync_listen,
        fleet: args.store.map(|store| Fleet {
            store,
            host: args
                .host_name
                .unwrap_or_else(crate::fleet::host::system_name),
            leader_ttl: args
                .leader_ttl
                .unwrap_or(crate::fleet::member::DEFAULT_LEADER_TTL),
        }),
        requested: Requested {
            conntrack_size: args.conntrack_size,
            xdp_mode: args.xdp_mode.map(XdpMode::from),
        },
        settings: Settings {
            seed: args.hash_seed,
            flow_idle: Duration::from_secs(args.flow_idle),
            retire_timeout: args.retire_timeout,
        },
    };
    daemon::run(config, &socket).await
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    /// The daemon's arguments of `args`, or clap's one-line refusal.
    fn daemon(args: &[&str]) -> Result<DaemonArgs, String> {
        let argv = ["balancer", "daemon", "--iface", "eth0"].iter().chain(args);
        match Cli::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .command
        {
            Command::Daemon(args) => Ok(args),
            _ => unreachable!("a daemon command line"),
        }
    }

    #[test]
    fn sync_listen_needs_a_store_and_an_address_peers_can_send_to() {
        let alone = daemon(&["--sync-listen", "198.18.1.1:7070"]).unwrap();
        let refused = fleet_flags(&alone).unwrap_err().to_string();
        assert_eq!(
            refused,
            "--sync-listen syncs flows with a fleet's other hosts: give --store too"
        );
        let fleet = ["--store", "etcd://198.18.1.9:2379/lb", "--sync-listen"];
        let ok = daemon(&[&fleet[..], &["198.18.1.1:7070"]].concat()).unwrap();
        fleet_flags(&ok).unwrap();
        assert_eq!(ok.sync_listen, Some("198.18.1.1:7070".parse().unwrap()));
        for bad in ["0.0.0.0:7070", "[::]:7070", "198.18.1.1:0", "198.18.1.1"] {
            // clap's usage error: one line, then its hint of --help.
            let refused = daemon(&[&fleet[..], &[bad]].concat()).unwrap_err();
            let line = refused.lines().next().unwrap();
            assert!(
                line.contains("for '--sync-listen <ADDR:PORT>': "),
                "{bad}: {line}"
            );
        }
    }
}
