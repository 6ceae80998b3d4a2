//! The balancer's data plane loaded unattached, with services, for test runs.

use std::{collections::BTreeSet, net::IpAddr, path::PathBuf};

use anyhow::{Context, Result};
use balancer_common::Backend;
use balancer_user::{
    compile::compile,
    dataplane::{bpffs::Layout, DataPlane},
    state::{Affinity, BackendEntry, Forward, Service, State},
};

/// A data plane loaded for test runs under its own pins, removed on drop.
pub struct Plane {
    dp: Option<DataPlane>,
    root: PathBuf,
    layout: Layout,
    state: State,
    macs: BTreeSet<[u8; 6]>,
}

impl Plane {
    /// Loads the product object unattached, its maps pinned under a directory of this
    /// process named `name`, connection tracking sized for `conntrack` flows; no service.
    pub fn load(name: &str, conntrack: u32) -> Result<Plane> {
        Self::load_with(name, conntrack, false)
    }

    /// [`Plane::load`], the program writing flow-sync records when `sync` is set.
    fn load_with(name: &str, conntrack: u32, sync: bool) -> Result<Plane> {
        let root = PathBuf::from(format!(
            "/sys/fs/bpf/balancer-bench-{}-{name}",
            std::process::id()
        ));
        let layout = Layout::new(&root, "bench");
        let mut plane = Plane {
            dp: None,
            root,
            layout,
            state: State::default(),
            macs: BTreeSet::new(),
        };
        plane.dp = Some(DataPlane::load_unattached_syncing(
            &plane.layout,
            conntrack,
            sync,
        )?);
        Ok(plane)
    }

    /// The loaded data plane.
    pub fn dp(&mut self) -> &mut DataPlane {
        self.dp.as_mut().expect("loaded until dropped")
    }

    /// Where its maps are pinned.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The destination MACs written for direct-server-return backends: a frame forwarded
    /// to one of them carries one of these.
    pub fn backend_macs(&self) -> &BTreeSet<[u8; 6]> {
        &self.macs
    }

    /// The desired state the data plane was written from.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Adds service `name` on `vip` (e.g. `198.19.0.1:80/tcp`) forwarding by `forward`,
    /// with `backends` in one group of equal weights, to the desired state only.
    pub fn add_service(
        &mut self,
        name: &str,
        vip: &str,
        forward: Forward,
        backends: &[IpAddr],
    ) -> Result<()> {
        self.state
            .add_service(name, vip.parse()?, Affinity::Connection, None)?;
        self.state.set_forward(name, forward)?;
        for addr in backends {
            self.state.add_backend(name, *addr, "main", 100)?;
        }
        Ok(())
    }

    /// Writes every backend of every service with `place` (its entry and whatever the
    /// entry's mode needs before it), then compiles and publishes every service.
    pub fn publish(
        &mut self,
        mut place: impl FnMut(&mut DataPlane, &Service, &BackendEntry) -> Result<()>,
    ) -> Result<()> {
        let dp = self.dp.as_mut().expect("loaded until dropped");
        for (name, service) in &self.state.services {
            for (_, backend) in service.backends() {
                place(dp, service, backend)?;
            }
            let image =
                compile(service, 0, &BTreeSet::new()).with_context(|| format!("compile {name}"))?;
            dp.write_service(service.slot, service.vip.key(), &image.image)?;
        }
        Ok(())
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        if let Some(dp) = self.dp.take() {
            let _ = dp.teardown();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Loads the balancer with an IPv4 and an IPv6 service of `backends` backends each,
/// forwarding by direct server return: each backend's entry names its own MAC.
pub fn plane(backends: u32, conntrack: u32) -> Result<Plane> {
    services(Plane::load("dsr", conntrack)?, backends)
}

/// [`plane`], the program writing a flow-sync record of each new connection-tracking entry
/// (`daemon --sync-listen`).
pub fn syncing_plane(backends: u32, conntrack: u32) -> Result<Plane> {
    services(Plane::load_with("sync", conntrack, true)?, backends)
}

/// `plane` with the services of [`plane`].
fn services(mut plane: Plane, backends: u32) -> Result<Plane> {
    for (name, vip, v6) in [
        ("web4", "198.19.0.1:80/tcp", false),
        ("web6", "[2001:db8:ffff::1]:80/tcp", true),
    ] {
        let addrs = (0..backends)
            .map(|i| match v6 {
                true => format!("2001:db8::{:x}", 0x1000 + i).parse(),
                false => format!("198.18.{}.{}", 1 + i / 250, 1 + i % 250).parse(),
            })
            .collect::<Result<Vec<IpAddr>, _>>()?;
        plane.add_service(name, vip, Forward::default(), &addrs)?;
    }
    let mut macs = BTreeSet::new();
    plane.publish(|dp, _, b| {
        let backend = dsr_backend(b);
        dp.set_backend(b.index, &backend, true)?;
        macs.insert(backend.dst_mac);
        Ok(())
    })?;
    plane.macs = macs;
    Ok(plane)
}

/// The entry of a direct-server-return backend: a MAC of its own (02:be:index:01), sent
/// out of the interface the packet came in on.
pub fn dsr_backend(b: &BackendEntry) -> Backend {
    Backend {
        dst_mac: [2, 0xbe, (b.index >> 8) as u8, b.index as u8, 0, 1],
        src_mac: [2, 0, 0, 0, 0, 2],
        ifindex: 1,
        epoch: b.epoch,
        forward: balancer_common::FORWARD_DSR,
    }
}
