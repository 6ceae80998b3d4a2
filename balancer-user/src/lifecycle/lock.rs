//! Advisory locks (`flock`) that keep two daemons off the same interface, pin directory or
//! state directory. The kernel drops a lock when its holder exits, `kill -9` included, so a
//! lock is never stale. The holder of a lock file removes it when it lets go (a file left by
//! `kill -9` is simply locked again); whoever locked a file that was removed or replaced
//! meanwhile notices and tries again on the file that is there now.

use std::{
    fs::{File, OpenOptions, TryLockError},
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// How often a lock on a file that was replaced meanwhile is tried again.
const ATTEMPTS: usize = 3;

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("{what} (lock {path} is held)")]
    Held {
        /// What is in use, for the operator ("interface eth0 already has a daemon").
        what: String,
        /// The locked file or directory.
        path: PathBuf,
    },
    /// The lock file could not be opened or locked.
    #[error("lock {path}")]
    Io {
        /// The lock file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// A held lock; released when dropped (or when the process exits).
#[derive(Debug)]
pub struct Lock {
    _file: File,
    /// The lock file, removed on drop while still locked (`None` for a directory).
    remove: Option<PathBuf>,
}

impl Lock {
    /// Locks `path` — a file, created if missing, or an existing directory — without
    /// waiting. `what` is the error's sentence when another process holds it.
    pub fn try_acquire(path: &Path, what: &str) -> Result<Self, LockError> {
        let io = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        for _ in 0..ATTEMPTS {
            let dir = path.is_dir();
            let file = if dir {
                File::open(path)
            } else {
                OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(path)
            }
            .map_err(io)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    return Err(LockError::Held {
                        what: what.to_string(),
                        path: path.to_path_buf(),
                    })
                }
                Err(TryLockError::Error(e)) => return Err(io(e)),
            }
            // A lock on a file that was removed (a pin directory torn down meanwhile) guards
            // nothing: try again on what is there now.
            if same_file(&file, path).map_err(io)? {
                return Ok(Self {
                    _file: file,
                    remove: (!dir).then(|| path.to_path_buf()),
                });
            }
        }
        Err(io(io::Error::other(
            "it keeps being replaced while it is locked",
        )))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Some(path) = &self.remove {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn same_file(file: &File, path: &Path) -> io::Result<bool> {
    let held = file.metadata()?;
    match std::fs::metadata(path) {
        Ok(now) => Ok(held.dev() == now.dev() && held.ino() == now.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("balancer-lock-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = scratch("file");
        let path = dir.join("lock");
        let first = Lock::try_acquire(&path, "x is in use").unwrap();
        let second = Lock::try_acquire(&path, "x is in use").unwrap_err();
        assert!(matches!(second, LockError::Held { .. }));
        assert_eq!(
            second.to_string(),
            format!("x is in use (lock {} is held)", path.display())
        );
        drop(first);
        assert!(!path.exists(), "the holder left its lock file");
        let third = Lock::try_acquire(&path, "x is in use").unwrap();
        assert!(path.exists());
        drop(third);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn directories_lock_too() {
        let dir = scratch("dir");
        let first = Lock::try_acquire(&dir, "pins").unwrap();
        assert!(matches!(
            Lock::try_acquire(&dir, "pins"),
            Err(LockError::Held { .. })
        ));
        drop(first);
        assert!(dir.is_dir(), "a locked directory is not removed");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
