//! The state file: JSON, replaced atomically (temp file, fsync, rename, fsync directory).

use std::{
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
};

use super::{State, StateError, STATE_FORMAT};

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
    #[error("state file {path} is unreadable")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A format this version does not know.
    #[error("state file {path} has format {format}, which this version does not support")]
    Format {
        /// The file.
        path: PathBuf,
        /// Its format number.
        format: u32,
    },
    /// Valid JSON that breaks an invariant.
    #[error("state file {path} is inconsistent")]
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
        let path = &self.path;
        let io = |context: &str| {
            let context = format!("{context} {}", path.display());
            move |source| StoreError::Io { context, source }
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(io("create the directory of"))?;
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(state).expect("state serialises");
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
}
