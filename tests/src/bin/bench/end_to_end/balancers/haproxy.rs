//! HAProxy in TCP mode in the LB's namespace, listening on the VIP (added to the LB's `lo`
//! while it runs) and proxying each connection round-robin to the two backends. It proxies
//! TCP only, so it takes part in the connection test and not in the UDP flood.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use balancer_tests::netns::{spawn, NsProcess};

use crate::end_to_end::{
    responder::TCP_PORT,
    topology::{backend_addr, ip, BACKENDS, LB_NS, VIP},
};

/// The configuration, for the report.
pub fn describe(threads: usize) -> String {
    format!(
        "`mode tcp`, `balance roundrobin`, `nbthread {threads}`, `bind {VIP}:{TCP_PORT}` (VIP \
         on the LB's `lo`), 2 servers"
    )
}

/// The running proxy; dropping it kills it and removes the VIP and its files.
pub struct Proxy {
    _process: NsProcess,
    dir: PathBuf,
}

impl Proxy {
    /// Starts HAProxy with `threads` threads; its files go under `scratch`.
    pub fn start(scratch: &Path, threads: usize) -> Result<Self> {
        let dir = scratch.join("haproxy");
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("haproxy.cfg");
        std::fs::write(&config, config_text(threads))?;
        let vip = format!("{VIP}/32");
        ip(LB_NS, &["address", "add", &vip, "dev", "lo"])?;
        let config_path = config.to_str().context("non-UTF-8 path")?;
        let process = spawn(
            LB_NS,
            &["haproxy", "-db", "-f", config_path],
            &dir.join("haproxy.log"),
        );
        match process {
            Ok(process) => Ok(Proxy {
                _process: process,
                dir,
            }),
            Err(error) => {
                remove_vip();
                Err(error)
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The process field drops after this: the VIP goes first, then the proxy dies.
        remove_vip();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

fn remove_vip() {
    if let Err(error) = ip(
        LB_NS,
        &["address", "del", &format!("{VIP}/32"), "dev", "lo"],
    ) {
        eprintln!("warning: {error:#}");
    }
}

/// The configuration file.
fn config_text(threads: usize) -> String {
    let mut text = format!(
        "global\n    nbthread {threads}\n    maxconn 8000\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 5s\n    \
         timeout server 5s\n\
         frontend vip\n    bind {VIP}:{TCP_PORT}\n    default_backend servers\n\
         backend servers\n    balance roundrobin\n"
    );
    for index in 0..BACKENDS {
        text.push_str(&format!(
            "    server b{index} {}:{TCP_PORT}\n",
            backend_addr(index)
        ));
    }
    text
}
