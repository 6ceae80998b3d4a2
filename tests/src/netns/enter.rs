//! Running a closure inside a network namespace.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::panic;
use std::thread;

use anyhow::{Context, Result};

/// Runs `f` on a fresh thread that has joined namespace `ns`, and returns
/// its result. A panic inside `f` is propagated to the caller.
///
/// Only the helper thread switches namespace. Sockets created by `f` belong
/// to `ns` for their whole life, so they can be returned and used from any
/// thread: this is how the harness hosts servers and clients inside
/// namespaces. Such sockets keep the namespace alive (though no longer
/// listed) until they are closed.
pub fn in_netns<T, F>(ns: &str, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let ns_path = super::path(ns);
    let ns_file = File::open(&ns_path).with_context(|| format!("cannot open {ns_path}"))?;
    thread::scope(|scope| {
        let worker = scope.spawn(move || -> Result<T> {
            // SAFETY: plain syscall on a valid open file descriptor; it only
            // changes the network namespace of this helper thread.
            let rc = unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("setns({ns_path}) failed"));
            }
            Ok(f())
        });
        worker
            .join()
            .unwrap_or_else(|payload| panic::resume_unwind(payload))
    })
}

/// Writes `/proc/sys/<key>` for each `(key, value)` from a thread inside `ns` (the `net/`
/// sysctls belong to the network namespace of the writing thread).
pub fn set_sysctls(ns: &str, settings: &[(&str, &str)]) -> Result<()> {
    in_netns(ns, || {
        settings.iter().try_for_each(|(key, value)| {
            let path = format!("/proc/sys/{key}");
            std::fs::write(&path, value).with_context(|| format!("cannot write {path} in {ns}"))
        })
    })?
}
