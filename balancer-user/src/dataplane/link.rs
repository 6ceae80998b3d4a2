//! The pinned XDP link as the kernel sees it: the interface it is attached to — none once
//! that interface is gone (a NIC flap, a driver reload) — and the XDP mode a program runs in
//! on an interface.

use std::{
    ffi::CString,
    io,
    os::fd::{FromRawFd, OwnedFd, RawFd},
    path::Path,
    process::Command,
};

use aya::programs::XdpMode;
use serde::Deserialize;

/// `BPF_OBJ_GET` (`enum bpf_cmd`).
const BPF_OBJ_GET: libc::c_long = 7;
/// `BPF_OBJ_GET_INFO_BY_FD` (`enum bpf_cmd`).
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// `BPF_LINK_TYPE_XDP` (`enum bpf_link_type`).
const BPF_LINK_TYPE_XDP: u32 = 6;
/// `XDP_ATTACHED_DRV` and `XDP_ATTACHED_SKB` (`IFLA_XDP_ATTACHED`).
const XDP_ATTACHED_DRV: u8 = 1;
const XDP_ATTACHED_SKB: u8 = 2;

/// What a pinned link is attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkTarget {
    /// An XDP link on the interface of this index.
    Interface(u32),
    /// An XDP link whose interface was deleted: the kernel severed it, and it can no longer
    /// take a program.
    Severed,
    /// Not an XDP link (a link type number of `enum bpf_link_type`).
    Other(u32),
}

/// `BPF_OBJ_GET`'s part of `union bpf_attr`.
#[repr(C, align(8))]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    /// Explicit, so that it is zero: the kernel refuses set bytes past the fields it reads.
    _pad: u32,
}

/// `BPF_OBJ_GET_INFO_BY_FD`'s part of `union bpf_attr`.
#[repr(C, align(8))]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The head of `struct bpf_link_info` up to `xdp.ifindex`, the first word of its union
/// (the kernel fills only as much as it is given).
#[repr(C, align(8))]
#[derive(Default)]
struct LinkInfoHead {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    xdp_ifindex: u32,
    _pad2: u32,
}

/// What the link pinned at `pin` is attached to.
pub fn target(pin: &Path) -> io::Result<LinkTarget> {
    let fd = open_pinned(pin)?;
    let mut info = LinkInfoHead::default();
    let attr = InfoAttr {
        bpf_fd: u32::try_from(raw(&fd)).map_err(io::Error::other)?,
        info_len: size_of::<LinkInfoHead>() as u32,
        info: std::ptr::addr_of_mut!(info) as u64,
    };
    // SAFETY: `attr` is a valid BPF_OBJ_GET_INFO_BY_FD attribute whose `info` points to
    // `info_len` writable bytes that live across the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            std::ptr::addr_of!(attr),
            size_of::<InfoAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(match (info.link_type, info.xdp_ifindex) {
        (BPF_LINK_TYPE_XDP, 0) => LinkTarget::Severed,
        (BPF_LINK_TYPE_XDP, ifindex) => LinkTarget::Interface(ifindex),
        (other, _) => LinkTarget::Other(other),
    })
}

fn open_pinned(pin: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = CString::new(pin.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("path contains a NUL byte"))?;
    let attr = ObjGetAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        _pad: 0,
    };
    // SAFETY: `attr` is a valid BPF_OBJ_GET attribute; `pathname` points to a NUL-terminated
    // string that lives across the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            std::ptr::addr_of!(attr),
            size_of::<ObjGetAttr>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn raw(fd: &OwnedFd) -> RawFd {
    use std::os::fd::AsRawFd as _;
    fd.as_raw_fd()
}

#[derive(Deserialize)]
struct LinkXdp {
    xdp: Option<XdpAttached>,
}

#[derive(Deserialize)]
struct XdpAttached {
    mode: u8,
}

/// The mode of the XDP program attached to `iface` (`ip -details -json link show`): `None`
/// when none is, or in a mode the daemon does not use.
pub fn attached_mode(iface: &str) -> io::Result<Option<XdpMode>> {
    let out = Command::new("ip")
        .args(["-details", "-json", "link", "show", "dev", iface])
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "`ip link show dev {iface}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let links: Vec<LinkXdp> = serde_json::from_slice(&out.stdout).map_err(io::Error::other)?;
    Ok(
        match links.first().and_then(|l| l.xdp.as_ref()).map(|x| x.mode) {
            Some(XDP_ATTACHED_DRV) => Some(XdpMode::Driver),
            Some(XDP_ATTACHED_SKB) => Some(XdpMode::Skb),
            _ => None,
        },
    )
}
