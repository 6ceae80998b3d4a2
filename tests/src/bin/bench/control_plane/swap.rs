//! The cost of replacing a service's whole data-plane image: compiling it from the desired
//! state, and writing it (a new tables map, swapped in: the kernel's grace period included).

use std::{collections::BTreeSet, time::Instant};

use anyhow::{Context, Result};
use balancer_user::compile::compile;

use crate::{plane::plane, stats::Spread};

/// Compile and write times, in ms, for one service size.
pub struct SwapCost {
    /// Backends of the service.
    pub backends: u32,
    /// `compile` of the service.
    pub compile: Spread,
    /// `write_service` of the compiled image.
    pub write: Spread,
}

/// Compiles and writes a service of `backends` backends `rounds` times.
pub fn measure(backends: u32, rounds: usize) -> Result<SwapCost> {
    let mut plane = plane(backends, 1024)?;
    let service = plane
        .state()
        .services
        .get("web4")
        .context("the bench plane has no web4 service")?
        .clone();
    let mut compiles = Vec::with_capacity(rounds);
    let mut writes = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        let compiled = compile(&service, 0, &BTreeSet::new())?;
        compiles.push(start.elapsed().as_secs_f64() * 1e3);
        let start = Instant::now();
        plane
            .dp()
            .write_service(service.slot, service.vip.key(), &compiled.image)?;
        writes.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(SwapCost {
        backends,
        compile: Spread::of(compiles),
        write: Spread::of(writes),
    })
}
