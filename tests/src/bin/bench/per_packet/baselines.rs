//! The baseline programs of the test programs' object: XDP_DROP and a MAC swap with
//! XDP_TX, what the balancer's rows are divided by.

use anyhow::{bail, Context, Result};
use aya::{
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf, EbpfLoader,
};
use balancer_tests::test_programs::OBJECT;

use super::{expect::action_name, runs::timed, SECTION};
use crate::stats::Spread;

/// The baseline programs, loaded.
pub struct Baselines {
    ebpf: Ebpf,
}

impl Baselines {
    /// Loads `baseline_drop` and `baseline_macswap`.
    pub fn load() -> Result<Self> {
        let mut ebpf = EbpfLoader::new()
            .load(OBJECT)
            .context("load the test programs")?;
        for name in ["baseline_drop", "baseline_macswap"] {
            let program: &mut Xdp = ebpf
                .program_mut(name)
                .context("baseline missing")?
                .try_into()?;
            program.load()?;
        }
        Ok(Self { ebpf })
    }

    /// Mean ns per run of program `name` on `frame`: `calls` calls of `repeat` runs each,
    /// over `rounds` rounds, after one run that must return `action`.
    pub fn cost(
        &mut self,
        name: &str,
        action: u32,
        frame: &[u8],
        repeat: u32,
        calls: u32,
        rounds: usize,
    ) -> Result<Spread> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .context("baseline missing")?
            .try_into()?;
        let returned = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: 1,
                ..Default::default()
            })?
            .return_value;
        if returned != action {
            bail!(
                "{SECTION}: baseline {name} returned {}, expected {}",
                action_name(returned),
                action_name(action)
            );
        }
        let runs = (0..rounds)
            .map(|_| {
                let mut total = 0.0;
                for _ in 0..calls {
                    let result = program.test_run(TestRunOptions {
                        data_in: Some(frame),
                        repeat,
                        ..Default::default()
                    })?;
                    total += result.duration.as_nanos() as f64;
                }
                Ok(total / f64::from(calls))
            })
            .collect::<Result<_>>()?;
        timed(&format!("baseline {name}"), Spread::of(runs))
    }
}
