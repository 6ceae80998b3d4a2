//! The history on disk, in the state directory: JSON lines, one event each, in
//! [`CURRENT`]; when it reaches its [`Bound`] it is renamed to [`PREVIOUS`] (replacing the
//! one before) and a new one begins. So the newest events are always kept — at least one
//! file's worth — and at most two files' worth: with the default bound, 10,000 to 20,000
//! events and at most 8 MiB.
//!
//! Appends go to the end of the open file; the writer (see `writer`) syncs the file's data
//! (`fdatasync`) after each batch it takes, before it takes the next, and a rotation syncs
//! the file before the rename and the directory after it. A crash loses at most the events
//! handed over but not yet synced, and can leave a torn last line: at the next start it is
//! cut off with one warning. Lines that do not read as events are skipped with one warning.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use super::Event;

/// The file events are appended to.
pub const CURRENT: &str = "events.jsonl";

/// The file before it, kept until the next rotation.
pub const PREVIOUS: &str = "events.1.jsonl";

/// When the current file is full and rotates: at `events` events or when the next line
/// would take it past `bytes`, whichever comes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    /// Events per file.
    pub events: usize,
    /// Bytes per file.
    pub bytes: u64,
}

impl Default for Bound {
    /// 10,000 events or 4 MiB per file.
    fn default() -> Self {
        Self {
            events: 10_000,
            bytes: 4 << 20,
        }
    }
}

/// What a file holds: events and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    /// Events.
    pub events: usize,
    /// Bytes.
    pub bytes: u64,
}

impl Bound {
    /// Whether a file holding `span` must rotate before it takes a line of `len` bytes (an
    /// empty file takes any line).
    pub fn full(&self, span: Span, len: usize) -> bool {
        span.events > 0 && (span.events >= self.events || span.bytes + len as u64 > self.bytes)
    }
}

/// Why the history could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("{context}")]
pub struct HistoryError {
    /// What was being done.
    context: String,
    /// The underlying error.
    #[source]
    source: io::Error,
}

impl HistoryError {
    /// `source` while doing what `context` says.
    pub(super) fn new(context: impl Into<String>, source: io::Error) -> Self {
        Self {
            context: context.into(),
            source,
        }
    }
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> HistoryError {
    let context = context.into();
    move |source| HistoryError::new(context, source)
}

/// What the files held at open.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The events of the previous file, oldest first.
    pub previous: Vec<Event>,
    /// The events of the current file, oldest first.
    pub current: Vec<Event>,
    /// The current file's size, once a torn last line is cut off.
    pub current_bytes: u64,
    /// Whether the current file's last line was torn (cut off).
    pub torn: bool,
    /// Lines that did not read as events (skipped).
    pub unreadable: usize,
}

/// The open history files.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    file: File,
    /// The current file's length after the last good append.
    len: u64,
}

impl Journal {
    /// Opens the history in `dir` (created if missing), reads what it holds, and cuts off a
    /// torn last line.
    pub fn open(dir: &Path) -> Result<(Self, Loaded), HistoryError> {
        fs::create_dir_all(dir).map_err(io_error(format!("create {}", dir.display())))?;
        let mut loaded = Loaded::default();
        let previous = read(&dir.join(PREVIOUS))?;
        loaded.previous = parse(&previous, &mut loaded.unreadable);
        let path = dir.join(CURRENT);
        let mut current = read(&path)?;
        if current.last().is_some_and(|b| *b != b'\n') {
            let whole = current
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i + 1);
            current.truncate(whole);
            loaded.torn = true;
        }
        loaded.current = parse(&current, &mut loaded.unreadable);
        loaded.current_bytes = current.len() as u64;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_error(format!("open {}", path.display())))?;
        if loaded.torn {
            file.set_len(loaded.current_bytes)
                .map_err(io_error(format!(
                    "cut the torn line off {}",
                    path.display()
                )))?;
        }
        let journal = Self {
            dir: dir.to_path_buf(),
            file,
            len: loaded.current_bytes,
        };
        Ok((journal, loaded))
    }

    /// Appends one line. A failed append is cut off again, so that the file never holds
    /// half a line in the middle.
    pub fn append(&mut self, line: &str) -> io::Result<()> {
        match self.file.write_all(line.as_bytes()) {
            Ok(()) => {
                self.len += line.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.len);
                Err(e)
            }
        }
    }

    /// Makes the current file the previous one (replacing it) and begins a new one.
    pub fn rotate(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        fs::rename(self.dir.join(CURRENT), self.dir.join(PREVIOUS))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(CURRENT))?;
        self.len = 0;
        File::open(&self.dir)?.sync_all()
    }

    /// Syncs what was appended to the disk.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// A file's bytes; none for a missing file.
fn read(path: &Path) -> Result<Vec<u8>, HistoryError> {
    match fs::read(path) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_error(format!("read {}", path.display()))(e)),
    }
}

/// The events of JSON lines, counting those that do not read as one.
fn parse(bytes: &[u8], unreadable: &mut usize) -> Vec<Event> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .filter_map(|line| {
            let event = serde_json::from_slice(line).ok();
            *unreadable += usize::from(event.is_none());
            event
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_full_at_its_event_count_or_before_a_line_that_would_pass_its_size() {
        let bound = Bound {
            events: 3,
            bytes: 100,
        };
        let span = |events, bytes| Span { events, bytes };
        assert!(!bound.full(span(0, 0), 500), "an empty file takes any line");
        assert!(!bound.full(span(2, 50), 50));
        assert!(bound.full(span(2, 50), 51));
        assert!(bound.full(span(3, 10), 1));
        let default = Bound::default();
        assert_eq!((default.events, default.bytes), (10_000, 4 * 1024 * 1024));
    }
}
