//! bird2 in a namespace: an LB host's (the shipped `packaging/bird-lb.conf`, included after
//! the host's constants) or the router's (a BGP session with each LB host, the VIPs'
//! paths merged into one multipath route per VIP in the kernel). Short timers for the
//! tests: hold 3 s, keepalive 1 s, no graceful restart.

use std::{
    fmt::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::addresses;
use crate::{
    command::run_command,
    netns::{self, NsProcess},
};

/// The BGP hold time of every session, seconds: a dead LB host's paths are gone from the
/// router after this at most.
pub const HOLD: Duration = Duration::from_secs(3);
/// The BGP keepalive time of every session, seconds.
const KEEPALIVE: Duration = Duration::from_secs(1);
/// The LB hosts' AS.
const LB_AS: u32 = 65001;
/// The router's AS.
const ROUTER_AS: u32 = 65000;
/// How long bird may take to answer on its control socket after a start.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The shipped LB host configuration that the LB hosts' bird includes.
fn shipped_lb_conf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/bird-lb.conf")
}

/// A running bird (killed on drop).
pub struct Bird {
    process: Option<NsProcess>,
    control: PathBuf,
}

impl Bird {
    /// bird on LB host `index` (namespace `ns`), exporting the VIPs of kernel table
    /// `table` to the router; its files in `dir`.
    pub fn lb(ns: &str, dir: &Path, index: usize, table: u32) -> Result<Self> {
        let shipped = shipped_lb_conf();
        let conf = format!(
            "define ROUTER_ID = {};\n\
             define ROUTER_ADDR = {};\n\
             define LOCAL_AS = {LB_AS};\n\
             define ROUTER_AS = {ROUTER_AS};\n\
             define ANNOUNCE_TABLE = {table};\n\
             define HOLD = {};\n\
             define KEEPALIVE = {};\n\
             include \"{}\";\n",
            addresses::lb(index, false),
            addresses::router(false),
            HOLD.as_secs(),
            KEEPALIVE.as_secs(),
            shipped
                .canonicalize()
                .with_context(|| format!("{}", shipped.display()))?
                .display()
        );
        Self::start(ns, dir, &conf)
    }

    /// bird on the router (namespace `ns`): a session with each of `hosts` LB hosts, and
    /// the kernel protocols that install one multipath route per VIP (`merge paths`).
    pub fn router(ns: &str, dir: &Path, hosts: usize) -> Result<Self> {
        let mut conf = format!(
            "router id {};\n\
             protocol device {{ }}\n\
             protocol kernel fib4 {{ merge paths on; ipv4 {{ import none; export all; }}; }}\n\
             protocol kernel fib6 {{ merge paths on; ipv6 {{ import none; export all; }}; }}\n\
             template bgp lbs {{\n\
             \tlocal as {ROUTER_AS};\n\
             \thold time {};\n\
             \tkeepalive time {};\n\
             \tconnect delay time 1;\n\
             \tconnect retry time 5;\n\
             \terror wait time 1, 10;\n\
             \tgraceful restart off;\n\
             \tipv4 {{ import all; export none; }};\n\
             \tipv6 {{ import all; export none; }};\n\
             }}\n",
            addresses::router(false),
            HOLD.as_secs(),
            KEEPALIVE.as_secs(),
        );
        for index in 0..hosts {
            writeln!(
                conf,
                "protocol bgp lb{index} from lbs {{ neighbor {} as {LB_AS}; }}",
                addresses::lb(index, false)
            )?;
        }
        Self::start(ns, dir, &conf)
    }

    fn start(ns: &str, dir: &Path, conf: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let file = dir.join("bird.conf");
        std::fs::write(&file, conf)?;
        let control = dir.join("bird.ctl");
        let pid = dir.join("bird.pid");
        let argv = [
            "bird",
            "-f",
            "-c",
            path(&file)?,
            "-s",
            path(&control)?,
            "-P",
            path(&pid)?,
        ];
        let process = netns::spawn(ns, &argv, &dir.join("bird.log"))?;
        let mut bird = Self {
            process: Some(process),
            control,
        };
        let start = Instant::now();
        while bird.show("status").is_err() {
            let running = bird.process.as_mut().is_some_and(|p| p.is_running());
            if !running || start.elapsed() > READY_TIMEOUT {
                let log = std::fs::read_to_string(dir.join("bird.log")).unwrap_or_default();
                bail!("bird in {ns} did not start: {log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(bird)
    }

    /// `birdc show WHAT`'s output.
    pub fn show(&self, what: &str) -> Result<String> {
        let mut argv = vec!["birdc", "-s", path(&self.control)?, "show"];
        argv.extend(what.split_whitespace());
        let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
        run_command(&argv, None)
    }

    /// How many of its BGP sessions are established.
    pub fn established(&self) -> Result<usize> {
        Ok(self
            .show("protocols")?
            .lines()
            .filter(|line| line.contains(" BGP ") && line.contains("Established"))
            .count())
    }

    /// Kills bird (SIGKILL): its sessions end without a word.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut process) = self.process.take() {
            process.kill()?;
        }
        Ok(())
    }
}

fn path(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

/// The gateways of the route of `vip` in namespace `ns`'s main table (one per path of a
/// multipath route; none without a route).
pub fn gateways(ns: &str, vip: IpAddr) -> Result<Vec<IpAddr>> {
    let family = if vip.is_ipv6() { "-6" } else { "-4" };
    let exact = format!("{vip}/{}", if vip.is_ipv6() { 128 } else { 32 });
    let shown = netns::run(
        ns,
        &[
            "ip", family, "-json", "route", "show", "to", "exact", &exact,
        ],
    )?;
    let routes: serde_json::Value =
        serde_json::from_str(&shown).with_context(|| format!("parse `ip -json route`: {shown}"))?;
    let mut gateways = Vec::new();
    for route in routes.as_array().into_iter().flatten() {
        let hops = match route.get("nexthops").and_then(|n| n.as_array()) {
            Some(hops) => hops.clone(),
            None => vec![route.clone()],
        };
        for hop in hops {
            if let Some(gateway) = hop.get("gateway").and_then(|g| g.as_str()) {
                gateways.push(gateway.parse()?);
            }
        }
    }
    gateways.sort();
    Ok(gateways)
}
