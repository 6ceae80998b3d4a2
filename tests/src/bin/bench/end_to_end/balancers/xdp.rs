//! The `balancer` daemon in the LB's namespace, attached natively to its `eth0`, with a UDP
//! service for the flood and a TCP service for the connection test, both on the two
//! backends. Configured through its CLI, like an operator would.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use balancer_tests::{
    balancer::run_cli,
    netns::{spawn, NsProcess},
};

use crate::end_to_end::{
    generator::FLOOD_PORT,
    responder::TCP_PORT,
    topology::{backend_addr, BACKENDS, IFACE, LB_NS, VIP},
};

/// The daemon's bpffs pin directory, unique to this section.
const PIN_DIR: &str = "/sys/fs/bpf/balancer-bbe2e";
/// How long the daemon may take to answer its CLI after start.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The configuration, for the report.
pub fn describe() -> String {
    format!(
        "`balancer daemon --iface {IFACE} --xdp-mode native`; services `{VIP}:{FLOOD_PORT}/udp` \
         and `{VIP}:{TCP_PORT}/tcp`, each with both backends in one group (Maglev, \
         connection affinity); L2 DSR: MAC rewrite and redirect to the backend's veth"
    )
}

/// The running daemon; dropping it tears the data plane down, kills the daemon and removes
/// its pins and files.
pub struct Daemon {
    process: Option<NsProcess>,
    dir: PathBuf,
}

impl Daemon {
    /// Starts the daemon with its files under `scratch` and configures both services.
    pub fn start(scratch: &Path) -> Result<Self> {
        let dir = scratch.join("daemon");
        std::fs::remove_dir_all(&dir).ok();
        std::fs::remove_dir_all(PIN_DIR).ok();
        std::fs::create_dir_all(&dir)?;
        let mut daemon = Daemon { process: None, dir };
        let bin = binary()?;
        let (socket, state) = (daemon.socket(), daemon.dir.join("state"));
        let argv = [
            path_text(&bin)?,
            "daemon",
            "--iface",
            IFACE,
            "--xdp-mode",
            "native",
            "--socket",
            path_text(&socket)?,
            "--state-dir",
            path_text(&state)?,
            "--pin-dir",
            PIN_DIR,
            "--conntrack-size",
            "65536",
        ];
        daemon.process = Some(spawn(LB_NS, &argv, &daemon.log())?);
        daemon.wait_ready()?;
        for (name, port, protocol) in [("flood", FLOOD_PORT, "udp"), ("conns", TCP_PORT, "tcp")] {
            daemon.cli(&[
                "service",
                "add",
                name,
                "--vip",
                &format!("{VIP}:{port}/{protocol}"),
            ])?;
            for index in 0..BACKENDS {
                let addr = backend_addr(index).to_string();
                daemon.cli(&["backend", "add", name, &addr, "--group", "main"])?;
            }
        }
        Ok(daemon)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("balancer.sock")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    /// Runs `balancer --socket SOCKET ARGS` and requires success.
    fn cli(&self, args: &[&str]) -> Result<()> {
        let out = run_cli(&binary()?, &self.socket(), args)?;
        if out.code != Some(0) {
            bail!(
                "`balancer {}` failed: {}",
                args.join(" "),
                out.stderr.trim()
            );
        }
        Ok(())
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while let Err(error) = self.cli(&["status"]) {
            let running = self.process.as_mut().is_some_and(|p| p.is_running());
            if !running || Instant::now() > deadline {
                let log = std::fs::read_to_string(self.log()).unwrap_or_default();
                bail!("the daemon did not become ready: {error:#}; log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(error) = self.cli(&["teardown"]) {
            eprintln!("warning: {error:#}");
        }
        self.process = None;
        std::fs::remove_dir_all(PIN_DIR).ok();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// The daemon binary: `$BALANCER_BIN`, else `balancer` next to this bench binary (`cargo
/// xtask bench` builds both in release mode).
fn binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("BALANCER_BIN") {
        return Ok(bin.into());
    }
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("balancer");
    if !bin.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p balancer-user` or set \
             BALANCER_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

fn path_text(path: &Path) -> Result<&str> {
    path.to_str().context("non-UTF-8 path")
}
