//! `balancer status --watch` (`balancer top`): `status` once a second with the rates since
//! the previous answer — on a terminal a live screen (`screen`), on anything else one
//! block of plain text per refresh, with `--json` one NDJSON line per refresh.

pub mod frame;
pub mod rates;
pub mod screen;
pub mod view;

use std::{
    io::{IsTerminal as _, Write as _},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::{api::Status, client::Client, error::one_line, operation::Operation};
use frame::{Frame, Sampler};
use screen::{Input, Screen};
use view::View;

/// Time between refreshes.
pub const REFRESH: Duration = Duration::from_secs(1);

/// What to watch and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watch {
    /// Only this service.
    pub service: Option<String>,
    /// NDJSON instead of a screen or text.
    pub json: bool,
    /// Stop after this many refreshes; none: until quit (or interrupted).
    pub count: Option<u64>,
}

/// Where frames go.
enum Output {
    /// `--json`: one line each.
    Json,
    /// Standard output is not a terminal: a block of text each.
    Plain,
    /// The live screen.
    Screen(Screen),
}

/// Runs the watch until `--count` refreshes, `q` on the screen, or a reader of standard
/// output that went away. The first `status` must succeed (its error ends the command like
/// `status`'s); a later failure is shown (on standard error, or on the screen) and the
/// next refresh tries again.
pub async fn run(client: &Client, watch: Watch) -> anyhow::Result<()> {
    let operation = Operation::Status {
        service: watch.service.clone(),
    };
    let mut sampler = Sampler::default();
    let first = fetch(client, &operation).await?;
    let mut output = match watch.json {
        true => Output::Json,
        false if std::io::stdout().is_terminal() => Output::Screen(Screen::open()?),
        false => Output::Plain,
    };
    let mut fetched = Ok(first);
    let mut view: Option<View> = None;
    let mut refreshes = 0u64;
    let mut next = Instant::now();
    loop {
        let at = Instant::now();
        let shown = match fetched {
            Ok(status) => {
                let frame = sampler.frame(status, at, unix_ms());
                let current = View::of(&frame);
                let shown = show(&mut output, &frame, &current);
                view = Some(current);
                shown
            }
            Err(e) => {
                let problem = one_line(AsRef::<dyn std::error::Error>::as_ref(&e));
                match (&mut output, view.as_mut()) {
                    (Output::Screen(screen), Some(view)) => {
                        view.problem = Some(problem);
                        screen.show(view, REFRESH)
                    }
                    _ => {
                        eprintln!("error: {problem}");
                        Ok(())
                    }
                }
            }
        };
        match shown {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            shown => shown?,
        }
        refreshes += 1;
        if watch.count.is_some_and(|count| refreshes >= count) {
            return Ok(());
        }
        next = (next + REFRESH).max(Instant::now());
        match &mut output {
            Output::Screen(screen) => loop {
                let deadline = next;
                match tokio::task::spawn_blocking(move || screen::input(deadline)).await?? {
                    None => break,
                    Some(Input::Quit) => return Ok(()),
                    Some(Input::Resize) => {
                        if let Some(view) = &view {
                            screen.show(view, REFRESH)?;
                        }
                    }
                }
            },
            Output::Json | Output::Plain => tokio::time::sleep_until(next.into()).await,
        }
        fetched = fetch(client, &operation).await;
    }
}

/// Shows one frame.
fn show(output: &mut Output, frame: &Frame, view: &View) -> std::io::Result<()> {
    match output {
        Output::Json => {
            let mut line = serde_json::to_string(frame)?;
            line.push('\n');
            print(&line)
        }
        Output::Plain => print(&view.plain()),
        Output::Screen(screen) => screen.show(view, REFRESH),
    }
}

/// Writes `text` to standard output now.
fn print(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

/// One `status` answer.
async fn fetch(client: &Client, operation: &Operation) -> anyhow::Result<Status> {
    let answer = client.run(operation).await?;
    Ok(serde_json::from_slice(&answer)?)
}

/// The wall clock in Unix milliseconds.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
