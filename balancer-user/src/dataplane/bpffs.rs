//! Where the data plane's kernel objects are pinned in bpffs: `<root>/v<LAYOUT_VERSION>/<iface>/{maps/,link}`.
//!
//! The version changes whenever a map's layout changes, so a daemon never reuses maps it
//! cannot read.

use std::{
    ffi::CString,
    io,
    path::{Path, PathBuf},
};

/// Version of the map layout; part of the pin path.
pub const LAYOUT_VERSION: u32 = 4;

/// Default bpffs directory of the balancer's kernel objects.
pub const DEFAULT_ROOT: &str = "/sys/fs/bpf/balancer";

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// bpffs paths of one attached data plane.
#[derive(Clone, Debug)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// Layout for `iface` under `root` (a directory on a bpffs).
    pub fn new(root: &Path, iface: &str) -> Self {
        Self {
            dir: root.join(format!("v{LAYOUT_VERSION}")).join(iface),
        }
    }

    /// Data planes of the same interface pinned under the same root with another map
    /// layout version, as (version, directory), oldest first.
    pub fn others(&self) -> io::Result<Vec<(u32, PathBuf)>> {
        // `dir` is <root>/v<LAYOUT_VERSION>/<iface>.
        let (Some(root), Some(iface)) = (
            self.dir.parent().and_then(Path::parent),
            self.dir.file_name(),
        ) else {
            return Ok(Vec::new());
        };
        let entries = match std::fs::read_dir(root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut others = Vec::new();
        for entry in entries {
            let name = entry?.file_name();
            let Some(version) = name
                .to_str()
                .and_then(|n| n.strip_prefix('v'))
                .and_then(|v| v.parse::<u32>().ok())
            else {
                continue;
            };
            let dir = root.join(&name).join(iface);
            if version != LAYOUT_VERSION && dir.exists() {
                others.push((version, dir));
            }
        }
        others.sort();
        Ok(others)
    }

    /// Directory holding everything of this data plane.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Directory of the pinned maps.
    pub fn maps(&self) -> PathBuf {
        self.dir.join("maps")
    }

    /// The pinned XDP link.
    pub fn link(&self) -> PathBuf {
        self.dir.join("link")
    }
}

/// Makes sure `dir`'s filesystem is a bpffs, mounting one on /sys/fs/bpf if that is where
/// `dir` lives and nothing is mounted there yet.
pub fn ensure(dir: &Path) -> io::Result<()> {
    let default_mount = Path::new("/sys/fs/bpf");
    if dir.starts_with(default_mount) && !is_bpffs(default_mount)? {
        mount_bpffs(default_mount)?;
    }
    std::fs::create_dir_all(dir)?;
    if !is_bpffs(dir)? {
        return Err(io::Error::other(format!(
            "{} is not on a bpf filesystem (mount -t bpf bpf DIR)",
            dir.display()
        )));
    }
    Ok(())
}

fn is_bpffs(path: &Path) -> io::Result<bool> {
    let c_path = c_path(path)?;
    // SAFETY: all-zero is a valid statfs (plain integers).
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out pointer.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.f_type as i64 == BPF_FS_MAGIC)
}

fn mount_bpffs(path: &Path) -> io::Result<()> {
    let target = c_path(path)?;
    let fstype = CString::new("bpf").expect("static string");
    // SAFETY: valid C strings; no data argument.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn c_path(path: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("path contains a NUL byte"))
}
