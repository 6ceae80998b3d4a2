//! The state file: JSON, replaced atomically (temp file, fsync, rename, fsync directory).
//! The file it replaces stays beside it as the previous good copy (`state.json.prev`), so
//! an operator has something to go back to; a file that does not load is never written
//! over by the daemon, which refuses to start on it.

use std::{
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
};

use super::{State, StateError, STATE_FORMAT};
use crate::health::HealthRecord;

/// Why the state file could not be read or written: a fault of the host, or a file this
/// version cannot use. Display names what failed; the cause is the error's source.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Not valid JSON of the expected shape.
    #[error("state file {path} is unreadable (the previous good copy, if any, is {path}.prev)", path = path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A format this version does not know.
    #[error("state file {path} has format {format}, which this version does not support", path = path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// Its format number.
        format: u32,
    },
    /// Valid JSON that breaks an invariant.
    #[error("state file {path} is inconsistent (the previous good copy, if any, is {path}.prev)", path = path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: StateError,
    },
}

/// The desired state kept in one file.
#[derive(Clone, Debug)]
pub struct FileStore {
    path: PathBuf,
}

/// Name of the state file in its directory (`--state-dir`).
pub const STATE_FILE_NAME: &str = "state.json";

impl FileStore {
    /// The store of state directory `dir`: its file [`STATE_FILE_NAME`].
    pub fn in_dir(dir: &Path) -> Self {
        Self::new(dir.join(STATE_FILE_NAME))
    }

    /// The store at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored health of the backends, beside the file.
    pub fn health_path(&self) -> PathBuf {
        self.path.with_file_name("health.json")
    }

    /// The stored health of the backends; none stored yet is an empty record.
    pub fn load_health(&self) -> Result<HealthRecord, StoreError> {
        let path = self.health_path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(HealthRecord::default())
            }
            Err(source) => {
                return Err(StoreError::Io {
                    context: format!("read {}", path.display()),
                    source,
                })
            }
        };
        serde_json::from_str(&text).map_err(|source| StoreError::Parse { path, source })
    }

    /// Replaces the stored health of the backends atomically.
    pub fn save_health(&self, record: &HealthRecord) -> Result<(), StoreError> {
        let text = serde_json::to_string_pretty(record).expect("health serialises");
        write_atomically(&self.health_path(), &text)
    }

    /// The previous good copy, beside the file.
    pub fn previous(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".prev");
        PathBuf::from(name)
    }

    /// Reads and validates the state file; a missing file is an empty state.
    pub fn load(&self) -> Result<State, StoreError> {
        let path = &self.path;
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(source) => {
                return Err(StoreError::Io {
                    context: format!("read {}", path.display()),
                    source,
                })
            }
        };
        let state: State = serde_json::from_str(&text).map_err(|source| StoreError::Parse {
            path: path.clone(),
            source,
        })?;
        if state.format != STATE_FORMAT {
            return Err(StoreError::Format {
                path: path.clone(),
                format: state.format,
            });
        }
        state.validate().map_err(|source| StoreError::Invalid {
            path: path.clone(),
            source,
        })?;
        Ok(state)
    }

    /// Writes the state file so that a crash at any point leaves either the old or the new
    /// file.
    pub fn save(&self, state: &State) -> Result<(), StoreError> {
        let text = serde_json::to_string_pretty(state).expect("state serialises");
        self.keep_previous().map_err(|source| StoreError::Io {
            context: format!("keep the previous copy of {}", self.path.display()),
            source,
        })?;
        write_atomically(&self.path, &text)
    }

    /// Makes the current file (if any) the previous good copy too: a second name for it,
    /// so the file itself is never missing.
    fn keep_previous(&self) -> std::io::Result<()> {
        let previous = self.previous();
        match fs::remove_file(&previous) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        match fs::hard_link(&self.path, &previous) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            result => result,
        }
    }
}

/// Replaces `path` with `text` so that a crash at any point leaves the old or the new file:
/// a temporary file, synced, renamed over it, and the directory synced.
fn write_atomically(path: &Path, text: &str) -> Result<(), StoreError> {
    let io = |context: &str| {
        let context = format!("{context} {}", path.display());
        move |source| StoreError::Io { context, source }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io("create the directory of"))?;
    let tmp = path.with_extension("json.tmp");
    let mut file = File::create(&tmp).map_err(io("create a temporary file for"))?;
    file.write_all(text.as_bytes()).map_err(io("write"))?;
    file.sync_all().map_err(io("sync"))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io("replace"))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync the directory of"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::sample;

    /// A store in a fresh directory of its own.
    fn store(name: &str) -> FileStore {
        let dir =
            std::env::temp_dir().join(format!("balancer-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        FileStore::new(dir.join("state.json"))
    }

    #[test]
    fn a_file_that_does_not_load_is_refused_with_one_line_and_left_as_it_was() {
        let store = store("bad");
        let path = store.path().display().to_string();
        let good = serde_json::to_string_pretty(&sample()).unwrap();
        let cases = [
            (good[..good.len() / 2].to_string(), "is unreadable"),
            ("\u{0}garbage\u{7f}".to_string(), "is unreadable"),
            ("[1, 2, 3]".to_string(), "is unreadable"),
            (
                r#"{"format": 1, "next_epoch": 1, "services": {"web": 7}}"#.to_string(),
                "is unreadable",
            ),
            (
                good.replace("\"format\": 1", "\"format\": 9"),
                "has format 9",
            ),
            (
                good.replace("\"slot\": 1", "\"slot\": 0"),
                "is inconsistent",
            ),
        ];
        for (text, why) in cases {
            fs::write(store.path(), &text).unwrap();
            let err = crate::error::one_line(&store.load().unwrap_err());
            assert!(
                err.starts_with(&format!("state file {path} {why}")),
                "{err}"
            );
            assert_eq!(err.lines().count(), 1, "{err}");
            assert_eq!(
                fs::read_to_string(store.path()).unwrap(),
                text,
                "the file changed"
            );
        }
    }

    #[test]
    fn each_save_keeps_the_file_it_replaces_as_the_previous_good_copy() {
        let store = store("prev");
        let first = sample();
        store.save(&first).unwrap();
        assert!(
            !store.previous().exists(),
            "no previous copy before the first save"
        );
        let mut second = first.clone();
        second.remove_service("dns").unwrap();
        store.save(&second).unwrap();
        assert_eq!(store.load().unwrap(), second);
        let previous = FileStore::new(store.previous());
        assert_eq!(previous.load().unwrap(), first);
        store.save(&first).unwrap();
        assert_eq!(previous.load().unwrap(), second);
    }

    #[test]
    fn the_health_record_round_trips_beside_the_state_file() {
        let store = store("health");
        assert_eq!(store.load_health().unwrap(), HealthRecord::default());
        let mut record = HealthRecord::default();
        record.services.entry("web".into()).or_default().insert(
            "198.18.0.101".parse().unwrap(),
            crate::health::Observed {
                healthy: false,
                since_ms: Some(7),
                error: Some("connect: refused".into()),
            },
        );
        store.save_health(&record).unwrap();
        assert_eq!(store.load_health().unwrap(), record);
        assert_eq!(store.health_path().parent(), store.path().parent());
        fs::write(store.health_path(), "{").unwrap();
        let err = crate::error::one_line(&store.load_health().unwrap_err());
        assert!(err.contains("health.json is unreadable"), "{err}");
    }
}
