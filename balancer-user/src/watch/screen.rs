//! The live view on a terminal (ratatui with its crossterm backend): a title line, then
//! per service a bordered box with its heading, its releases and a table of its groups
//! and backends. `q`, Esc or Ctrl-C quits; the terminal is restored on the way out.

use std::{
    io,
    time::{Duration, Instant},
};

use ratatui::{
    crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers},
    layout::{Constraint, Layout},
    style::{Color, Modifier, Style},
    text::Line,
    widgets::{Block, Cell, Paragraph, Row, Table},
    DefaultTerminal,
};

use super::view::{widths, RowKind, View, COLUMNS};

/// Draws `view` on the whole of `frame` (refreshed every `every`).
pub fn draw(frame: &mut ratatui::Frame, view: &View, every: Duration) {
    let [title, body] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(frame.area());
    let mut heading = vec![
        ratatui::text::Span::styled("balancer", Style::new().add_modifier(Modifier::BOLD)),
        format!(
            "  {}  every {}  q quits",
            view.time,
            humantime::format_duration(every)
        )
        .into(),
    ];
    if let Some(problem) = &view.problem {
        heading.push(ratatui::text::Span::styled(
            format!("  daemon: {problem}"),
            Style::new().fg(Color::Red),
        ));
    }
    frame.render_widget(Line::from(heading), title);
    // A box: two borders, its release lines, the table's header and rows.
    let heights: Vec<Constraint> = view
        .services
        .iter()
        .map(|s| {
            Constraint::Length(
                u16::try_from(s.releases.len() + s.rows.len() + 3).unwrap_or(u16::MAX),
            )
        })
        .chain([Constraint::Min(0)])
        .collect();
    let boxes = Layout::vertical(heights).split(body);
    for (service, area) in view.services.iter().zip(boxes.iter()) {
        let block = Block::bordered().title(Line::styled(
            format!(" {} ", service.heading),
            Style::new().add_modifier(Modifier::BOLD),
        ));
        let inner = block.inner(*area);
        frame.render_widget(block, *area);
        let releases = u16::try_from(service.releases.len()).unwrap_or(u16::MAX);
        let [lines, table] =
            Layout::vertical([Constraint::Length(releases), Constraint::Min(0)]).areas(inner);
        let text: Vec<Line> = service
            .releases
            .iter()
            .map(|l| Line::from(l.as_str()))
            .collect();
        frame.render_widget(Paragraph::new(text), lines);
        let header: Vec<String> = COLUMNS.iter().map(|c| c.to_string()).collect();
        let all: Vec<&Vec<String>> = std::iter::once(&header)
            .chain(service.rows.iter().map(|r| &r.cells))
            .collect();
        let columns: Vec<Constraint> = widths(&all)
            .into_iter()
            .map(|w| Constraint::Length(u16::try_from(w).unwrap_or(u16::MAX)))
            .collect();
        let rows = service
            .rows
            .iter()
            .map(|r| Row::new(cells(&r.cells)).style(style(r.kind)));
        let header = Row::new(cells(&header)).style(Style::new().add_modifier(Modifier::BOLD));
        frame.render_widget(Table::new(rows, columns).header(header), table);
    }
}

/// A row's cells: the first left-aligned, the numbers right-aligned.
fn cells(texts: &[String]) -> Vec<Cell<'_>> {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| match i {
            0 => Cell::from(t.as_str()),
            _ => Cell::from(Line::from(t.as_str()).right_aligned()),
        })
        .collect()
}

fn style(kind: RowKind) -> Style {
    match kind {
        RowKind::Group => Style::new().add_modifier(Modifier::BOLD),
        RowKind::Backend => Style::new(),
        RowKind::Down => Style::new().fg(Color::Red),
        RowKind::Retired => Style::new().fg(Color::DarkGray),
    }
}

/// The terminal in raw mode on the alternate screen, restored when dropped (and on a
/// panic, by ratatui's hook).
pub struct Screen {
    terminal: DefaultTerminal,
}

impl Screen {
    /// Takes over the terminal of standard output.
    pub fn open() -> io::Result<Self> {
        let terminal = ratatui::try_init().inspect_err(|_| ratatui::restore())?;
        Ok(Self { terminal })
    }

    /// Draws `view`.
    pub fn show(&mut self, view: &View, every: Duration) -> io::Result<()> {
        self.terminal.draw(|frame| draw(frame, view, every))?;
        Ok(())
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// What the operator did while the view waited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// Quit: `q`, Esc or Ctrl-C.
    Quit,
    /// The terminal changed size: draw again.
    Resize,
}

/// Waits until `deadline` for a key that quits or a resize (other keys are ignored); none
/// when the deadline came first. Blocks: run it off the async threads.
pub fn input(deadline: Instant) -> io::Result<Option<Input>> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !event::poll(left)? {
            return Ok(None);
        }
        match event::read()? {
            Event::Key(key) if quits(key) => return Ok(Some(Input::Quit)),
            Event::Resize(..) => return Ok(Some(Input::Resize)),
            _ => {}
        }
    }
}

/// Whether `key` quits the view.
fn quits(key: KeyEvent) -> bool {
    key.kind == KeyEventKind::Press
        && match key.code {
            KeyCode::Char('q') | KeyCode::Esc => true,
            KeyCode::Char('c') => key.modifiers.contains(KeyModifiers::CONTROL),
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use ratatui::{backend::TestBackend, buffer::Buffer, Terminal};

    use super::*;
    use crate::watch::view::tests::frame;

    /// The screen of `view` on a `width` × `height` terminal.
    fn render(view: &View, width: u16, height: u16) -> Buffer {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal
            .draw(|f| draw(f, view, Duration::from_secs(1)))
            .unwrap();
        terminal.backend().buffer().clone()
    }

    fn line(buffer: &Buffer, y: u16) -> String {
        (0..buffer.area.width)
            .map(|x| buffer[(x, y)].symbol())
            .collect()
    }

    fn find(buffer: &Buffer, text: &str) -> Option<u16> {
        (0..buffer.area.height).find(|&y| line(buffer, y).contains(text))
    }

    #[test]
    fn the_screen_shows_the_service_its_last_decision_and_backend_rates() {
        let view = View::of(&frame());
        let buffer = render(&view, 120, 20);
        assert!(
            line(&buffer, 0).starts_with("balancer  2026-01-01T00:00:00Z  every 1s  q quits"),
            "{:?}",
            line(&buffer, 0)
        );
        // The box's top border carries the service line.
        assert!(
            line(&buffer, 1)
                .starts_with("┌ service web  198.18.0.10:80/tcp  split blue=75.00% green=25.00% ─"),
            "{:?}",
            line(&buffer, 1)
        );
        assert!(line(&buffer, 2)
            .starts_with("│canary blue -> green: step 2/3 (25.00%), next step in 42s  "));
        let decision = find(&buffer, "last decision 23:59:42").unwrap();
        assert!(line(&buffer, decision)
            .contains("last decision 23:59:42: interval elapsed; step 2/3: 25.00% to green"));
        let header = find(&buffer, "GROUP / BACKEND").unwrap();
        let row = find(&buffer, "198.18.0.101").unwrap();
        assert!(row > header);
        let words: Vec<String> = line(&buffer, row)
            .trim_matches(['│', ' '])
            .split_whitespace()
            .map(str::to_string)
            .collect();
        assert_eq!(
            words,
            [
                "198.18.0.101",
                "100",
                "50.00",
                "up",
                "400",
                "300.0",
                "3.0k",
                "300.0k",
                "300.0",
                "300.0",
                "300.0",
                "300.0"
            ]
        );
        // The rate sits right-aligned under its heading.
        let end = |y: u16, word: &str| line(&buffer, y).find(word).unwrap() + word.len();
        assert_eq!(end(header, "NEW/s"), end(row, "300.0"));
        // A down backend is red, a group bold.
        let down = find(&buffer, "198.18.0.102").unwrap();
        assert_eq!(buffer[(5, down)].fg, Color::Red);
        let group = find(&buffer, "│blue").unwrap();
        assert!(buffer[(2, group)].modifier.contains(Modifier::BOLD));
    }

    #[test]
    fn a_failed_refresh_is_shown_in_the_title_line() {
        let mut view = View::of(&frame());
        view.problem = Some("cannot reach the balancer daemon at /run/balancer.sock".into());
        let buffer = render(&view, 160, 20);
        assert!(line(&buffer, 0)
            .contains("daemon: cannot reach the balancer daemon at /run/balancer.sock"));
    }

    #[test]
    fn q_escape_and_control_c_quit_and_other_keys_do_not() {
        let key = |code, modifiers| KeyEvent::new(code, modifiers);
        assert!(quits(key(KeyCode::Char('q'), KeyModifiers::NONE)));
        assert!(quits(key(KeyCode::Esc, KeyModifiers::NONE)));
        assert!(quits(key(KeyCode::Char('c'), KeyModifiers::CONTROL)));
        assert!(!quits(key(KeyCode::Char('c'), KeyModifiers::NONE)));
        assert!(!quits(key(KeyCode::Char('x'), KeyModifiers::NONE)));
    }
}
