//! The thread that writes the history to disk, so that recording an event never waits for
//! the disk: it takes every job handed over since its last batch, carries them out in
//! order, and syncs once per batch. A failed write is logged once (and its recovery once);
//! the events stay in memory either way.

use std::{
    io,
    sync::mpsc::{self, Receiver, Sender},
    thread::JoinHandle,
};

use super::journal::Journal;

/// What the writer is asked to do, in the order the history decided it.
#[derive(Debug)]
pub(super) enum Job {
    /// Append one line (an event with its newline).
    Append(String),
    /// Rotate the files before the next line.
    Rotate,
}

/// Starts the writer on `journal`; it ends once the returned sender is dropped and every
/// job handed over is done.
pub(super) fn spawn(journal: Journal) -> io::Result<(Sender<Job>, JoinHandle<()>)> {
    let (jobs, taken) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("history".into())
        .spawn(move || run(journal, taken))?;
    Ok((jobs, handle))
}

fn run(mut journal: Journal, jobs: Receiver<Job>) {
    let mut failing = false;
    while let Ok(first) = jobs.recv() {
        let mut result = Ok(());
        for job in std::iter::once(first).chain(jobs.try_iter()) {
            let done = match job {
                Job::Append(line) => journal.append(&line),
                Job::Rotate => journal.rotate(),
            };
            // The first failure of the batch is the one told.
            result = result.and(done);
        }
        match (result.and_then(|()| journal.sync()), failing) {
            (Err(e), false) => {
                tracing::warn!(
                    "writing the event history failed: {e}; its events are kept in memory \
                     until the daemon stops"
                );
                failing = true;
            }
            (Ok(()), true) => {
                tracing::info!("the event history is written again");
                failing = false;
            }
            _ => {}
        }
    }
}
