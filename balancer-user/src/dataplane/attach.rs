//! Loading the object, attaching the program, and taking over a pinned attachment.

use std::path::Path;

use aya::{
    maps::MapData,
    programs::{
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
        Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use balancer_common::pending_slots;

use super::{
    bpffs::{ensure, Layout},
    link::{self, LinkTarget},
    object::{BALANCER_PROGRAM, OBJECT},
    DataPlaneError,
};

/// How to attach the data plane.
#[derive(Clone, Debug)]
pub struct AttachOptions {
    /// Interface to attach to.
    pub iface: String,
    /// Its index.
    pub ifindex: u32,
    /// Native (driver) or generic (skb) XDP.
    pub mode: XdpMode,
    /// Where the link and maps are pinned.
    pub bpffs: Layout,
    /// Connection-tracking capacity (only used when the maps are created): the established
    /// flows; the pending table gets [`pending_slots`] for it.
    pub conntrack_entries: u32,
    /// Whether the program writes a record of each new connection-tracking entry to the
    /// sync ring buffer (`daemon --sync-listen`).
    pub sync: bool,
}

/// Loads the object with its maps pinned under `bpffs` (reusing pinned maps, creating and
/// pinning absent ones) and loads the XDP program into the kernel; with `sync`, the program
/// records each new connection-tracking entry in the sync ring buffer.
pub(super) fn load(
    bpffs: &Layout,
    conntrack_entries: u32,
    sync: bool,
) -> Result<Ebpf, DataPlaneError> {
    let maps_dir = bpffs.maps();
    ensure(bpffs.dir()).map_err(io_err("prepare the bpffs pin directory"))?;
    std::fs::create_dir_all(&maps_dir).map_err(io_err("create the map pin directory"))?;
    // The pending table's mask must fit the map: a pinned one keeps the size it was made
    // with.
    let pending = match aya::maps::MapData::from_pin(maps_dir.join("PENDING")) {
        Ok(map) => map
            .info()
            .map_err(|e| DataPlaneError::Io {
                context: "read the pinned pending table's size".into(),
                source: std::io::Error::other(e),
            })?
            .max_entries(),
        Err(_) => pending_slots(conntrack_entries),
    };
    let pending_mask = pending.next_power_of_two() - 1;
    // `TABLES` is a BTF map, which carries no pinning of its own: pinned by path.
    let tables = maps_dir.join("TABLES");
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(&maps_dir)
        .map_pin_path("TABLES", tables.as_path())
        .map_max_entries("CONNTRACK", conntrack_entries)
        .map_max_entries("TRANSLATIONS", conntrack_entries)
        .map_max_entries("ALLOCATIONS", conntrack_entries)
        .map_max_entries("PENDING", pending)
        .override_global("PENDING_MASK", &pending_mask, true)
        .override_global("SYNC_RECORDS", &u32::from(sync), true)
        .load(OBJECT)?;
    program(&mut ebpf)?
        .load()
        .map_err(prog_err("load the XDP program"))?;
    Ok(ebpf)
}

/// The load-balancing program of a loaded object.
pub(super) fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp, DataPlaneError> {
    ebpf.program_mut(BALANCER_PROGRAM)
        .ok_or_else(|| DataPlaneError::MissingMap(BALANCER_PROGRAM.into()))?
        .try_into()
        .map_err(prog_err("find the XDP program"))
}

/// Every map pinned in `maps_dir` (the program's maps, all but aya's own), by name, each
/// through a handle of its own opened from its pin: with only the capabilities the daemon
/// runs with (opening a program's maps by id needs CAP_SYS_ADMIN).
pub(super) fn used_maps(
    maps_dir: &std::path::Path,
) -> Result<Vec<(String, MapData)>, DataPlaneError> {
    let entries = std::fs::read_dir(maps_dir).map_err(io_err("list the pinned maps"))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("list the pinned maps"))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let pin = maps_dir.join(&name);
            let map = MapData::from_pin(&pin).map_err(|source| DataPlaneError::Map {
                context: format!("open the pinned map {}", pin.display()),
                source,
            })?;
            Ok((name, map))
        })
        .collect()
}

/// How the program came to be attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attachment {
    /// Nothing was pinned: attached through a new link, pinned at once.
    New,
    /// The program replaced the previous one in the pinned link, atomically.
    Replaced,
    /// The pinned link no longer served the interface — severed when the interface was
    /// deleted, or attached to another interface — so it was unpinned and the program
    /// attached through a new link. The pinned maps, connection tracking included, were kept.
    Renewed(LinkTarget),
}

/// Attaches the loaded program: through the pinned link if it serves the interface — an
/// atomic program replacement that keeps every map and so every tracked flow — else through
/// a new link that is pinned at once, so the data plane outlives the daemon.
pub(super) fn attach(
    ebpf: &mut Ebpf,
    options: &AttachOptions,
) -> Result<Attachment, DataPlaneError> {
    let link_path = options.bpffs.link();
    let program = program(ebpf)?;
    if !link_path.exists() {
        attach_new(program, options, &link_path)?;
        return Ok(Attachment::New);
    }
    let target = link::target(&link_path).map_err(|source| DataPlaneError::Io {
        context: format!("inspect the pinned link {}", link_path.display()),
        source,
    })?;
    if target == LinkTarget::Interface(options.ifindex) {
        replace_program(program, &link_path)?;
        return Ok(Attachment::Replaced);
    }
    let why = match target {
        LinkTarget::Severed => "was severed (its interface was deleted)".to_string(),
        LinkTarget::Interface(other) => format!("is attached to another interface (index {other})"),
        LinkTarget::Other(kind) => format!("is not an XDP link (link type {kind})"),
    };
    tracing::warn!(
        "the pinned link {} {why}: attaching anew to {} (index {}), keeping the pinned maps",
        link_path.display(),
        options.iface,
        options.ifindex,
    );
    std::fs::remove_file(&link_path).map_err(io_err("unpin the stale XDP link"))?;
    attach_new(program, options, &link_path)?;
    Ok(Attachment::Renewed(target))
}

/// Unpins link and maps, whichever are there, and removes the pin directory. Once the last
/// file descriptor closes, the program is detached and the maps are freed.
pub(super) fn unpin_all(bpffs: &Layout) -> Result<(), DataPlaneError> {
    let absent_ok = |result: std::io::Result<()>| match result {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    };
    absent_ok(std::fs::remove_file(bpffs.link())).map_err(io_err("unpin the XDP link"))?;
    match std::fs::read_dir(bpffs.maps()) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.map_err(io_err("list pinned maps"))?;
                absent_ok(std::fs::remove_file(entry.path())).map_err(io_err("unpin a map"))?;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("list pinned maps")(e)),
    }
    absent_ok(std::fs::remove_dir(bpffs.maps())).map_err(io_err("remove the map pin directory"))?;
    absent_ok(std::fs::remove_dir(bpffs.dir())).map_err(io_err("remove the pin directory"))?;
    Ok(())
}

fn replace_program(program: &mut Xdp, link_path: &Path) -> Result<(), DataPlaneError> {
    let pinned = PinnedLink::from_pin(link_path).map_err(|e| DataPlaneError::Io {
        context: format!("open the pinned link {}", link_path.display()),
        source: std::io::Error::other(e),
    })?;
    let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| DataPlaneError::Io {
        context: "the pinned link is not an XDP link".into(),
        source: std::io::Error::other(e),
    })?;
    program
        .attach_to_link(link)
        .map_err(prog_err("replace the program in the pinned link"))?;
    Ok(())
}

fn attach_new(
    program: &mut Xdp,
    options: &AttachOptions,
    link_path: &Path,
) -> Result<(), DataPlaneError> {
    let id = program
        .attach_to_if_index(options.ifindex, options.mode)
        .map_err(prog_err("attach the XDP program"))?;
    let link = program
        .take_link(id)
        .map_err(prog_err("take the XDP link"))?;
    let fd_link = FdLink::try_from(link).map_err(|e| DataPlaneError::Io {
        context: "the kernel attached XDP without a bpf_link (needs Linux 5.9+)".into(),
        source: std::io::Error::other(e),
    })?;
    fd_link.pin(link_path).map_err(|e| DataPlaneError::Io {
        context: format!("pin the XDP link at {}", link_path.display()),
        source: std::io::Error::other(e),
    })?;
    Ok(())
}

fn io_err(context: &'static str) -> impl Fn(std::io::Error) -> DataPlaneError {
    move |source| DataPlaneError::Io {
        context: context.to_string(),
        source,
    }
}

fn prog_err(context: &'static str) -> impl Fn(aya::programs::ProgramError) -> DataPlaneError {
    move |source| DataPlaneError::Program {
        context: context.to_string(),
        source,
    }
}
