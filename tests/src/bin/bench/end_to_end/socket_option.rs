//! `setsockopt` for the options std does not expose.

use std::io;
use std::os::fd::AsRawFd;

use anyhow::{Context, Result};

/// `setsockopt(level, name, value)` on `socket`.
pub fn set_option<T>(socket: &impl AsRawFd, level: i32, name: i32, value: &T) -> Result<()> {
    // SAFETY: `value` is a live T of the given size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as u32,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("setsockopt {name}"));
    }
    Ok(())
}
