//! The daemon's command line in a lab, and the flags a test changes in it.

use std::path::PathBuf;

use super::XdpMode;

/// Flags of one daemon start that differ from the lab's own (`None`: the lab's).
#[derive(Clone, Debug, Default)]
pub struct DaemonFlags {
    /// `--iface`.
    pub iface: Option<String>,
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
    /// `--socket`.
    pub socket: Option<PathBuf>,
    /// `--pin-dir`.
    pub pin_dir: Option<PathBuf>,
    /// `--conntrack-size`.
    pub conntrack_size: Option<u32>,
    /// `--xdp-mode`.
    pub mode: Option<XdpMode>,
    /// Further flags, e.g. `--empty-state`.
    pub extra: Vec<String>,
}

/// The lab's own settings, which [`DaemonFlags`] override.
pub(super) struct LabDaemon<'a> {
    pub(super) iface: &'a str,
    pub(super) state_dir: PathBuf,
    pub(super) socket: PathBuf,
    pub(super) pin_dir: &'a std::path::Path,
    pub(super) mode: XdpMode,
    pub(super) conntrack_size: u32,
    pub(super) flow_idle_s: u64,
    /// The lab's further flags, before the start's own.
    pub(super) extra: &'a [String],
}

impl DaemonFlags {
    /// `balancer daemon ...` (without the binary) with the lab's settings and these flags.
    pub(super) fn argv(&self, lab: LabDaemon<'_>) -> Vec<String> {
        let path = |own: &Option<PathBuf>, lab: PathBuf| {
            own.clone().unwrap_or(lab).to_string_lossy().into_owned()
        };
        let mut argv = vec![
            "daemon".to_string(),
            "--iface".into(),
            self.iface.clone().unwrap_or_else(|| lab.iface.to_string()),
            "--xdp-mode".into(),
            self.mode.unwrap_or(lab.mode).flag().into(),
            "--socket".into(),
            path(&self.socket, lab.socket),
            "--state-dir".into(),
            path(&self.state_dir, lab.state_dir),
            "--pin-dir".into(),
            path(&self.pin_dir, lab.pin_dir.to_path_buf()),
            "--conntrack-size".into(),
            self.conntrack_size
                .unwrap_or(lab.conntrack_size)
                .to_string(),
            "--flow-idle".into(),
            lab.flow_idle_s.to_string(),
        ];
        argv.extend(lab.extra.iter().cloned());
        argv.extend(self.extra.iter().cloned());
        argv
    }
}
