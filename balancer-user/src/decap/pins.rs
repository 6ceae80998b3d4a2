//! The decapsulator's pins, `<root>/<iface>/{link,stats}`: attaching it so that it outlives
//! the command, replacing an earlier one atomically, removing it, reading its counters.

use std::path::{Path, PathBuf};

use aya::{
    maps::{Map, MapData},
    programs::{
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
        XdpMode,
    },
};
use serde::Serialize;

use super::{
    program::{map_err, program_err},
    DecapError, Decapsulator, Settings,
};
use crate::{
    dataplane::{
        bpffs,
        link::{self, LinkTarget},
    },
    lifecycle::iface,
};

/// Default bpffs directory of the decapsulator's pins.
pub const DEFAULT_ROOT: &str = "/sys/fs/bpf/balancer-decap";

/// How the decapsulator came to be attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    /// Through a new link (nothing of ours was attached to the interface).
    New,
    /// In place of the earlier decapsulator, in its link: atomically, in the link's mode.
    Replaced,
}

/// The decapsulator's counters, summed over the CPUs (since it was last attached).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Tunnel packets whose inner packet went to the kernel.
    pub decapsulated: u64,
    /// Tunnel packets from outer sources outside `--allow`: dropped.
    pub refused: u64,
    /// Tunnel packets with truncated or inconsistent headers, or fragments: passed
    /// untouched.
    pub malformed: u64,
    /// Other packets: passed untouched.
    pub passed: u64,
}

fn dir(root: &Path, iface: &str) -> PathBuf {
    root.join(iface)
}

/// Attaches the decapsulator loaded with `settings` to `iface` (in `mode` when attached
/// anew) and pins its link and counters under `root`.
pub fn attach(
    root: &Path,
    iface: &str,
    mode: XdpMode,
    settings: &Settings,
) -> Result<Attached, DecapError> {
    let ifindex = iface::index(iface)?;
    let dir = dir(root, iface);
    bpffs::ensure(&dir).map_err(|source| DecapError::Bpffs {
        dir: dir.clone(),
        source,
    })?;
    let mut decapsulator = Decapsulator::load(settings)?;
    let link_path = dir.join("link");
    let attached = match link_path.exists() {
        true => match link::target(&link_path).map_err(io_err("inspect the pinned link"))? {
            LinkTarget::Interface(index) if index == ifindex => {
                replace(&mut decapsulator, &link_path)?;
                Attached::Replaced
            }
            // Severed (the interface was deleted and made again) or not ours to keep.
            _ => {
                std::fs::remove_file(&link_path).map_err(io_err("unpin the stale link"))?;
                attach_new(&mut decapsulator, iface, ifindex, mode, &link_path)?;
                Attached::New
            }
        },
        false => {
            attach_new(&mut decapsulator, iface, ifindex, mode, &link_path)?;
            Attached::New
        }
    };
    // The counters of the program now attached, pinned in place of the earlier ones.
    let staged = dir.join("stats_staged");
    remove_absent_ok(&staged).map_err(io_err("unpin stale counters"))?;
    decapsulator
        .stats()?
        .pin(&staged)
        .map_err(|e| DecapError::Io {
            context: format!("pin the counters at {}", staged.display()),
            source: std::io::Error::other(e),
        })?;
    std::fs::rename(&staged, dir.join("stats")).map_err(io_err("pin the counters"))?;
    Ok(attached)
}

/// Detaches the decapsulator from `iface` and removes its pins.
pub fn remove(root: &Path, iface: &str) -> Result<(), DecapError> {
    let dir = dir(root, iface);
    let link_path = dir.join("link");
    if !link_path.exists() {
        return Err(DecapError::NotAttached {
            iface: iface.to_string(),
            dir,
        });
    }
    // The pin holds the link's last reference: unpinning detaches the program.
    std::fs::remove_file(&link_path).map_err(io_err("unpin the link"))?;
    remove_absent_ok(&dir.join("stats")).map_err(io_err("unpin the counters"))?;
    remove_absent_ok(&dir.join("stats_staged")).map_err(io_err("unpin the counters"))?;
    match std::fs::remove_dir(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io_err("remove the pin directory")(e))
        }
        _ => Ok(()),
    }
}

/// The counters of the decapsulator attached to `iface`.
pub fn counters(root: &Path, iface: &str) -> Result<Counters, DecapError> {
    let dir = dir(root, iface);
    let stats = dir.join("stats");
    if !dir.join("link").exists() || !stats.exists() {
        return Err(DecapError::NotAttached {
            iface: iface.to_string(),
            dir,
        });
    }
    let data = MapData::from_pin(&stats).map_err(map_err("open the pinned counters"))?;
    let map = Map::from_map_data(data).map_err(map_err("open the pinned counters"))?;
    Counters::read(&map)
}

fn replace(decapsulator: &mut Decapsulator, link_path: &Path) -> Result<(), DecapError> {
    let pinned = PinnedLink::from_pin(link_path).map_err(|e| DecapError::Io {
        context: format!("open the pinned link {}", link_path.display()),
        source: std::io::Error::other(e),
    })?;
    let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| DecapError::Io {
        context: "the pinned link is not an XDP link".into(),
        source: std::io::Error::other(e),
    })?;
    decapsulator
        .program()?
        .attach_to_link(link)
        .map_err(program_err("replace the program in the pinned link"))?;
    Ok(())
}

fn attach_new(
    decapsulator: &mut Decapsulator,
    iface: &str,
    ifindex: u32,
    mode: XdpMode,
    link_path: &Path,
) -> Result<(), DecapError> {
    let program = decapsulator.program()?;
    let id = program
        .attach_to_if_index(ifindex, mode)
        .map_err(|source| {
            if busy(&source) {
                DecapError::Busy {
                    iface: iface.to_string(),
                }
            } else {
                program_err("attach the decapsulator")(source)
            }
        })?;
    let link = program
        .take_link(id)
        .map_err(program_err("take the XDP link"))?;
    let fd_link = FdLink::try_from(link).map_err(|e| DecapError::Io {
        context: "the kernel attached XDP without a bpf_link (needs Linux 5.9+)".into(),
        source: std::io::Error::other(e),
    })?;
    fd_link.pin(link_path).map_err(|e| DecapError::Io {
        context: format!("pin the link at {}", link_path.display()),
        source: std::io::Error::other(e),
    })?;
    Ok(())
}

/// Whether attaching failed because another XDP program holds the interface.
fn busy(error: &aya::programs::ProgramError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::EBUSY) | Some(libc::EEXIST)) {
                return true;
            }
        }
        source = cause.source();
    }
    false
}

fn remove_absent_ok(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn io_err(context: &'static str) -> impl Fn(std::io::Error) -> DecapError {
    move |source| DecapError::Io {
        context: context.to_string(),
        source,
    }
}
