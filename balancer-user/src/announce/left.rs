//! The mark of `fleet leave`: the file `fleet-left` in the state directory, present while
//! this host is out of the fleet. Host-local (each host leaves for its own maintenance),
//! so it survives a daemon restart and is not in the fleet's store.

use std::{io, path::Path};

use super::AnnounceError;

/// The mark's file name in the state directory.
const FILE: &str = "fleet-left";

/// Whether the host left the fleet.
pub fn read(state_dir: &Path) -> Result<bool, AnnounceError> {
    let path = state_dir.join(FILE);
    match std::fs::metadata(&path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(AnnounceError::Mark {
            what: "read",
            path,
            source,
        }),
    }
}

/// Marks the host as left (`true`: the file is made and synced) or joined (removed).
pub fn write(state_dir: &Path, left: bool) -> Result<(), AnnounceError> {
    let path = state_dir.join(FILE);
    let done = match left {
        true => std::fs::File::create(&path).and_then(|f| f.sync_all()),
        false => match std::fs::remove_file(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            done => done,
        },
    };
    done.map_err(|source| AnnounceError::Mark {
        what: if left { "write" } else { "remove" },
        path,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_is_kept_until_joined() {
        let dir = std::env::temp_dir().join(format!("balancer-left-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(!read(&dir).unwrap());
        write(&dir, true).unwrap();
        write(&dir, true).unwrap();
        assert!(read(&dir).unwrap());
        write(&dir, false).unwrap();
        write(&dir, false).unwrap();
        assert!(!read(&dir).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
