//! The decapsulator loaded with its settings: the GUE port and the allowed outer sources
//! are written before the program is loaded (the port and whether sources are restricted
//! are load-time constants, the prefixes fill the program's LPM tries).

use aya::{
    maps::{lpm_trie::Key, LpmTrie, Map, MapData, PerCpuArray},
    programs::{TestRun as _, TestRunOptions, Xdp},
    Ebpf, EbpfLoader,
};
use balancer_common::{
    DECAP_DECAPSULATED, DECAP_MALFORMED, DECAP_PASSED, DECAP_REFUSED, DECAP_STAT_COUNT,
};
use ipnet::IpNet;

use super::{
    object::{DECAP_PROGRAM, OBJECT},
    Counters, DecapError,
};
use crate::dataplane::TestRun;

/// Most `--allow` prefixes per family (the size of each of the program's LPM tries).
pub const MAX_ALLOWED: u32 = 256;

/// Name of the counters' map in the object.
pub(super) const STATS_MAP: &str = "DECAP_STATS";

/// What the decapsulator is loaded with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// UDP destination port of GUE.
    pub gue_port: u16,
    /// Outer sources whose tunnel packets are taken; empty: any.
    pub allow: Vec<IpNet>,
}

/// The decapsulator's object, loaded into the kernel (not attached).
pub struct Decapsulator {
    ebpf: Ebpf,
}

impl Decapsulator {
    /// Loads the object with `settings` and loads its program into the kernel.
    pub fn load(settings: &Settings) -> Result<Self, DecapError> {
        let (v4, v6): (Vec<IpNet>, Vec<IpNet>) = settings
            .allow
            .iter()
            .map(IpNet::trunc)
            .partition(|net| matches!(net, IpNet::V4(_)));
        if v4.len() > MAX_ALLOWED as usize || v6.len() > MAX_ALLOWED as usize {
            return Err(DecapError::TooManyPrefixes { max: MAX_ALLOWED });
        }
        let restricted = u8::from(!settings.allow.is_empty());
        let mut ebpf = EbpfLoader::new()
            .override_global("RESTRICTED", &restricted, true)
            .override_global("DECAP_GUE_PORT", &settings.gue_port, true)
            .load(OBJECT)?;
        let mut allow_v4: LpmTrie<&mut MapData, [u8; 4], u8> = map(&mut ebpf, "ALLOW_V4")?;
        for net in &v4 {
            if let IpNet::V4(net) = net {
                let key = Key::new(u32::from(net.prefix_len()), net.addr().octets());
                allow_v4
                    .insert(&key, 1, 0)
                    .map_err(map_err("write ALLOW_V4"))?;
            }
        }
        let mut allow_v6: LpmTrie<&mut MapData, [u8; 16], u8> = map(&mut ebpf, "ALLOW_V6")?;
        for net in &v6 {
            if let IpNet::V6(net) = net {
                let key = Key::new(u32::from(net.prefix_len()), net.addr().octets());
                allow_v6
                    .insert(&key, 1, 0)
                    .map_err(map_err("write ALLOW_V6"))?;
            }
        }
        let mut decapsulator = Self { ebpf };
        decapsulator.program()?.load().map_err(program_err(
            "load the decapsulator's XDP program (verifier)",
        ))?;
        Ok(decapsulator)
    }

    /// The XDP program.
    pub(super) fn program(&mut self) -> Result<&mut Xdp, DecapError> {
        self.ebpf
            .program_mut(DECAP_PROGRAM)
            .ok_or_else(|| DecapError::Io {
                context: format!("the decapsulator's object has no program {DECAP_PROGRAM}"),
                source: std::io::ErrorKind::NotFound.into(),
            })?
            .try_into()
            .map_err(program_err("find the decapsulator's XDP program"))
    }

    /// The counters' map (to pin).
    pub(super) fn stats(&self) -> Result<&Map, DecapError> {
        self.ebpf.map(STATS_MAP).ok_or_else(|| DecapError::Io {
            context: format!("the decapsulator's object has no map {STATS_MAP}"),
            source: std::io::ErrorKind::NotFound.into(),
        })
    }

    /// The counters so far, summed over the CPUs.
    pub fn counters(&self) -> Result<Counters, DecapError> {
        Counters::read(self.stats()?)
    }

    /// Runs the program once on `packet` with `BPF_PROG_TEST_RUN`: the XDP action and the
    /// packet as the program left it.
    pub fn test_run(&mut self, packet: &[u8]) -> Result<TestRun, DecapError> {
        let mut out = vec![0u8; packet.len() + 256];
        let result = self
            .program()?
            .test_run(TestRunOptions {
                data_in: Some(packet),
                data_out: Some(&mut out),
                repeat: 1,
                ..Default::default()
            })
            .map_err(program_err("BPF_PROG_TEST_RUN"))?;
        out.truncate(result.data_size_out as usize);
        Ok(TestRun {
            action: result.return_value,
            packet: out,
            duration: result.duration,
        })
    }
}

impl Counters {
    /// Sums the per-CPU counters of `map` (a `DECAP_STATS`).
    pub(super) fn read(map: &Map) -> Result<Self, DecapError> {
        let stats: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).map_err(map_err("open DECAP_STATS"))?;
        let mut sums = [0u64; DECAP_STAT_COUNT as usize];
        for (index, sum) in sums.iter_mut().enumerate() {
            let values = stats
                .get(&(index as u32), 0)
                .map_err(map_err("read DECAP_STATS"))?;
            *sum = values.iter().sum();
        }
        Ok(Self {
            decapsulated: sums[DECAP_DECAPSULATED as usize],
            refused: sums[DECAP_REFUSED as usize],
            malformed: sums[DECAP_MALFORMED as usize],
            passed: sums[DECAP_PASSED as usize],
        })
    }
}

/// The map `name` of `ebpf` as a `T`.
fn map<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<T, DecapError>
where
    T: TryFrom<&'a mut Map, Error = aya::maps::MapError>,
{
    let map = ebpf.map_mut(name).ok_or_else(|| DecapError::Io {
        context: format!("the decapsulator's object has no map {name}"),
        source: std::io::ErrorKind::NotFound.into(),
    })?;
    T::try_from(map).map_err(map_err("open an allow map"))
}

pub(super) fn map_err(context: &'static str) -> impl Fn(aya::maps::MapError) -> DecapError {
    move |source| DecapError::Map {
        context: context.to_string(),
        source,
    }
}

pub(super) fn program_err(
    context: &'static str,
) -> impl Fn(aya::programs::ProgramError) -> DecapError {
    move |source| DecapError::Program {
        context: context.to_string(),
        source,
    }
}
