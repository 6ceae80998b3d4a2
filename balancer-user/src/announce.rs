//! VIPs announced over BGP. The daemon keeps one route per VIP address (a `/32` or `/128`
//! blackhole route of protocol [`PROTOCOL`]) in the kernel routing table given by
//! `daemon --announce-table`; the host's BGP daemon (bird2's `kernel` protocol with `learn`
//! on that table) exports those routes to the router, which spreads the VIPs' flows over
//! every LB host that announces them (ECMP). Nothing looks the table up for forwarding.
//!
//! * [`routes`]: the table as the kernel holds it (read, add, remove), over rtnetlink.
//! * [`plan`]: what the table must hold (every VIP of the state, none when this host left
//!   the fleet or was torn down) and the additions and removals that make it so (pure).
//! * [`left`]: the host-local mark of `fleet leave`, a file in the state directory, so that
//!   a daemon restarted after `fleet leave` stays out.
//!
//! The daemon announces once its data plane is attached and its state reconciled; its
//! exit (a signal, a crash) leaves the routes (the pinned data plane keeps forwarding);
//! `teardown` and `fleet leave` withdraw them.

pub mod left;
pub mod plan;
pub mod routes;

use std::{
    collections::BTreeSet,
    future::Future,
    io,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
};

use crate::api::Announcement;

/// The route protocol number of the daemon's routes (`ip route show table N proto 251`):
/// the routes it adds and the only ones it removes.
pub const PROTOCOL: u8 = 251;

/// Why announcing did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    /// The daemon runs without `--announce-table`.
    #[error("this daemon announces no VIPs: start it with --announce-table")]
    Off,
    /// The kernel refused to read or change the table.
    #[error("cannot {what} in routing table {table}")]
    Kernel {
        /// What was tried.
        what: String,
        /// The table.
        table: u32,
        /// The kernel's error.
        source: io::Error,
    },
    /// The mark of `fleet leave` could not be read or written.
    #[error("cannot {what} {}", path.display())]
    Mark {
        /// What was tried.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The work ran on a thread that panicked.
    #[error("announcing panicked: {0}")]
    Panicked(String),
}

impl AnnounceError {
    /// Whether the host failed (rather than the request not fitting the daemon).
    pub fn is_host_fault(&self) -> bool {
        !matches!(self, AnnounceError::Off)
    }
}

/// Checks `--announce-table`: a table number other than the kernel's own (0 unspecified,
/// 253 default, 254 main, 255 local).
pub fn parse_table(text: &str) -> Result<u32, String> {
    let table: u32 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a routing table number"))?;
    match table {
        0 | 253..=255 => Err(format!(
            "table {table} is the kernel's own (0, 253, 254, 255): give a table of its own"
        )),
        _ => Ok(table),
    }
}

/// This daemon's announcements: the table, whether the host left the fleet, what the table
/// held at the last pass. Passes run one at a time.
pub struct Announcer {
    table: u32,
    state_dir: PathBuf,
    left: AtomicBool,
    /// Set by `teardown`: nothing is announced any more.
    withdrawn: AtomicBool,
    /// The VIPs the table held after the last pass.
    announced: Mutex<BTreeSet<IpAddr>>,
    /// Held through a pass: passes never interleave.
    passing: tokio::sync::Mutex<()>,
}

impl Announcer {
    /// The announcer of table `table`, its `fleet leave` mark read from `state_dir`.
    pub fn open(table: u32, state_dir: &Path) -> Result<Self, AnnounceError> {
        Ok(Self {
            table,
            state_dir: state_dir.to_path_buf(),
            left: AtomicBool::new(left::read(state_dir)?),
            withdrawn: AtomicBool::new(false),
            announced: Mutex::new(BTreeSet::new()),
            passing: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether this host left the fleet (`fleet leave`, until `fleet join`).
    pub fn left(&self) -> bool {
        self.left.load(Ordering::SeqCst)
    }

    /// Marks this host as left (or joined again) on disk, then in memory; the next pass
    /// withdraws (or announces).
    pub async fn set_left(&self, left: bool) -> Result<(), AnnounceError> {
        let dir = self.state_dir.clone();
        blocking(move || left::write(&dir, left)).await?;
        self.left.store(left, Ordering::SeqCst);
        Ok(())
    }

    /// From now on nothing is announced (`teardown`); the next pass withdraws everything.
    pub fn withdraw_all(&self) {
        self.withdrawn.store(true, Ordering::SeqCst);
    }

    /// One pass: reads the VIPs with `vips` (while no other pass runs), then makes the
    /// table hold exactly the routes [`plan::wanted`] says, off any other lock.
    pub async fn pass<F, E>(&self, vips: F) -> Result<(), E>
    where
        F: Future<Output = Result<BTreeSet<IpAddr>, E>>,
        E: From<AnnounceError>,
    {
        let _passing = self.passing.lock().await;
        let vips = vips.await?;
        let out = self.left() || self.withdrawn.load(Ordering::SeqCst);
        let wanted = plan::wanted(&vips, out);
        let table = self.table;
        let held = blocking(move || {
            let held = routes::held(table)?;
            let plan = plan::Plan::between(&held, &wanted);
            routes::apply(table, &plan)?;
            Ok(wanted)
        })
        .await?;
        *self.announced.lock().unwrap_or_else(|e| e.into_inner()) = held;
        Ok(())
    }

    /// What `status` shows.
    pub fn status(&self) -> Announcement {
        let announced = self.announced.lock().unwrap_or_else(|e| e.into_inner());
        Announcement {
            table: self.table,
            left: self.left(),
            vips: announced.iter().copied().collect(),
        }
    }
}

/// Runs `work` on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, AnnounceError> + Send + 'static,
) -> Result<T, AnnounceError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| AnnounceError::Panicked(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_of_the_kernel_are_refused_in_one_line() {
        assert_eq!(parse_table("100"), Ok(100));
        assert_eq!(parse_table("4000000000"), Ok(4_000_000_000));
        for bad in ["0", "253", "254", "255", "main", "-1", ""] {
            let err = parse_table(bad).unwrap_err();
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }
}
