//! The event history: every operator change and every automatic decision — a release
//! strategy's step, hold or rollback, a backend's health change, the end of a drain, a
//! retirement or a flip drain — as an [`Event`]: when, which service, what, a short
//! before/after summary, and who (the uid of the control socket's peer, or the daemon).
//! A refused change is no event: it changed nothing.
//!
//! The controller hands over what it did ([`Happening`]) without knowing who caused it;
//! the executor says who and [`narrate`]s it into notes, which [`History::record`] numbers
//! and keeps. The history keeps in memory exactly what its files hold ([`journal`]: JSON
//! lines in the state directory, bounded, surviving restarts), so reading it never touches
//! the disk. Recording is an append in memory and a hand-over to the writer thread
//! (`writer`); nothing waits for the disk, so it may happen under the controller's lock,
//! which keeps events in the order they happened.

mod event;
pub mod journal;
mod narrate;
mod operator;
mod summary;
mod writer;

pub use event::{Event, Note, Who};
pub use journal::{Bound, HistoryError};
pub use narrate::{narrate, Happening, Touched};

use std::{
    collections::VecDeque,
    path::Path,
    sync::{mpsc::Sender, Mutex, MutexGuard},
    thread::JoinHandle,
};

use journal::{Journal, Span};
use writer::Job;

/// The most events one query answers.
pub const MAX_PAGE: usize = 1000;

/// The longest `what`, `before` or `after` kept, in bytes; longer text is cut short with
/// `…`. With the file bound this bounds the disk the history takes.
pub const MAX_TEXT: usize = 2048;

/// Which events a reader wants: those after `after`, of one service or all, the oldest
/// first, at most `limit`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// Only events of this service.
    pub service: Option<String>,
    /// Only events with a greater sequence number (0: from the oldest kept).
    pub after: u64,
    /// At most this many, 1 to [`MAX_PAGE`].
    pub limit: usize,
}

/// The history: the events kept, and the writer that keeps them on disk.
pub struct History {
    kept: Mutex<Kept>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// The events in memory, mirroring the files.
struct Kept {
    /// Oldest first: the previous file's, then the current file's.
    events: VecDeque<Event>,
    /// How many of `events` are the previous file's.
    previous: usize,
    /// What the current file holds.
    current: Span,
    bound: Bound,
    next_seq: u64,
    /// None once the history is closed.
    jobs: Option<Sender<Job>>,
}

impl History {
    /// Opens the history in `dir` (the state directory) with the default [`Bound`].
    pub fn open(dir: &Path) -> Result<Self, HistoryError> {
        Self::open_bounded(dir, Bound::default())
    }

    /// Opens the history in `dir`, its files rotating at `bound`: loads what they hold (a
    /// torn last line and unreadable lines are skipped, with one warning each) and starts
    /// the writer. Sequence numbers go on from the greatest kept.
    pub fn open_bounded(dir: &Path, bound: Bound) -> Result<Self, HistoryError> {
        let (journal, loaded) = Journal::open(dir)?;
        if loaded.torn {
            tracing::warn!(
                "the event history's last line was torn (the daemon stopped while writing it): \
                 skipped"
            );
        }
        if loaded.unreadable > 0 {
            tracing::warn!(
                "{} unreadable lines of the event history skipped",
                loaded.unreadable
            );
        }
        let previous = loaded.previous.len();
        let current = Span {
            events: loaded.current.len(),
            bytes: loaded.current_bytes,
        };
        let events: VecDeque<Event> = loaded.previous.into_iter().chain(loaded.current).collect();
        let next_seq = events.iter().map(|e| e.seq).max().unwrap_or(0) + 1;
        let (jobs, handle) = writer::spawn(journal)
            .map_err(|source| HistoryError::new("start the event history's writer", source))?;
        Ok(Self {
            kept: Mutex::new(Kept {
                events,
                previous,
                current,
                bound,
                next_seq,
                jobs: Some(jobs),
            }),
            writer: Mutex::new(Some(handle)),
        })
    }

    /// Records `notes` as events by `who`, in order: numbers them, keeps them, and hands
    /// them to the writer (rotating the files first when the current one is full). Never
    /// waits for the disk.
    pub fn record(&self, notes: Vec<Note>, who: Who) {
        if notes.is_empty() {
            return;
        }
        let mut kept = self.kept();
        for note in notes {
            let event = Event {
                seq: kept.next_seq,
                at_ms: note.at_ms,
                service: note.service,
                what: clip(note.what),
                before: note.before.map(clip),
                after: note.after.map(clip),
                who,
            };
            kept.next_seq += 1;
            let line = event.line();
            if kept.bound.full(kept.current, line.len()) {
                let previous = kept.previous;
                kept.events.drain(..previous);
                kept.previous = kept.current.events;
                kept.current = Span::default();
                kept.send(Job::Rotate);
            }
            kept.current.events += 1;
            kept.current.bytes += line.len() as u64;
            kept.events.push_back(event);
            kept.send(Job::Append(line));
        }
    }

    /// The events `query` asks for.
    pub fn query(&self, query: &Query) -> Vec<Event> {
        let kept = self.kept();
        let start = kept.events.partition_point(|e| e.seq <= query.after);
        kept.events
            .range(start..)
            .filter(|e| query.service.is_none() || e.service == query.service)
            .take(query.limit)
            .cloned()
            .collect()
    }

    /// Stops taking events for the disk and waits until the writer has written and synced
    /// every one handed over. Events recorded after are kept in memory only.
    pub fn close(&self) {
        self.kept().jobs = None;
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            if handle.join().is_err() {
                tracing::warn!("the event history's writer panicked");
            }
        }
    }

    fn kept(&self) -> MutexGuard<'_, Kept> {
        // Events are pushed whole: a panic elsewhere leaves them consistent.
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Kept {
    fn send(&self, job: Job) {
        if let Some(jobs) = &self.jobs {
            // The writer only stops when the history closes.
            let _ = jobs.send(job);
        }
    }
}

/// `text`, cut to at most [`MAX_TEXT`] bytes (on a character boundary, ending in `…`).
fn clip(mut text: String) -> String {
    if text.len() > MAX_TEXT {
        let mut end = MAX_TEXT - '…'.len_utf8();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
pub(crate) mod tests;
