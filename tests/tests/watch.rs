//! The live view against a real daemon with traffic: `status --watch` in a real
//! pseudo-terminal (its screen read back by a terminal emulator), quit with `q` and with
//! Ctrl-C, the terminal restored; `--json` (NDJSON with rates) and the plain text of `top`
//! when standard output is a pipe.

use std::{
    io::{Read as _, Write as _},
    num::NonZeroU16,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use balancer_tests::{
    balancer::{binary, run_cli, UNREACHABLE},
    lab::Lab,
    traffic::NewConnections,
};
use nix::sys::termios::LocalFlags;
use portable_pty::{native_pty_system, Child, CommandBuilder, MasterPty, PtySize};

/// Backends b0, b1 are blue; b2, b3 are green.
const GROUPS: [&str; 4] = ["blue", "blue", "green", "green"];

/// Rows of the pseudo-terminal.
const ROWS: NonZeroU16 = NonZeroU16::new(40).unwrap();
/// Columns of the pseudo-terminal.
const COLS: NonZeroU16 = NonZeroU16::new(160).unwrap();

/// A CLI command running in a pseudo-terminal, its output fed to a terminal emulator.
struct Terminal {
    master: Box<dyn MasterPty + Send>,
    writer: Box<dyn std::io::Write + Send>,
    child: Box<dyn Child + Send + Sync>,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Terminal {
    /// Runs `balancer --socket SOCKET args...` in a new 160 × 40 pseudo-terminal.
    fn spawn(lab: &Lab, args: &[&str]) -> Result<Self> {
        let pair = native_pty_system().openpty(PtySize {
            rows: ROWS.get(),
            cols: COLS.get(),
            pixel_width: 0,
            pixel_height: 0,
        })?;
        let mut command = CommandBuilder::new(binary()?);
        command.arg("--socket");
        command.arg(lab.balancer.socket());
        command.args(args);
        command.env("TERM", "xterm-256color");
        let child = pair.slave.spawn_command(command)?;
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader()?;
        let output = Arc::new(Mutex::new(Vec::new()));
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = reader.read(&mut chunk) {
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        let writer = pair.master.take_writer()?;
        Ok(Self {
            master: pair.master,
            writer,
            child,
            output,
        })
    }

    /// The screen as the terminal shows it now.
    fn screen(&self) -> vt100::Screen {
        let mut parser = vt100::Parser::new(ROWS, COLS, 0);
        parser.process(&self.output.lock().unwrap());
        parser.screen().clone()
    }

    /// Polls the screen until `check` holds, for at most `limit`.
    fn wait_for(
        &self,
        limit: Duration,
        what: &str,
        check: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let start = Instant::now();
        loop {
            let contents = self.screen().contents();
            if check(&contents) {
                return Ok(contents);
            }
            ensure!(
                start.elapsed() < limit,
                "{what} not on the screen within {limit:?}:\n{contents}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the terminal is in raw mode (no line editing).
    fn raw(&self) -> Result<bool> {
        let termios = self.master.get_termios().context("no termios")?;
        Ok(!termios.local_flags.contains(LocalFlags::ICANON))
    }

    /// Types `keys`.
    fn type_keys(&mut self, keys: &str) -> Result<()> {
        self.writer.write_all(keys.as_bytes())?;
        self.writer.flush()?;
        Ok(())
    }

    /// Waits (bounded) for the command to exit; its exit code.
    fn wait_exit(&mut self, limit: Duration) -> Result<u32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.exit_code());
            }
            if start.elapsed() > limit {
                self.child.kill()?;
                bail!(
                    "did not exit within {limit:?}:\n{}",
                    self.screen().contents()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The NEW/s rate of the screen's row of `backend` (the sixth column), if it shows one.
fn new_flows_rate(screen: &str, backend: &str) -> Option<f64> {
    let row = screen
        .lines()
        .find(|l| l.split_whitespace().any(|w| w.trim_matches('│') == backend))?;
    let words: Vec<&str> = row
        .split_whitespace()
        .map(|w| w.trim_matches('│'))
        .filter(|w| !w.is_empty())
        .collect();
    let rate = words.get(5)?;
    let (number, scale) = match rate.strip_suffix('k') {
        Some(n) => (n, 1e3),
        None => (*rate, 1.0),
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

#[test]
fn status_watch_draws_rates_in_a_terminal_and_q_or_ctrl_c_restores_it() -> Result<()> {
    let lab = Lab::new("bwt1")?;
    let service = lab.service("web", false, &GROUPS, &[100; 4])?;
    lab.balancer.ok(&["split", "web", "blue=50", "green=50"])?;
    let stream = NewConnections::start(&lab.client, service);
    let blue = lab.topology.backend_v4(0).to_string();
    for (quit, name) in [("q", "q"), ("\x03", "Ctrl-C")] {
        let mut watch = Terminal::spawn(&lab, &["status", "--watch"])?;
        let screen = watch.wait_for(Duration::from_secs(20), "a new-flow rate", |s| {
            new_flows_rate(s, &blue).is_some_and(|rate| rate > 0.0)
        })?;
        ensure!(
            screen.contains("service web  198.19.0.1:80/tcp  split blue=50.00% green=50.00%"),
            "{screen}"
        );
        ensure!(
            screen.contains("GROUP / BACKEND") && screen.contains("green"),
            "{screen}"
        );
        ensure!(
            watch.raw()? && watch.screen().alternate_screen(),
            "the view is not in raw mode on the alternate screen"
        );
        watch.type_keys(quit)?;
        let code = watch.wait_exit(Duration::from_secs(10))?;
        ensure!(code == 0, "{name}: exit code {code}");
        ensure!(
            !watch.raw()? && !watch.screen().alternate_screen(),
            "{name}: the terminal was not restored"
        );
    }
    stream.stop().ensure_served()?;
    Ok(())
}

#[test]
fn watch_json_streams_one_frame_per_refresh_and_top_prints_text_blocks() -> Result<()> {
    let lab = Lab::new("bwt2")?;
    let service = lab.service("web", false, &GROUPS, &[100; 4])?;
    let stream = NewConnections::start(&lab.client, service);
    let out = lab
        .balancer
        .ok(&["status", "web", "--watch", "--json", "--count", "3"])?;
    let frames: Vec<serde_json::Value> = out
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("not NDJSON: {out}"))?;
    ensure!(frames.len() == 3, "{out}");
    ensure!(
        frames[0]["interval_ms"].is_null()
            && frames[0]["rates"][0]["groups"][0]["new_flows"].is_null(),
        "the first frame has rates: {}",
        frames[0]
    );
    for frame in &frames[1..] {
        ensure!(frame["interval_ms"].as_u64().is_some(), "{frame}");
        ensure!(frame["status"]["services"][0]["name"] == "web", "{frame}");
        let rates = &frame["rates"][0];
        ensure!(rates["service"] == "web", "{frame}");
        // Blue has every new flow, green none.
        let blue = rates["groups"][0]["new_flows"].as_f64();
        let green = rates["groups"][1]["new_flows"].as_f64();
        ensure!(
            blue.is_some_and(|r| r > 0.0) && green == Some(0.0),
            "{rates}"
        );
        let backends = rates["backends"].as_array().context("backends")?;
        ensure!(backends.len() == 4, "{rates}");
    }

    let text = lab.balancer.ok(&["top", "--count", "2"])?;
    let blocks = text.split("\n\n").filter(|b| !b.trim().is_empty()).count();
    ensure!(blocks == 2, "{text}");
    ensure!(
        text.lines()
            .filter(|l| l.starts_with("service web "))
            .count()
            == 2,
        "{text}"
    );
    ensure!(
        text.lines()
            .any(|l| l.trim_start().starts_with("GROUP / BACKEND")),
        "{text}"
    );
    stream.stop().ensure_served()?;

    // A count needs --watch; no daemon: exit 3 with one line, as `status`.
    lab.balancer.refused(&["status", "--count", "2"])?;
    let gone = run_cli(
        &binary()?,
        &lab.balancer.scratch("none.sock"),
        &["status", "--watch"],
    )?;
    ensure!(
        gone.code == Some(UNREACHABLE) && gone.stderr.trim().lines().count() == 1,
        "{gone:?}"
    );
    Ok(())
}
