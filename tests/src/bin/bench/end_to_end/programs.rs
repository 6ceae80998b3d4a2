//! The section's own XDP programs from the test programs' object: the `sink` on each backend,
//! counting what arrives and dropping the flood, and XDP_DROP on the LB's `eth0` for the
//! generator's ceiling.

use anyhow::{Context, Result};
use aya::{
    maps::PerCpuArray,
    programs::{Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use balancer_tests::netns::in_netns;
use balancer_tests::test_programs::OBJECT;

use super::topology::{IFACE, LB_NS};

/// Loads the test programs' object and attaches its program `name` in native mode to `eth0` in
/// namespace `ns`; detached when the returned object drops.
fn attach(ns: &str, name: &str) -> Result<Ebpf> {
    in_netns(ns, || -> Result<Ebpf> {
        let mut ebpf = EbpfLoader::new()
            .load(OBJECT)
            .context("load the test programs")?;
        let program: &mut Xdp = ebpf
            .program_mut(name)
            .with_context(|| format!("{name} missing from the test programs"))?
            .try_into()?;
        program.load()?;
        program
            .attach(IFACE, XdpMode::Driver)
            .with_context(|| format!("attach {name} to {IFACE} in {ns}"))?;
        Ok(ebpf)
    })?
}

/// Sinks on the `eth0` of hosts (the backends, or the LB for what reaches it). Besides
/// counting, a native XDP program on the receiving veth is what makes the kernel deliver
/// frames that XDP redirects into it.
pub struct Sinks {
    hosts: Vec<Ebpf>,
}

impl Sinks {
    /// Attaches a sink in each of the namespaces `hosts`.
    pub fn attach(hosts: &[String]) -> Result<Self> {
        let hosts = hosts
            .iter()
            .map(|ns| attach(ns, "sink"))
            .collect::<Result<_>>()?;
        Ok(Self { hosts })
    }

    /// Packets that reached any of the hosts so far.
    pub fn packets(&self) -> Result<u64> {
        let mut total = 0;
        for ebpf in &self.hosts {
            let counter: PerCpuArray<_, u64> =
                PerCpuArray::try_from(ebpf.map("SINK_PACKETS").context("sink counter")?)?;
            total += counter.get(&0, 0)?.iter().sum::<u64>();
        }
        Ok(total)
    }
}

/// XDP_DROP on the LB's `eth0` while alive: what the generator offers when nothing is
/// forwarded.
pub struct DropAtLb {
    _ebpf: Ebpf,
}

impl DropAtLb {
    /// Attaches `baseline_drop` to the LB's `eth0`.
    pub fn attach() -> Result<Self> {
        Ok(Self {
            _ebpf: attach(LB_NS, "baseline_drop")?,
        })
    }
}
