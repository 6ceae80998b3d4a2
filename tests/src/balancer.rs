//! The real `balancer` daemon in a topology's LB namespace, and its CLI.

mod flags;
mod site;
mod veth_pass;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use balancer_user::{
    api::{ServiceStatus, Status},
    lifecycle::claim::iface_lock_file,
};

use crate::{
    command::run_bounded,
    netns::{self, spawn, NsProcess},
    topology::Topology,
};

pub use flags::DaemonFlags;
use flags::LabDaemon;
pub use site::Site;
pub use veth_pass::VethPass;

/// The error when `$BALANCER_BIN` does not name the daemon to test.
const BALANCER_BIN_UNSET: &str = "BALANCER_BIN is not set: run the tests with `cargo xtask \
    test`, or build the daemon with `cargo build -p balancer-user` and set \
    BALANCER_BIN=target/debug/balancer";

/// How long one CLI command may run.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the daemon may take to answer after start, or to exit when it refuses to start.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Exit code of a refused command.
pub const REFUSED: i32 = 1;
/// Exit code of a command line the CLI cannot parse.
pub const USAGE: i32 = 2;
/// Exit code when no daemon answers.
pub const UNREACHABLE: i32 = 3;
/// Exit code of a fault of the host.
pub const FAULT: i32 = 4;

/// Interface of the LB host the daemon attaches to.
pub const LB_IFACE: &str = "eth0";

/// Result of one CLI invocation.
#[derive(Debug)]
pub struct CliOutput {
    /// Exit code (None if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// XDP attach mode of the daemon, as its `--xdp-mode` flag spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// Native (driver) mode, the default.
    Native,
    /// Generic (skb) mode.
    Skb,
}

impl XdpMode {
    pub(crate) fn flag(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Skb => "skb",
        }
    }
}

/// The daemon's settings that tests choose.
#[derive(Clone, Debug)]
pub struct DaemonOptions {
    /// `--xdp-mode`.
    pub mode: XdpMode,
    /// `--flow-idle` in seconds. The default, 2, lets drains end quickly; a test that must
    /// show that flows end by other signals than idleness sets it far longer.
    pub flow_idle_s: u64,
    /// `--conntrack-size` (default 65536).
    pub conntrack_size: u32,
    /// More flags for every start, e.g. `--metrics-listen 127.0.0.1:9651`.
    pub extra: Vec<String>,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        Self {
            mode: XdpMode::Native,
            flow_idle_s: 2,
            conntrack_size: 65_536,
            extra: Vec::new(),
        }
    }
}

/// A daemon running in the LB namespace with its own state dir, socket and pins.
pub struct Balancer {
    process: Option<NsProcess>,
    options: DaemonOptions,
    lb_ns: String,
    dir: PathBuf,
    pin_root: PathBuf,
    veth_pass: VethPass,
}

impl Balancer {
    /// Attaches the XDP_PASS helper to the peer of the LB's `eth0` ([`Site::lb_peer`]),
    /// starts the daemon in native XDP mode on the LB's `eth0` and waits until it answers.
    pub fn start(topology: &impl Site) -> Result<Self> {
        Self::start_in_mode(topology, XdpMode::Native)
    }

    /// Like [`Balancer::start`], in the given XDP mode.
    pub fn start_in_mode(topology: &impl Site, mode: XdpMode) -> Result<Self> {
        Self::start_with_options(
            topology,
            DaemonOptions {
                mode,
                ..DaemonOptions::default()
            },
        )
    }

    /// Like [`Balancer::start`], with the given settings.
    pub fn start_with_options(topology: &impl Site, options: DaemonOptions) -> Result<Self> {
        let prefix = topology.lb_ns().trim_end_matches("-lb");
        let dir = std::env::temp_dir().join(format!("balancer-{prefix}"));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir)?;
        let pin_root = PathBuf::from(format!("/sys/fs/bpf/balancer-{prefix}"));
        remove_pins(&pin_root);
        let (peer_ns, peer) = topology.lb_peer();
        let veth_pass = VethPass::attach(peer_ns, peer)?;
        let mut balancer = Self {
            process: None,
            options,
            lb_ns: topology.lb_ns().to_string(),
            dir,
            pin_root,
            veth_pass,
        };
        balancer.spawn_daemon()?;
        Ok(balancer)
    }

    /// Attaches the XDP_PASS helper again, to the LB's bridge-side port as it is now (after
    /// [`Topology::recreate_lb_interface`] made a new one).
    pub fn replug(&mut self, topology: &Topology) -> Result<()> {
        self.veth_pass = VethPass::attach(topology.bridge_ns(), topology.lb_bridge_port())?;
        Ok(())
    }

    /// The daemon's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    /// The control socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("balancer.sock")
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// The state file.
    pub fn state_file(&self) -> PathBuf {
        self.state_dir().join("state.json")
    }

    /// A scratch path of this lab, removed with it (another state directory, socket, ...).
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The daemon's argument vector, binary first, with `flags` over the lab's settings.
    pub fn argv(&self, flags: &DaemonFlags) -> Result<Vec<String>> {
        let bin = binary()?;
        let lab = LabDaemon {
            iface: LB_IFACE,
            state_dir: self.state_dir(),
            socket: self.socket(),
            pin_dir: &self.pin_root,
            mode: self.options.mode,
            conntrack_size: self.options.conntrack_size,
            flow_idle_s: self.options.flow_idle_s,
            extra: &self.options.extra,
        };
        let mut argv = vec![bin.to_str().context("binary path")?.to_string()];
        argv.extend(flags.argv(lab));
        Ok(argv)
    }

    fn spawn_daemon(&mut self) -> Result<()> {
        self.spawn_with(&DaemonFlags::default())
    }

    fn spawn_with(&mut self, flags: &DaemonFlags) -> Result<()> {
        let argv = self.argv(flags)?;
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let process = spawn(&self.lb_ns, &argv, &self.log_path())?;
        self.process = Some(process);
        let socket = flags.socket.clone().unwrap_or_else(|| self.socket());
        self.wait_ready(&socket)
    }

    /// Stops the daemon (SIGKILL) and starts `argv`, a whole command line in the LB
    /// namespace (the binary first, or a wrapper such as `setpriv ... --` before it), with
    /// `env` added to its environment. Does not wait: [`Balancer::wait_answering`] does.
    pub fn spawn_argv(&mut self, argv: &[String], env: &[(&str, &str)]) -> Result<()> {
        self.kill9()?;
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.process = Some(netns::spawn_with_env(
            &self.lb_ns,
            &argv,
            env,
            &self.log_path(),
        )?);
        Ok(())
    }

    /// Waits until the daemon answers on the lab's socket; fails with the log's tail if it
    /// exits or does not answer within 20 s.
    pub fn wait_answering(&mut self) -> Result<()> {
        self.wait_ready(&self.socket())
    }

    /// Stops the daemon (SIGKILL), starts it with `flags` over the lab's settings and waits
    /// until it answers on its socket.
    pub fn start_with(&mut self, flags: &DaemonFlags) -> Result<()> {
        self.kill9()?;
        self.spawn_with(flags)
    }

    /// Runs another daemon in the LB namespace with `flags` over the lab's settings, expecting
    /// it to exit by itself (a refusal to start); fails if it still runs after 20 s. The lab's
    /// own daemon, if running, is left alone.
    pub fn run_daemon_to_exit(&self, flags: &DaemonFlags) -> Result<CliOutput> {
        self.run_daemon_to_exit_in(&self.lb_ns, flags)
    }

    /// Like [`Balancer::run_daemon_to_exit`], in namespace `ns` (e.g. the client's, which
    /// has an `eth0` too).
    pub fn run_daemon_to_exit_in(&self, ns: &str, flags: &DaemonFlags) -> Result<CliOutput> {
        let argv = self.argv(flags)?;
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = run_bounded(&mut netns::command(ns, &argv), None, READY_TIMEOUT)?;
        Ok(CliOutput {
            code: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }

    /// Whether the lab's daemon process is running.
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(|p| p.is_running())
    }

    fn wait_ready(&mut self, socket: &Path) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let out = run_cli(&binary()?, socket, &["status", "--json"])?;
            if out.code == Some(0) {
                return Ok(());
            }
            let running = self.process.as_mut().is_some_and(|p| p.is_running());
            if !running || Instant::now() > deadline {
                bail!(
                    "daemon did not become ready ({}); log:\n{}",
                    out.stderr.trim(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of the daemon log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Runs `balancer --socket SOCKET args...` from the test process.
    pub fn cli(&self, args: &[&str]) -> Result<CliOutput> {
        run_cli(&binary()?, &self.socket(), args)
    }

    /// Runs the CLI and requires success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.cli(args)?;
        Self::succeeded(args, out)
    }

    /// [`Balancer::ok`] for a request the daemon may take up to `timeout` to answer (a
    /// large `apply`): the CLI gets `--timeout`, and is bounded by it rather than 30 s.
    pub fn ok_within(&self, args: &[&str], timeout: Duration) -> Result<String> {
        let flag = format!("--timeout={}s", timeout.as_secs());
        let args = [&[flag.as_str()], args].concat();
        let out = run_cli_within(
            &binary()?,
            &self.socket(),
            &args,
            timeout + Duration::from_secs(5),
        )?;
        Self::succeeded(&args, out)
    }

    /// The standard output of `out`, the CLI's run with `args`, if it exited 0.
    fn succeeded(args: &[&str], out: CliOutput) -> Result<String> {
        if out.code != Some(0) {
            bail!(
                "`balancer {}` failed ({:?}): {}",
                args.join(" "),
                out.code,
                out.stderr.trim()
            );
        }
        Ok(out.stdout)
    }

    /// Runs the CLI once and requires a refusal of bad input, by the CLI's parser (exit
    /// code 2) or by the CLI or daemon after parsing (1), with exactly one line on standard
    /// error, starting with `error:`.
    pub fn refused(&self, args: &[&str]) -> Result<()> {
        self.failed_with_one_of(args, &[REFUSED, USAGE])
    }

    /// Runs the CLI and requires exit code `code` with exactly one line on standard error,
    /// starting with `error:` (1 refused, 2 bad usage, 3 unreachable, 4 fault).
    pub fn failed_with(&self, args: &[&str], code: i32) -> Result<()> {
        self.failed_with_one_of(args, &[code])
    }

    fn failed_with_one_of(&self, args: &[&str], codes: &[i32]) -> Result<()> {
        let out = self.cli(args)?;
        let lines: Vec<&str> = out.stderr.trim().lines().collect();
        let coded = out.code.is_some_and(|code| codes.contains(&code));
        if !coded || lines.len() != 1 || !lines[0].starts_with("error:") {
            bail!(
                "`balancer {}` did not fail with exit code {codes:?} and one error line: {out:?}",
                args.join(" ")
            );
        }
        Ok(())
    }

    /// `status --json`, parsed.
    pub fn status(&self) -> Result<Status> {
        let text = self.ok(&["status", "--json"])?;
        serde_json::from_str(&text).context("parse status --json")
    }

    /// The services of `status --json` without the traffic counters (new flows, packets,
    /// bytes, active flows, the client-side signals), which move with traffic and time: what
    /// a refused command must leave unchanged.
    pub fn settings(&self) -> Result<Vec<ServiceStatus>> {
        let mut services = self.status()?.services;
        for backend in services.iter_mut().flat_map(|s| s.backends.iter_mut()) {
            backend.new_flows = 0;
            backend.packets = 0;
            backend.bytes = 0;
            backend.active_flows = 0;
            backend.fin_closes = 0;
            backend.resets = 0;
            backend.syn_retransmits = 0;
            backend.unanswered_flows = 0;
        }
        Ok(services)
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.pid())
    }

    /// SIGKILLs the daemon (the data plane stays attached).
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut p) = self.process.take() {
            p.kill()?;
        }
        Ok(())
    }

    /// Sends SIGTERM and waits (bounded) for the daemon to exit.
    pub fn terminate(&mut self) -> Result<()> {
        self.wait_exit_after(Some(libc::SIGTERM))
    }

    /// Waits (bounded) for the daemon to exit on its own, e.g. after `teardown`.
    pub fn wait_exit(&mut self) -> Result<()> {
        self.wait_exit_after(None)
    }

    fn wait_exit_after(&mut self, signal: Option<i32>) -> Result<()> {
        let Some(process) = self.process.as_mut() else {
            return Ok(());
        };
        if let Some(signal) = signal {
            let pid = i32::try_from(process.pid())?;
            // SAFETY: plain syscall on our own unreaped child.
            unsafe { libc::kill(pid, signal) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while process.is_running() {
            if Instant::now() > deadline {
                bail!("daemon did not exit; log:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.process = None;
        Ok(())
    }

    /// Starts the daemon again with the same settings and waits until it answers.
    pub fn restart(&mut self) -> Result<()> {
        self.kill9()?;
        self.spawn_daemon()
    }

    /// The bpffs directory of this daemon's pins.
    pub fn pin_root(&self) -> &Path {
        &self.pin_root
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.cli(&["teardown"]);
        let _ = self.kill9();
        remove_pins(&self.pin_root);
        std::fs::remove_dir_all(&self.dir).ok();
        // A daemon that was killed leaves its interface lock file.
        if let Ok(netns) = std::fs::metadata(format!("/run/netns/{}", self.lb_ns)) {
            use std::os::unix::fs::MetadataExt as _;
            std::fs::remove_file(iface_lock_file(LB_IFACE, netns.ino())).ok();
        }
    }
}

/// Removes a pin tree; unpinning the link detaches the program once no fd holds it.
fn remove_pins(root: &Path) {
    std::fs::remove_dir_all(root).ok();
}

/// Runs the CLI `binary --socket SOCKET args...` from the calling process; kills it and
/// fails naming the command if it runs longer than 30 s (`CLI_TIMEOUT`).
pub fn run_cli(binary: &Path, socket: &Path, args: &[&str]) -> Result<CliOutput> {
    run_cli_within(binary, socket, args, CLI_TIMEOUT)
}

/// [`run_cli`] bounded by `timeout` instead of `CLI_TIMEOUT`.
fn run_cli_within(
    binary: &Path,
    socket: &Path,
    args: &[&str],
    timeout: Duration,
) -> Result<CliOutput> {
    let mut command = Command::new(binary);
    command.arg("--socket").arg(socket).args(args);
    let out = run_bounded(&mut command, None, timeout)?;
    Ok(CliOutput {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: out.stderr,
    })
}

/// The `balancer` binary of this test run: `$BALANCER_BIN`, which `cargo xtask test` sets
/// to the daemon it has just built.
pub fn binary() -> Result<PathBuf> {
    let bin = std::env::var_os("BALANCER_BIN")
        .map(PathBuf::from)
        .context(BALANCER_BIN_UNSET)?;
    if !bin.exists() {
        bail!("BALANCER_BIN={} does not exist", bin.display());
    }
    Ok(bin)
}
