//! The state file: JSON, replaced atomically (temp file, fsync, rename, fsync directory).

use std::{
    fs::{self, File},
    io::Write,
    path::Path,
};

use super::{State, StateError};

/// Reads and validates the state file; a missing file is an empty state.
pub fn load(path: &Path) -> Result<State, StateError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
        Err(source) => {
            return Err(StateError::Io {
                context: format!("read {}", path.display()),
                source,
            })
        }
    };
    let state: State = serde_json::from_str(&text).map_err(|source| StateError::Parse {
        path: path.display().to_string(),
        source,
    })?;
    state.validate()?;
    Ok(state)
}

/// Writes the state file so that a crash at any point leaves either the old or the new file.
pub fn save(path: &Path, state: &State) -> Result<(), StateError> {
    let io = |context: &str| {
        let context = format!("{context} {}", path.display());
        move |source| StateError::Io { context, source }
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
