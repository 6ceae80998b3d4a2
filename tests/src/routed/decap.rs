//! `balancer decap` on the backends of a routed lab: the decapsulator of `ipip` and `gue`
//! services (the test kernel has no IPIP or FOU module).

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::{balancer::binary, netns, topology::names::HOST_INTERFACE};

/// Where the decapsulators of the tests pin their links: one directory per backend
/// namespace below it (every backend's interface is `eth0`, so the default pin directory,
/// named after the interface, would be shared).
const PIN_ROOT: &str = "/sys/fs/bpf/balancer-test-decap";

/// A decapsulator attached to `eth0` of each of some namespaces; dropping it detaches them
/// and removes their pin directories (before the namespaces go).
#[derive(Debug)]
pub struct Decapsulators {
    /// Each namespace and its decapsulator's pin directory, in attach order.
    attached: Vec<(String, PathBuf)>,
}

impl Decapsulators {
    /// Attaches `balancer decap` to `eth0` in each of `namespaces`, each pinned in a
    /// directory named after its namespace. On failure, those already attached are
    /// detached.
    pub fn attach<'a>(namespaces: impl IntoIterator<Item = &'a str>) -> Result<Self> {
        let mut decapsulators = Self {
            attached: Vec::new(),
        };
        for ns in namespaces {
            let dir = PathBuf::from(PIN_ROOT).join(ns);
            decapsulators.decap(ns, &dir, &[])?;
            decapsulators.attached.push((ns.to_owned(), dir));
        }
        Ok(decapsulators)
    }

    /// The counters of the `index`th decapsulator (`balancer decap --status --json`).
    pub fn counters(&self, index: usize) -> Result<serde_json::Value> {
        let (ns, dir) = &self.attached[index];
        let out = self.decap(ns, dir, &["--status", "--json"])?;
        serde_json::from_str(&out).with_context(|| format!("decap --status in {ns}: {out}"))
    }

    /// Runs `balancer decap --iface eth0 --pin-dir DIR extra...` in `ns`.
    fn decap(&self, ns: &str, dir: &std::path::Path, extra: &[&str]) -> Result<String> {
        let bin = binary()?;
        let bin = bin.to_str().context("binary path")?;
        let dir = dir.to_str().context("pin directory")?;
        let argv = [
            &[bin, "decap", "--iface", HOST_INTERFACE, "--pin-dir", dir][..],
            extra,
        ]
        .concat();
        netns::run(ns, &argv)
    }
}

impl Drop for Decapsulators {
    fn drop(&mut self) {
        for (ns, dir) in &self.attached {
            if let Err(error) = self.decap(ns, dir, &["--remove"]) {
                eprintln!("warning: cannot remove the decapsulator in {ns}: {error:#}");
            }
            std::fs::remove_dir(dir).ok();
        }
        // Only when no other test's directory is left in it.
        std::fs::remove_dir(PIN_ROOT).ok();
    }
}
