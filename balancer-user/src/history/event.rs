//! One event of the history, who caused it, and a note: an event before it has its place.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// Something that happened to the desired state or a backend, in the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Its place in the history: increasing by one per event, across daemon restarts.
    pub seq: u64,
    /// When (Unix milliseconds).
    pub at_ms: u64,
    /// The service it is about; none for the daemon's own (start, stop, teardown).
    pub service: Option<String>,
    /// What happened, and why when the daemon decided it.
    pub what: String,
    /// What it changed, as it was (a short summary); none when there was nothing before or
    /// nothing to summarise.
    pub before: Option<String>,
    /// What it changed, as it is now.
    pub after: Option<String>,
    /// Who did it.
    pub who: Who,
}

impl Event {
    /// The event as one JSON line, newline included (the journal's and `events --json`'s
    /// format).
    pub fn line(&self) -> String {
        let mut line = serde_json::to_string(self).expect("events serialise");
        line.push('\n');
        line
    }
}

/// Who caused an event: a user of the control socket (its peer's uid, from the socket's
/// credentials) or the daemon itself (a release strategy's step, a health check, a timeout).
/// Written `uid 0` or `daemon`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Who {
    /// The daemon.
    Daemon,
    /// The user of a control-socket connection.
    Uid(u32),
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Who::Daemon => f.write_str("daemon"),
            Who::Uid(uid) => write!(f, "uid {uid}"),
        }
    }
}

impl FromStr for Who {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text == "daemon" {
            return Ok(Who::Daemon);
        }
        text.strip_prefix("uid ")
            .and_then(|uid| uid.parse().ok())
            .map(Who::Uid)
            .ok_or_else(|| format!("{text:?} is neither \"daemon\" nor \"uid N\""))
    }
}

impl From<Who> for String {
    fn from(who: Who) -> String {
        who.to_string()
    }
}

impl TryFrom<String> for Who {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

/// What happened, before the history gives it a sequence number and says who did it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// When (Unix milliseconds).
    pub at_ms: u64,
    /// The service it is about.
    pub service: Option<String>,
    /// What happened.
    pub what: String,
    /// What it changed, as it was.
    pub before: Option<String>,
    /// What it changed, as it is now.
    pub after: Option<String>,
}

impl Note {
    /// A note without a before/after summary.
    pub fn plain(at_ms: u64, service: Option<String>, what: String) -> Self {
        Self {
            at_ms,
            service,
            what,
            before: None,
            after: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_is_written_uid_n_or_daemon_and_nothing_else_is_read() {
        let event = Event {
            seq: 7,
            at_ms: 1000,
            service: Some("web".into()),
            what: "flipped to green".into(),
            before: Some("split: blue=100.00%".into()),
            after: None,
            who: Who::Uid(1000),
        };
        let line = event.line();
        assert_eq!(
            line,
            "{\"seq\":7,\"at_ms\":1000,\"service\":\"web\",\"what\":\"flipped to green\",\
             \"before\":\"split: blue=100.00%\",\"after\":null,\"who\":\"uid 1000\"}\n"
        );
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), event);
        assert_eq!("daemon".parse::<Who>(), Ok(Who::Daemon));
        for bad in ["uid", "uid -1", "root", "uid 0 ", "Daemon"] {
            assert!(bad.parse::<Who>().is_err(), "{bad:?} was taken");
        }
        let bad = line.replace("uid 1000", "uid x");
        assert!(serde_json::from_str::<Event>(&bad).is_err());
    }
}
