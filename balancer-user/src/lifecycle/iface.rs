//! Interface names as the daemon and `teardown` take them. The name is also a directory of
//! the pin tree, so it is checked before anything is pinned: a plain name the kernel would
//! accept, and (for the daemon) an interface that exists.

use std::ffi::CString;

/// The kernel's limit on an interface name, terminating NUL included.
const IFNAMSIZ: usize = 16;

/// Why an interface name was refused.
#[derive(Debug, thiserror::Error)]
pub enum IfaceError {
    /// Not a name the kernel accepts (and so possibly a path out of the pin directory).
    #[error(
        "bad interface name {0:?}: give a plain name of 1-15 bytes without '/', ':' or spaces"
    )]
    BadName(String),
    /// No interface of that name in this network namespace.
    #[error("no interface named {0:?} in this network namespace (`ip link` lists them)")]
    NoSuch(String),
}

/// Checks that `name` is a plain interface name: 1-15 bytes, not `.` or `..`, without `/`,
/// `:`, whitespace or NUL (the kernel's own rule, `dev_valid_name`).
pub fn check_name(name: &str) -> Result<(), IfaceError> {
    let plain = !name.is_empty()
        && name.len() < IFNAMSIZ
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace());
    if plain {
        Ok(())
    } else {
        Err(IfaceError::BadName(name.to_string()))
    }
}

/// The index of interface `name`, after [`check_name`].
pub fn index(name: &str) -> Result<u32, IfaceError> {
    check_name(name)?;
    let c_name = CString::new(name).map_err(|_| IfaceError::BadName(name.to_string()))?;
    // SAFETY: a valid NUL-terminated string; the call only reads it.
    match unsafe { libc::if_nametoindex(c_name.as_ptr()) } {
        0 => Err(IfaceError::NoSuch(name.to_string())),
        index => Ok(index),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_pass_and_paths_do_not() {
        for good in ["eth0", "enp3s0f1", "veth-a.100", "a", "fifteen-bytes-0"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../../x",
            "a/b",
            "eth0:1",
            "eth 0",
            "sixteen-bytes-00",
            "tab\tx",
        ] {
            assert!(
                matches!(check_name(bad), Err(IfaceError::BadName(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_loopback_exists_and_a_made_up_name_does_not() {
        assert_eq!(index("lo").unwrap(), 1);
        assert!(matches!(index("nosuch0"), Err(IfaceError::NoSuch(_))));
        assert!(matches!(index("../x"), Err(IfaceError::BadName(_))));
    }
}
