//! The balancer's data plane loaded unattached, with services, for test runs.

use std::{collections::BTreeSet, net::IpAddr, path::PathBuf};

use anyhow::{Context, Result};
use balancer_common::Backend;
use balancer_user::{
    compile::compile,
    dataplane::{bpffs::Layout, DataPlane},
    state::{Affinity, State},
};

/// A data plane loaded for test runs under its own pins, removed on drop.
pub struct Plane {
    dp: Option<DataPlane>,
    root: PathBuf,
    state: State,
    macs: BTreeSet<[u8; 6]>,
}

impl Plane {
    /// The loaded data plane.
    pub fn dp(&mut self) -> &mut DataPlane {
        self.dp.as_mut().expect("loaded until dropped")
    }

    /// The destination MACs written for the backends: a forwarded frame carries one of them.
    pub fn backend_macs(&self) -> &BTreeSet<[u8; 6]> {
        &self.macs
    }

    /// The desired state the data plane was written from.
    pub fn state(&self) -> &State {
        &self.state
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

/// Loads the balancer with an IPv4 and an IPv6 service of `backends` backends each.
pub fn plane(backends: u32, conntrack: u32) -> Result<Plane> {
    let root = PathBuf::from(format!("/sys/fs/bpf/balancer-bench-{}", std::process::id()));
    let mut plane = Plane {
        dp: None,
        root: root.clone(),
        state: State::default(),
        macs: BTreeSet::new(),
    };
    let mut dp = DataPlane::load_unattached(&Layout::new(&root, "bench"), conntrack)?;
    let mut state = State::default();
    for (name, vip, v6) in [
        ("web4", "198.19.0.1:80/tcp", false),
        ("web6", "[2001:db8:ffff::1]:80/tcp", true),
    ] {
        state.add_service(name, vip.parse()?, Affinity::Connection, None)?;
        for i in 0..backends {
            let addr: IpAddr = if v6 {
                format!("2001:db8::{:x}", 0x1000 + i).parse()?
            } else {
                format!("198.18.{}.{}", 1 + i / 250, 1 + i % 250).parse()?
            };
            state.add_backend(name, addr, "main", 100)?;
        }
    }
    for (name, service) in &state.services {
        for (_, b) in service.backends() {
            let mac = [2, 0xbe, (b.index >> 8) as u8, b.index as u8, 0, 1];
            let backend = Backend {
                dst_mac: mac,
                src_mac: [2, 0, 0, 0, 0, 2],
                ifindex: 1,
                epoch: b.epoch,
                forward: balancer_common::FORWARD_DSR,
            };
            dp.set_backend(b.index, &backend, true)?;
            plane.macs.insert(mac);
        }
        let image =
            compile(service, 0, &BTreeSet::new()).with_context(|| format!("compile {name}"))?;
        dp.write_service(service.slot, service.vip.key(), &image.image)?;
    }
    plane.dp = Some(dp);
    plane.state = state;
    Ok(plane)
}
