//! A data plane loaded for `BPF_PROG_TEST_RUN` in its own pin directory, removed again when
//! the test ends (also when it panics), and assertions on what a run did to a frame.

use std::{
    ops::{Deref, DerefMut},
    path::PathBuf,
};

use balancer_common::Backend;
use balancer_user::dataplane::{bpffs::Layout, DataPlane, TestRun};

/// XDP_DROP.
pub const XDP_DROP: u32 = 1;
/// XDP_PASS.
pub const XDP_PASS: u32 = 2;
/// XDP_TX.
pub const XDP_TX: u32 = 3;
/// XDP_REDIRECT.
pub const XDP_REDIRECT: u32 = 4;

/// Interface index of the loopback: the ingress interface of `BPF_PROG_TEST_RUN` without a
/// context, so a backend behind it is reached with XDP_TX.
pub const INGRESS_IFINDEX: u32 = 1;

/// Connection-tracking capacity of test data planes unless a test says otherwise: far above
/// what any test creates, so the LRU never evicts a flow a test relies on.
pub const CONNTRACK_ENTRIES: u32 = 65_536;

/// A loaded, unattached data plane that tears itself down on drop.
pub struct TestPlane {
    plane: Option<DataPlane>,
    root: PathBuf,
}

impl TestPlane {
    /// Loads the program with fresh maps (`conntrack` connection-tracking entries) pinned
    /// under `/sys/fs/bpf/balancer-dptest-<pid>-<test>`, a directory of this test alone.
    pub fn load_sized(test: &str, conntrack: u32) -> Self {
        Self::load_over(test, conntrack, |_| {})
    }

    /// [`TestPlane::load_sized`], with `pin` run on the empty pin layout first: maps it pins
    /// there (as an older build left them) are the ones the program takes over.
    pub fn load_over(test: &str, conntrack: u32, pin: impl FnOnce(&Layout)) -> Self {
        Self::load(test, conntrack, false, pin)
    }

    /// [`TestPlane::load_sized`] with [`CONNTRACK_ENTRIES`], the program writing a sync
    /// record of each new connection-tracking entry.
    pub fn load_syncing(test: &str) -> Self {
        Self::load(test, CONNTRACK_ENTRIES, true, |_| {})
    }

    fn load(test: &str, conntrack: u32, sync: bool, pin: impl FnOnce(&Layout)) -> Self {
        let root = PathBuf::from(format!(
            "/sys/fs/bpf/balancer-dptest-{}-{test}",
            std::process::id()
        ));
        // A leftover of an earlier process with the same pid would hand us its maps.
        let _ = std::fs::remove_dir_all(&root);
        let pins = Layout::new(&root, "lo");
        pin(&pins);
        let plane = DataPlane::load_unattached_syncing(&pins, conntrack, sync)
            .unwrap_or_else(|e| panic!("load the data plane for {test}: {e:?}"));
        Self {
            plane: Some(plane),
            root,
        }
    }
}

impl TestPlane {
    /// The bpffs directory of this data plane's pinned maps (to reach a map directly).
    pub fn maps_dir(&self) -> PathBuf {
        Layout::new(&self.root, "lo").maps()
    }
}

impl Deref for TestPlane {
    type Target = DataPlane;

    fn deref(&self) -> &DataPlane {
        self.plane.as_ref().expect("data plane present until drop")
    }
}

impl DerefMut for TestPlane {
    fn deref_mut(&mut self) -> &mut DataPlane {
        self.plane.as_mut().expect("data plane present until drop")
    }
}

impl Drop for TestPlane {
    fn drop(&mut self) {
        if let Some(plane) = self.plane.take() {
            let result = plane.teardown();
            if !std::thread::panicking() {
                result.expect("tear down the data plane");
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Asserts that `run` forwarded `sent` to `backend` with `action`: destination and source
/// MAC rewritten to the backend's, every other byte (EtherType, tags, IP and up) unchanged.
pub fn assert_forwarded(run: &TestRun, sent: &[u8], backend: &Backend, action: u32, what: &str) {
    assert_eq!(run.action, action, "{what}: XDP action");
    assert_eq!(run.packet.len(), sent.len(), "{what}: frame length");
    assert_eq!(run.packet[0..6], backend.dst_mac, "{what}: destination MAC");
    assert_eq!(run.packet[6..12], backend.src_mac, "{what}: source MAC");
    assert_eq!(run.packet[12..], sent[12..], "{what}: bytes after the MACs");
}

/// Asserts that `run` returned `action` and left `sent` exactly as it was.
pub fn assert_untouched(run: &TestRun, sent: &[u8], action: u32, what: &str) {
    assert_eq!(run.action, action, "{what}: XDP action");
    assert_eq!(run.packet, sent, "{what}: frame must be unchanged");
}
