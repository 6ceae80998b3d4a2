//! A real etcd (Debian's `etcd-server`) for the fleet tests: in a namespace of its own
//! (`{prefix}-etcd`), linked to each LB namespace by a veth pair of its own (198.18.250.0/24,
//! a /30 each: etcd's side `.4i+1`, the LB's `.4i+2` on its interface `store`), its data in
//! a temporary directory. Stopped (SIGKILL) and started again on the same data; on drop
//! the process is killed, the namespace (and with it the links) and the data removed.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    command::run_in_host,
    netns::{self, spawn, NsProcess},
};

/// etcd's client port.
const CLIENT_PORT: u16 = 2379;

/// How long etcd may take to answer after a start.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running (or stopped) etcd linked to LB namespaces.
pub struct EtcdServer {
    ns: String,
    dir: PathBuf,
    links: usize,
    process: Option<NsProcess>,
}

impl EtcdServer {
    /// Makes etcd's namespace (named after `prefix`, one left over by a crashed run
    /// removed first), links it to each of `lb_namespaces` and starts etcd.
    pub fn start(prefix: &str, lb_namespaces: &[&str]) -> Result<Self> {
        let ns = format!("{prefix}-etcd");
        if netns::list()?.contains(&ns) {
            netns::delete(&ns)?;
        }
        netns::create(&ns)?;
        let dir = std::env::temp_dir().join(format!("balancer-etcd-{prefix}"));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir)?;
        let mut server = Self {
            ns,
            dir,
            links: 0,
            process: None,
        };
        netns::run(&server.ns, &["ip", "link", "set", "lo", "up"])?;
        for lb in lb_namespaces {
            server.link(lb)?;
        }
        server.run()?;
        Ok(server)
    }

    /// etcd's address on link `i` (to the `i`th LB namespace given to [`EtcdServer::start`]).
    pub fn endpoint(i: usize) -> SocketAddr {
        SocketAddr::new(link_addr(i, 1).into(), CLIENT_PORT)
    }

    /// The `--store` URL for the LB of link `i`, with key prefix `prefix` (`/fleet`).
    pub fn store_url(i: usize, prefix: &str) -> String {
        format!("etcd://{}{prefix}", Self::endpoint(i))
    }

    /// Stops etcd (SIGKILL, as a crash); its data stays.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut process) = self.process.take() {
            process.kill()?;
        }
        Ok(())
    }

    /// Starts etcd again on its data.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.run()
    }

    /// The log of etcd.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    fn link(&mut self, lb_ns: &str) -> Result<()> {
        let i = self.links;
        let ours = format!("s{i}");
        run_in_host(&[
            "ip", "-n", &self.ns, "link", "add", &ours, "type", "veth", "peer", "name", "store",
            "netns", lb_ns,
        ])?;
        let (etcd_side, lb_side) = (
            format!("{}/30", link_addr(i, 1)),
            format!("{}/30", link_addr(i, 2)),
        );
        netns::run(&self.ns, &["ip", "addr", "add", &etcd_side, "dev", &ours])?;
        netns::run(&self.ns, &["ip", "link", "set", &ours, "up"])?;
        netns::run(lb_ns, &["ip", "addr", "add", &lb_side, "dev", "store"])?;
        netns::run(lb_ns, &["ip", "link", "set", "store", "up"])?;
        self.links += 1;
        Ok(())
    }

    fn run(&mut self) -> Result<()> {
        let clients: Vec<String> = (0..self.links)
            .map(|i| format!("http://{}", Self::endpoint(i)))
            .collect();
        let clients = clients.join(",");
        let data = self.dir.join("data");
        let argv = [
            "etcd",
            "--name",
            "fleet",
            "--data-dir",
            data.to_str().context("data dir")?,
            "--listen-client-urls",
            &clients,
            "--advertise-client-urls",
            &clients,
            "--listen-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-cluster",
            "fleet=http://127.0.0.1:2380",
        ];
        self.process = Some(spawn(&self.ns, &argv, &self.log_path())?);
        let start = Instant::now();
        loop {
            let answering = netns::in_netns(&self.ns, || {
                TcpStream::connect_timeout(&Self::endpoint(0), Duration::from_millis(200))
            })?;
            if answering.is_ok() {
                return Ok(());
            }
            if start.elapsed() > READY_TIMEOUT {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                bail!("etcd did not answer within {READY_TIMEOUT:?}: {tail:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Address `host` (1: etcd, 2: the LB) of link `i`.
fn link_addr(i: usize, host: u8) -> Ipv4Addr {
    let base = u8::try_from(4 * i).expect("at most 63 links");
    Ipv4Addr::new(198, 18, 250, base + host)
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.process = None;
        if let Err(error) = netns::delete(&self.ns) {
            eprintln!("warning: cannot remove namespace {}: {error:#}", self.ns);
        }
        std::fs::remove_dir_all(&self.dir).ok();
    }
}
