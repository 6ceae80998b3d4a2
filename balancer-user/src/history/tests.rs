//! The history on disk: bounded, surviving restarts, read back after a crash.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::*;

/// A fresh directory of its own for test `name`.
pub(crate) fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("balancer-history-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A history in a fresh directory of its own.
pub(crate) fn opened(name: &str) -> Arc<History> {
    Arc::new(History::open(&scratch(name)).unwrap())
}

fn note(i: u64, service: &str) -> Note {
    Note::plain(i, Some(service.into()), format!("event {i}"))
}

fn all(history: &History) -> Vec<Event> {
    history.query(&Query {
        service: None,
        after: 0,
        limit: MAX_PAGE,
    })
}

fn seqs(events: &[Event]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

/// The sequence numbers a file holds.
fn file_seqs(path: &Path) -> Vec<u64> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str::<Event>(line).unwrap().seq)
        .collect()
}

#[test]
fn rotation_keeps_the_newest_events_in_two_files_and_memory_mirrors_them() {
    let dir = scratch("rotation");
    let bound = Bound {
        events: 4,
        bytes: 1 << 20,
    };
    let history = History::open_bounded(&dir, bound).unwrap();
    for i in 1..=10 {
        history.record(vec![note(i, "web")], Who::Daemon);
    }
    history.close();
    // 1-4 went to the previous file, then 5-8 replaced them there; 9-10 are current.
    assert_eq!(file_seqs(&dir.join(journal::PREVIOUS)), [5, 6, 7, 8]);
    assert_eq!(file_seqs(&dir.join(journal::CURRENT)), [9, 10]);
    assert_eq!(seqs(&all(&history)), [5, 6, 7, 8, 9, 10]);

    // A size bound rotates before the line that would pass it.
    let dir = scratch("rotation-bytes");
    let line = Event {
        seq: 1,
        at_ms: 1,
        service: Some("web".into()),
        what: "event 1".into(),
        before: None,
        after: None,
        who: Who::Daemon,
    }
    .line()
    .len() as u64;
    let bound = Bound {
        events: 100,
        bytes: 2 * line + 1,
    };
    let history = History::open_bounded(&dir, bound).unwrap();
    for i in 1..=5 {
        history.record(vec![note(i, "web")], Who::Daemon);
    }
    history.close();
    assert_eq!(file_seqs(&dir.join(journal::PREVIOUS)), [3, 4]);
    assert_eq!(file_seqs(&dir.join(journal::CURRENT)), [5]);
    assert_eq!(seqs(&all(&history)), [3, 4, 5]);
}

#[test]
fn a_restart_reads_the_events_back_and_goes_on_numbering_after_them() {
    let dir = scratch("restart");
    let bound = Bound {
        events: 3,
        bytes: 1 << 20,
    };
    let first = History::open_bounded(&dir, bound).unwrap();
    first.record((1..=5).map(|i| note(i, "web")).collect(), Who::Uid(1000));
    first.close();
    let before = all(&first);
    drop(first);

    let second = History::open_bounded(&dir, bound).unwrap();
    assert_eq!(all(&second), before, "read back as they were written");
    second.record(vec![note(6, "dns")], Who::Daemon);
    let events = all(&second);
    assert_eq!(seqs(&events), [1, 2, 3, 4, 5, 6]);
    assert_eq!(events[5].who, Who::Daemon);
    assert_eq!(events[0].who, Who::Uid(1000));
    // The next rotation drops the oldest file's events, in memory as on disk.
    second.record(vec![note(7, "dns")], Who::Daemon);
    second.close();
    assert_eq!(seqs(&all(&second)), [4, 5, 6, 7]);
    assert_eq!(file_seqs(&dir.join(journal::PREVIOUS)), [4, 5, 6]);
}

#[test]
fn a_torn_last_line_is_cut_off_and_unreadable_lines_skipped_and_the_history_goes_on() {
    let dir = scratch("torn");
    let history = History::open(&dir).unwrap();
    history.record((1..=3).map(|i| note(i, "web")).collect(), Who::Daemon);
    history.close();
    drop(history);
    let current = dir.join(journal::CURRENT);
    let whole = fs::read_to_string(&current).unwrap();
    // A crash in the middle of the fourth line.
    let torn = format!("{whole}{{\"seq\":4,\"at_ms\":4,\"serv");
    fs::write(&current, &torn).unwrap();
    let (_, loaded) = Journal::open(&dir).unwrap();
    assert!(loaded.torn);
    assert_eq!(loaded.unreadable, 0);
    assert_eq!(
        fs::read_to_string(&current).unwrap(),
        whole,
        "the torn line is cut off"
    );

    // A line in the middle that is no event is skipped; the next event follows the greatest.
    let lines: Vec<&str> = whole.lines().collect();
    let mixed = format!("{}\nnot an event\n{}\n{}\n", lines[0], lines[1], lines[2]);
    fs::write(&current, mixed).unwrap();
    let history = History::open(&dir).unwrap();
    history.record(vec![note(4, "web")], Who::Daemon);
    history.close();
    assert_eq!(seqs(&all(&history)), [1, 2, 3, 4]);
    let (_, loaded) = Journal::open(&dir).unwrap();
    assert_eq!((loaded.torn, loaded.unreadable), (false, 1));
    assert_eq!(seqs(&loaded.current), [1, 2, 3, 4]);
}

#[test]
fn a_query_takes_the_events_after_a_number_of_one_service_up_to_its_limit() {
    let history = opened("query");
    let notes = (1..=6)
        .map(|i| note(i, if i % 2 == 0 { "dns" } else { "web" }))
        .collect();
    history.record(notes, Who::Daemon);
    history.record(
        vec![Note::plain(7, None, "daemon started".into())],
        Who::Daemon,
    );
    let query = |service: Option<&str>, after, limit| {
        seqs(&history.query(&Query {
            service: service.map(str::to_string),
            after,
            limit,
        }))
    };
    assert_eq!(query(None, 0, MAX_PAGE), [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(query(Some("web"), 0, MAX_PAGE), [1, 3, 5]);
    assert_eq!(query(Some("dns"), 2, MAX_PAGE), [4, 6]);
    assert_eq!(query(None, 3, 2), [4, 5]);
    assert_eq!(query(None, 7, MAX_PAGE), Vec::<u64>::new());
    assert_eq!(query(Some("nosuch"), 0, MAX_PAGE), Vec::<u64>::new());
    history.close();
}

#[test]
fn long_text_is_cut_short_on_a_character_boundary() {
    let history = opened("clip");
    let long = "é".repeat(MAX_TEXT);
    history.record(
        vec![Note {
            at_ms: 1,
            service: None,
            what: long.clone(),
            before: Some("short".into()),
            after: Some(long),
        }],
        Who::Daemon,
    );
    let event = all(&history).remove(0);
    assert!(event.what.len() <= MAX_TEXT && event.what.ends_with('…'));
    assert!(event.what.starts_with("éé"));
    assert_eq!(event.after, Some(event.what.clone()));
    assert_eq!(event.before.as_deref(), Some("short"));
    history.close();
}
