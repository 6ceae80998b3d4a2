//! Weighted Maglev lookup tables by rendezvous over Maglev permutations.
//!
//! Each backend has its own permutation of the table's slots, derived from its address
//! alone (an offset and a skip from the flow hash), so every host computes the same table
//! from the same backend set, whatever the order in which it lists the backends. Position
//! `k` of a permutation is the slot `offset + scramble(k) * skip`, where `scramble` is a
//! fixed bijection that looks random: with the plain Maglev order (`offset + k * skip`),
//! a slot's positions in two permutations would be an affine function of each other, and
//! the shares of some pairs of backends would be skewed by more than a point.
//!
//! A slot goes to the backend that reaches it first on an exponential clock: a backend of
//! weight `w` reaches position `k` of its permutation at time `-log2(1 - k / size) / w`,
//! and ties go to the lower address. This is weighted rendezvous hashing: as a slot's
//! position is uniform in each permutation, the times are exponentially distributed with
//! rate proportional to `w`, so a backend wins a slot with probability `w / total weight`,
//! and its share of the table is binomial around that fraction (a standard deviation of
//! at most 0.2 percentage points in 65537 slots). Every slot's owner depends only on the
//! times of the backends present, so removing a backend moves exactly its own slots,
//! adding one moves exactly the slots it wins, and changing a weight moves only slots to
//! or from that backend: on average `size / N` slots for one of N equal backends, the
//! least any table with even shares can move.
//!
//! Times are integers so that every host agrees on them: `log2` in fixed point, by linear
//! interpolation in a table computed at compile time with integer arithmetic, and the
//! division by the weight replaced by a product with a fixed-point reciprocal.
//!
//! Computing each slot's earliest backend directly takes `size * N` steps. Instead, every
//! backend walks its permutation up to a common time by which all but about `2^-a` of the
//! slots have been reached (`a` grows with the logarithm of N), keeping the earliest claim
//! on every slot; the claims made by then are final, and the few slots nobody reached are
//! settled by computing every backend's time for them. A build for 1000 backends takes
//! about `8.3 * size` steps of walk and `size / 4` times computed directly. The walk is
//! bound by random accesses to the claims: it computes slots a batch ahead of claiming
//! them, so that cache misses overlap.

use std::net::IpAddr;

use balancer_common::{flow_hash, FlowKey, FAMILY_V4, FAMILY_V6, NONE, RING_CAPACITY};

/// Table size used when a service does not choose one: the largest the data plane holds.
pub const DEFAULT_TABLE_SIZE: u32 = 65537;

/// Seed of the flow hash giving a backend's first slot.
const OFFSET_SEED: u64 = 0x6d61_676c_6576_3031;
/// Seed of the flow hash giving a backend's step through the slots.
const SKIP_SEED: u64 = 0x6d61_676c_6576_3032;

/// One backend as the table builder sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevBackend {
    /// Index of the backend in the data plane's backend map; what the table's slots hold.
    pub index: u32,
    /// The backend's address; it alone decides the backend's permutation.
    pub addr: IpAddr,
    /// Relative weight; 0 means the backend gets no slot.
    pub weight: u16,
}

/// Why a table could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MaglevError {
    /// The size is not a prime in `3..=RING_CAPACITY`.
    #[error("table size {0} must be a prime between 3 and {max}", max = RING_CAPACITY)]
    BadSize(u32),
    /// Two backends share an address.
    #[error("backend address {0} is listed twice")]
    DuplicateAddress(IpAddr),
    /// Two backends share an index.
    #[error("backend index {0} is listed twice")]
    DuplicateIndex(u32),
    /// A backend uses the index that marks empty slots.
    #[error("backend index {NONE} is reserved for empty slots")]
    ReservedIndex,
}

/// Whether `n` is a prime number.
pub fn is_prime(n: u32) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let n = u64::from(n);
    let mut divisor = 3u64;
    while divisor * divisor <= n {
        if n % divisor == 0 {
            return false;
        }
        divisor += 2;
    }
    true
}

/// Builds a table of `size` slots (size must be prime, 2 < size <= RING_CAPACITY), each
/// holding the `index` of a backend, or NONE when no backend has weight > 0.
///
/// A backend with weight `w` out of a total `W` holds about `size * w / W` slots (a
/// binomial count around that share). Backends of weight 0 hold no slot and change nothing
/// for the others: the table is the one built without them. Adding or removing a backend
/// changes only the slots it holds in the table with it.
pub fn build_table(backends: &[MaglevBackend], size: u32) -> Result<Vec<u32>, MaglevError> {
    if size < 3 || size as usize > RING_CAPACITY || !is_prime(size) {
        return Err(MaglevError::BadSize(size));
    }
    check_distinct(backends)?;

    let mut serving: Vec<&MaglevBackend> = backends.iter().filter(|b| b.weight > 0).collect();
    if serving.is_empty() {
        return Ok(vec![NONE; size as usize]);
    }
    serving.sort_by_key(|b| b.addr);
    let clock = Clock::new(size, serving.len());
    let walkers: Vec<Walker> = serving
        .iter()
        .map(|b| Walker::new(b, &clock.modulus))
        .collect();

    let total_weight = serving.iter().map(|b| u64::from(b.weight)).sum();
    let end = walk_end(walkers.len(), total_weight, &clock);
    let limits: Vec<u64> = walkers
        .iter()
        .map(|walker| clock.position_limit(walker, end))
        .collect();
    let steps = clock.steps_up_to(limits.iter().copied().max().unwrap_or(0));
    let claims = walk_all(&walkers, &limits, &clock, &steps);
    Ok(claims
        .iter()
        .map(|&claim| walkers[clock.rank(claim)].index)
        .collect())
}

/// Rejects duplicate addresses, duplicate indices and the reserved index.
fn check_distinct(backends: &[MaglevBackend]) -> Result<(), MaglevError> {
    if backends.iter().any(|b| b.index == NONE) {
        return Err(MaglevError::ReservedIndex);
    }
    let mut addrs: Vec<IpAddr> = backends.iter().map(|b| b.addr).collect();
    addrs.sort_unstable();
    if let Some(pair) = addrs.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(MaglevError::DuplicateAddress(pair[0]));
    }
    let mut indices: Vec<u32> = backends.iter().map(|b| b.index).collect();
    indices.sort_unstable();
    if let Some(pair) = indices.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(MaglevError::DuplicateIndex(pair[0]));
    }
    Ok(())
}

/// Fraction bits of the fixed-point logarithms.
const LOG_BITS: u32 = 20;
/// Bits of a mantissa that select the interpolation interval of the logarithm table.
const SEGMENT_BITS: u32 = 8;
/// Bits of the reciprocal of a weight: a backend's pace is `2^PACE_BITS / weight`.
const PACE_BITS: u32 = 32;
/// Bits of a claim that hold the rank of the backend, unless there are more backends.
const RANK_BITS: u32 = 20;
/// Low bits of a time times a pace, below `2^(5 + LOG_BITS + PACE_BITS)`, that a claim
/// drops to leave room for the rank; one more for each extra bit of rank.
const TIME_SHIFT: u32 = 5 + LOG_BITS + PACE_BITS + RANK_BITS - u64::BITS;
/// How many more halvings of the unreached slots than the bits of the backend count the
/// walk goes for.
const WALK_EXTRA_BITS: u32 = 2;
/// Claim on a slot no backend has claimed; later than every real claim.
const UNCLAIMED: u64 = u64::MAX;

/// `log2(1 + i / 2^SEGMENT_BITS)` in fixed point with `LOG_BITS` fraction bits, rounded
/// down, for `i` in `0..=2^SEGMENT_BITS`.
static LOG2_TABLE: [u32; (1 << SEGMENT_BITS) + 1] = log2_table();

/// Computes [`LOG2_TABLE`] bit by bit: squaring a number in `[1, 2)` doubles its logarithm,
/// so the next bit of the logarithm is whether the square reaches 2.
const fn log2_table() -> [u32; (1 << SEGMENT_BITS) + 1] {
    /// Fraction bits of the number being squared.
    const ONE_BITS: u32 = 62;
    let mut table = [0; (1 << SEGMENT_BITS) + 1];
    let mut i = 0;
    while i < 1 << SEGMENT_BITS {
        let mut x = ((1u128 << SEGMENT_BITS) + i as u128) << (ONE_BITS - SEGMENT_BITS);
        let mut log = 0;
        let mut bit = 0;
        while bit < LOG_BITS {
            x = (x * x) >> ONE_BITS;
            log <<= 1;
            if x >> (ONE_BITS + 1) != 0 {
                x >>= 1;
                log |= 1;
            }
            bit += 1;
        }
        table[i] = log;
        i += 1;
    }
    table[1 << SEGMENT_BITS] = 1 << LOG_BITS;
    table
}

/// `log2(x)` in fixed point with `LOG_BITS` fraction bits, for `x` in `1..2^17`: exact at
/// powers of two, linear in between table entries, and strictly increasing in `x`.
fn log2_fixed(x: u32) -> u32 {
    debug_assert!(x > 0 && x < 1 << 17);
    let exponent = 31 - x.leading_zeros();
    // 16 fraction bits: the top SEGMENT_BITS select the entry, the rest interpolate.
    let mantissa = x << (16 - exponent);
    let entry = ((mantissa >> (16 - SEGMENT_BITS)) & ((1 << SEGMENT_BITS) - 1)) as usize;
    let rest = mantissa & ((1 << (16 - SEGMENT_BITS)) - 1);
    let (low, high) = (LOG2_TABLE[entry], LOG2_TABLE[entry + 1]);
    (exponent << LOG_BITS) + low + (((high - low) * rest) >> (16 - SEGMENT_BITS))
}

/// Times of a table's positions and claims of backends on them.
///
/// Position `k` of a permutation comes at `log2(size / (size - k))` in fixed point, below
/// `17 * 2^LOG_BITS < 2^(5 + LOG_BITS)` as `size < 2^17`. A backend's claim on it is
/// that time times its pace, rounded down to drop `time_shift` bits, then followed by the
/// backend's rank: the earliest claim wins and ties go to the lower address.
struct Clock {
    /// The table size.
    size: u32,
    /// Reduction modulo the size.
    modulus: Modulus,
    /// Order in which every backend visits the affine positions of its permutation.
    scramble: Scramble,
    /// `log2(size)` in fixed point.
    log_size: u32,
    /// Bits of a claim holding the rank.
    rank_bits: u32,
    /// Bits dropped from a weighted time.
    time_shift: u32,
}

impl Clock {
    fn new(size: u32, backends: usize) -> Self {
        let rank_bits = RANK_BITS.max(usize::BITS - (backends - 1).leading_zeros());
        Self {
            size,
            modulus: Modulus::new(size),
            scramble: Scramble::new(size),
            log_size: log2_fixed(size),
            rank_bits,
            time_shift: TIME_SHIFT + rank_bits - RANK_BITS,
        }
    }

    /// Time of position `k < size`.
    fn time(&self, k: u32) -> u32 {
        self.log_size - log2_fixed(self.size - k)
    }

    /// The steps of a walk from position 0 as long as their time does not exceed `limit`.
    fn steps_up_to(&self, limit: u64) -> Vec<Step> {
        (0..self.size)
            .map(|k| Step {
                time: self.time(k),
                affine: self.scramble.forward(k),
            })
            .take_while(|step| u64::from(step.time) <= limit)
            .collect()
    }

    /// Claim of the backend of the given pace and rank on a position of the given time.
    fn claim(&self, time: u32, pace: u64, rank: usize) -> u64 {
        // Below 2^(5 + LOG_BITS + PACE_BITS): shifted, it leaves `rank_bits` free.
        (((u64::from(time) * pace) >> self.time_shift) << self.rank_bits) | rank as u64
    }

    /// Rank of the backend that made a claim.
    fn rank(&self, claim: u64) -> usize {
        // The rank bits hold a rank, which fits in usize; fewer than 64 of them as there
        // are fewer than 2^63 backends.
        (claim & ((1 << self.rank_bits) - 1)) as usize
    }

    /// Latest time of a position on which the walker's claim has a rounded weighted time
    /// of at most `end`.
    fn position_limit(&self, walker: &Walker, end: u64) -> u64 {
        (((end + 1) << self.time_shift) - 1) / walker.pace
    }
}

/// What every backend does at one position of its permutation.
struct Step {
    /// Time of the position.
    time: u32,
    /// Affine position it visits: the slot `offset + affine * skip`.
    affine: u32,
}

/// Reduction modulo a table size by Barrett's method.
struct Modulus {
    /// The table size.
    size: u32,
    /// `2^64 / size`, rounded down.
    reciprocal: u64,
}

impl Modulus {
    fn new(size: u32) -> Self {
        Self {
            size,
            reciprocal: u64::MAX / u64::from(size),
        }
    }

    /// `x mod size`. The quotient estimate is at most one short for any `x`.
    fn reduce(&self, x: u64) -> u32 {
        let quotient = ((u128::from(x) * u128::from(self.reciprocal)) >> 64) as u64;
        // Below `2 * size` < 2^18.
        let rest = (x - quotient * u64::from(self.size)) as u32;
        if rest >= self.size {
            rest - self.size
        } else {
            rest
        }
    }
}

/// A fixed bijection of `0..size` that looks random: xorshift-multiply rounds on the
/// first `2^bits` numbers, then on the last `2^bits`, where `2^bits` is the largest power
/// of two not above the size, so that every number goes through at least one of them.
/// Visiting the affine positions `offset + j * skip` in this order rather than by
/// increasing `j` keeps the positions of a slot in two permutations from being an affine
/// function of each other, which would skew the shares of some pairs of backends.
struct Scramble {
    /// `2^bits - 1`.
    mask: u64,
    /// `size - 2^bits`: the start of the last `2^bits` numbers.
    last: u64,
    /// Shift of the xorshift steps, at least half the bits so that one step undoes one.
    shift: u32,
}

/// Odd multipliers of the scramble rounds (from SplitMix64).
const SCRAMBLE_MULTIPLIERS: [u64; 2] = [0xbf58_476d_1ce4_e5b9, 0x94d0_49bb_1331_11eb];
/// Their inverses modulo 2^64, for [`Scramble::unmix`].
const SCRAMBLE_INVERSES: [u64; 2] = [
    inverse_mod_2_64(SCRAMBLE_MULTIPLIERS[0]),
    inverse_mod_2_64(SCRAMBLE_MULTIPLIERS[1]),
];

impl Scramble {
    fn new(size: u32) -> Self {
        let bits = u32::BITS - 1 - size.leading_zeros();
        Self {
            mask: (1 << bits) - 1,
            last: u64::from(size) - (1 << bits),
            shift: bits.div_ceil(2),
        }
    }

    /// The rounds on `0..2^bits`.
    fn mix(&self, mut x: u64) -> u64 {
        for multiplier in SCRAMBLE_MULTIPLIERS {
            x ^= x >> self.shift;
            x = x.wrapping_mul(multiplier) & self.mask;
        }
        x ^ (x >> self.shift)
    }

    /// The inverse of [`Scramble::mix`].
    fn unmix(&self, mut x: u64) -> u64 {
        x ^= x >> self.shift;
        for multiplier in SCRAMBLE_INVERSES.iter().rev() {
            x = x.wrapping_mul(*multiplier) & self.mask;
            x ^= x >> self.shift;
        }
        x
    }

    /// The image of `k < size`.
    fn forward(&self, k: u32) -> u32 {
        let mut x = u64::from(k);
        if x <= self.mask {
            x = self.mix(x);
        }
        if x >= self.last {
            x = self.last + self.mix(x - self.last);
        }
        // Below `size`.
        x as u32
    }

    /// The `k < size` whose image is `y < size`.
    fn inverse(&self, y: u32) -> u32 {
        let mut x = u64::from(y);
        if x >= self.last {
            x = self.last + self.unmix(x - self.last);
        }
        if x <= self.mask {
            x = self.unmix(x);
        }
        // Below `size`.
        x as u32
    }
}

/// Inverse of an odd number modulo 2^64, by Newton's iteration (each doubles the correct
/// low bits, from 3 bits for `x * x = 1 mod 8`).
const fn inverse_mod_2_64(odd: u64) -> u64 {
    let mut inverse = odd;
    let mut round = 0;
    while round < 5 {
        inverse = inverse.wrapping_mul(2u64.wrapping_sub(odd.wrapping_mul(inverse)));
        round += 1;
    }
    inverse
}

/// A backend with weight walking its permutation of the slots.
struct Walker {
    /// What the backend's slots hold.
    index: u32,
    /// First slot of its permutation.
    offset: u32,
    /// Step between consecutive affine positions of its permutation, in `1..size`.
    skip: u32,
    /// Inverse of `skip` modulo the size: the affine position of slot `s` is
    /// `(s - offset) * inverse_skip`.
    inverse_skip: u32,
    /// `2^PACE_BITS / weight`, rounded down, in `2^16..=2^32`: a position's time times
    /// the pace is the backend's weighted time for it.
    pace: u64,
}

impl Walker {
    fn new(backend: &MaglevBackend, modulus: &Modulus) -> Self {
        let key = address_key(backend.addr);
        let size64 = u64::from(modulus.size);
        // Both remainders are below `size`, which fits in u32.
        let offset = (flow_hash(&key, OFFSET_SEED).0 % size64) as u32;
        let skip = (flow_hash(&key, SKIP_SEED).0 % (size64 - 1)) as u32 + 1;
        Self {
            index: backend.index,
            offset,
            skip,
            inverse_skip: modular_inverse(skip, modulus),
            pace: (1 << PACE_BITS) / u64::from(backend.weight),
        }
    }

    /// Slot at the given affine position.
    fn slot(&self, affine: u32, modulus: &Modulus) -> u32 {
        modulus.reduce(u64::from(affine) * u64::from(self.skip) + u64::from(self.offset))
    }

    /// Position of `slot` in the permutation.
    fn position(&self, slot: u32, clock: &Clock) -> u32 {
        let from_offset = u64::from(slot + clock.size - self.offset);
        let affine = clock
            .modulus
            .reduce(from_offset * u64::from(self.inverse_skip));
        clock.scramble.inverse(affine)
    }
}

/// Inverse of `value` (in `1..size`) modulo the size, a prime, as `value^(size - 2)`.
fn modular_inverse(value: u32, modulus: &Modulus) -> u32 {
    let (mut base, mut exponent, mut result) = (value, modulus.size - 2, 1);
    while exponent > 0 {
        if exponent & 1 == 1 {
            result = modulus.reduce(u64::from(result) * u64::from(base));
        }
        base = modulus.reduce(u64::from(base) * u64::from(base));
        exponent >>= 1;
    }
    result
}

/// The flow key whose hash gives a backend's permutation: its address as a client address.
fn address_key(addr: IpAddr) -> FlowKey {
    let mut key = FlowKey::default();
    match addr {
        IpAddr::V4(v4) => {
            key.src[..4].copy_from_slice(&v4.octets());
            key.family = FAMILY_V4;
        }
        IpAddr::V6(v6) => {
            key.src = v6.octets();
            key.family = FAMILY_V6;
        }
    }
    key
}

/// Rounded weighted time up to which every backend walks. A backend of weight `w` has
/// then reached the fraction `1 - 2^(-a w / W)` of its permutation, for total weight `W`,
/// and all but `2^-a` of the slots have been reached by some backend; `a` is
/// `WALK_EXTRA_BITS` more than the bits of the backend count, so that settling the
/// remaining slots costs about `size / 2^WALK_EXTRA_BITS` claims, a fraction of the walk.
fn walk_end(count: usize, total_weight: u64, clock: &Clock) -> u64 {
    let halvings = u64::from(usize::BITS - count.leading_zeros() + WALK_EXTRA_BITS);
    ((halvings << (LOG_BITS + PACE_BITS)) / total_weight) >> clock.time_shift
}

/// Steps of a walk whose slots are computed before their claims are made.
const WALK_BATCH: usize = 32;

/// Every walker's claims up to its limit, then the slots nobody reached settled directly:
/// the earliest claim on every slot.
fn walk_all(walkers: &[Walker], limits: &[u64], clock: &Clock, steps: &[Step]) -> Vec<u64> {
    let mut claims = vec![UNCLAIMED; clock.size as usize];
    for (rank, (walker, &limit)) in walkers.iter().zip(limits).enumerate() {
        walk(&mut claims, clock, walker, rank, steps, limit);
    }
    for (slot, claim) in (0..clock.size).zip(&mut claims) {
        if *claim == UNCLAIMED {
            *claim = earliest(walkers, clock, slot);
        }
    }
    claims
}

/// Makes the walker's claims on the positions whose time is at most `limit`, keeping the
/// earliest claim on every slot; `steps` go from position 0 to at least the last such
/// position.
fn walk(
    claims: &mut [u64],
    clock: &Clock,
    walker: &Walker,
    rank: usize,
    steps: &[Step],
    limit: u64,
) {
    let reached = steps.partition_point(|step| u64::from(step.time) <= limit);
    // Slots first, a batch at a time, then the claims on them: the batch's cache misses
    // on `claims` overlap instead of following one another.
    for batch in steps[..reached].chunks(WALK_BATCH) {
        let mut slots = [0u32; WALK_BATCH];
        for (slot, step) in slots.iter_mut().zip(batch) {
            *slot = walker.slot(step.affine, &clock.modulus);
        }
        for (&slot, step) in slots.iter().zip(batch) {
            let claim = clock.claim(step.time, walker.pace, rank);
            let held = &mut claims[slot as usize];
            *held = claim.min(*held);
        }
    }
}

/// The earliest claim of any walker, in rank order, on `slot`.
fn earliest(walkers: &[Walker], clock: &Clock, slot: u32) -> u64 {
    walkers
        .iter()
        .enumerate()
        .map(|(rank, walker)| {
            clock.claim(clock.time(walker.position(slot, clock)), walker.pace, rank)
        })
        .min()
        .unwrap_or(UNCLAIMED)
}

#[cfg(test)]
mod tests {
    use std::{
        collections::{BTreeMap, BTreeSet},
        net::{Ipv4Addr, Ipv6Addr},
    };

    use super::*;

    use crate::test_rng::XorShift;

    /// A random weight in 1..=65535.
    fn random_weight(rng: &mut XorShift) -> u16 {
        rng.below(65535) as u16 + 1
    }

    /// `count` backends with distinct random IPv4 addresses, indices 0.., equal weights.
    fn random_backends(rng: &mut XorShift, count: usize) -> Vec<MaglevBackend> {
        let mut seen = BTreeSet::new();
        let mut backends = Vec::with_capacity(count);
        while backends.len() < count {
            let addr = IpAddr::V4(Ipv4Addr::from(rng.next() as u32));
            if seen.insert(addr) {
                backends.push(MaglevBackend {
                    index: backends.len() as u32,
                    addr,
                    weight: 100,
                });
            }
        }
        backends
    }

    fn slot_counts(table: &[u32]) -> BTreeMap<u32, u64> {
        let mut counts = BTreeMap::new();
        for &index in table {
            *counts.entry(index).or_insert(0) += 1;
        }
        counts
    }

    /// Largest difference, in percentage points, between a backend's share of the table
    /// and its share of the weight; asserts that only the backends hold slots.
    fn worst_deviation(backends: &[MaglevBackend], table: &[u32]) -> f64 {
        let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
        let counts = slot_counts(table);
        let known: BTreeSet<u32> = backends.iter().map(|b| b.index).collect();
        assert!(counts.keys().all(|index| known.contains(index)));
        backends
            .iter()
            .map(|b| {
                let held = counts.get(&b.index).copied().unwrap_or(0) as f64;
                let share = held / table.len() as f64;
                let weight_share = f64::from(b.weight) / total as f64;
                100.0 * (share - weight_share).abs()
            })
            .fold(0.0, f64::max)
    }

    /// The largest deviation of a backend's slot count from what its weight asks for, in
    /// units of that count's square root (a binomial count's standard deviation), over the
    /// backends expected to hold at least 20 slots; and the backends with weight above 0
    /// and at least 5 slots expected that hold none.
    fn worst_deviation_in_sigmas(backends: &[MaglevBackend], table: &[u32]) -> (f64, usize) {
        let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
        let counts = slot_counts(table);
        let mut worst: f64 = 0.0;
        let mut starved = 0;
        for b in backends.iter().filter(|b| b.weight > 0) {
            let held = counts.get(&b.index).copied().unwrap_or(0) as f64;
            let expected = table.len() as f64 * f64::from(b.weight) / total as f64;
            if expected >= 5.0 && held == 0.0 {
                starved += 1;
            }
            if expected >= 20.0 {
                worst = worst.max((held - expected).abs() / expected.sqrt());
            }
        }
        (worst, starved)
    }

    /// Slots whose backend differs between two tables.
    fn changed(a: &[u32], b: &[u32]) -> BTreeSet<usize> {
        (0..a.len()).filter(|&slot| a[slot] != b[slot]).collect()
    }

    /// Slots holding `index`.
    fn held_by(table: &[u32], index: u32) -> BTreeSet<usize> {
        (0..table.len())
            .filter(|&slot| table[slot] == index)
            .collect()
    }

    /// The table by definition: every slot goes to the earliest claim of any backend,
    /// with each permutation laid out by stepping through it.
    fn naive_table(backends: &[MaglevBackend], size: u32) -> Vec<u32> {
        let mut serving: Vec<&MaglevBackend> = backends.iter().filter(|b| b.weight > 0).collect();
        serving.sort_by_key(|b| b.addr);
        let clock = Clock::new(size, serving.len().max(1));
        let mut best = vec![(UNCLAIMED, NONE); size as usize];
        for (rank, backend) in serving.iter().enumerate() {
            let walker = Walker::new(backend, &clock.modulus);
            for k in 0..size {
                let affine = clock.scramble.forward(k);
                let slot = (walker.offset + affine * walker.skip) % size;
                let claim = clock.claim(clock.time(k), walker.pace, rank);
                if claim < best[slot as usize].0 {
                    best[slot as usize] = (claim, backend.index);
                }
            }
        }
        best.iter().map(|&(_, index)| index).collect()
    }

    #[test]
    fn primes_are_recognised() {
        let primes = [2, 3, 5, 7, 11, 13, 65521, 65537, 2_147_483_647];
        let composites = [0, 1, 4, 9, 15, 25, 65535, 65536, 65539 * 3, u32::MAX];
        assert!(primes.iter().all(|&p| is_prime(p)));
        assert!(composites.iter().all(|&c| !is_prime(c)));
        assert_eq!(DEFAULT_TABLE_SIZE as usize, RING_CAPACITY);
        assert!(is_prime(DEFAULT_TABLE_SIZE));
    }

    #[test]
    fn bad_sizes_are_rejected() {
        let backends = random_backends(&mut XorShift(1), 3);
        for size in [0, 1, 2, 4, 65536, 65539, 131_071] {
            assert_eq!(
                build_table(&backends, size),
                Err(MaglevError::BadSize(size))
            );
        }
        assert_eq!(build_table(&backends, 3).map(|t| t.len()), Ok(3));
    }

    #[test]
    fn duplicates_and_reserved_index_are_rejected() {
        let backends = random_backends(&mut XorShift(2), 4);
        let mut same_addr = backends.clone();
        same_addr[3].addr = same_addr[1].addr;
        same_addr[3].weight = 0;
        assert_eq!(
            build_table(&same_addr, 13),
            Err(MaglevError::DuplicateAddress(backends[1].addr))
        );
        let mut same_index = backends.clone();
        same_index[2].index = same_index[0].index;
        assert_eq!(
            build_table(&same_index, 13),
            Err(MaglevError::DuplicateIndex(backends[0].index))
        );
        let mut reserved = backends;
        reserved[0].index = NONE;
        assert_eq!(build_table(&reserved, 13), Err(MaglevError::ReservedIndex));
    }

    #[test]
    fn fixed_point_logarithm_is_close_and_increasing() {
        let one = f64::from(1u32 << LOG_BITS);
        for exponent in 0..17 {
            assert_eq!(log2_fixed(1 << exponent), exponent << LOG_BITS);
        }
        for x in 1..1u32 << 17 {
            let error = f64::from(log2_fixed(x)) - one * f64::from(x).log2();
            assert!((-5.0..=0.0).contains(&error), "log2({x}) off by {error}");
            if x > 1 {
                assert!(log2_fixed(x) > log2_fixed(x - 1), "log2 flat at {x}");
            }
        }
    }

    #[test]
    fn scramble_and_barrett_reduction_are_right() {
        for size in [3, 5, 7, 101, 65521, 65537] {
            let scramble = Scramble::new(size);
            let mut seen = vec![false; size as usize];
            for k in 0..size {
                let image = scramble.forward(k);
                assert!(!seen[image as usize]);
                seen[image as usize] = true;
                assert_eq!(scramble.inverse(image), k);
            }
            let modulus = Modulus::new(size);
            let mut rng = XorShift(u64::from(size));
            for _ in 0..1000 {
                let x = rng.next() >> rng.below(64);
                assert_eq!(u64::from(modulus.reduce(x)), x % u64::from(size));
            }
            assert_eq!(
                modulus.reduce(u64::MAX),
                (u64::MAX % u64::from(size)) as u32
            );
        }
    }

    #[test]
    fn modular_inverses_invert() {
        for prime in [3, 5, 101, 65537] {
            let modulus = Modulus::new(prime);
            for value in (1..prime).step_by(97) {
                let inverse = modular_inverse(value, &modulus);
                assert_eq!(u64::from(value) * u64::from(inverse) % u64::from(prime), 1);
            }
        }
    }

    #[test]
    fn walk_gives_the_table_by_definition() {
        let mut rng = XorShift(3);
        let cases = [
            (3, 1),
            (3, 2),
            (5, 7),
            (101, 3),
            (101, 40),
            (997, 2),
            (997, 150),
            (7919, 5),
            (7919, 400),
            (65537, 1),
            (65537, 2),
            (65537, 9),
            (65537, 40),
        ];
        for (size, n) in cases {
            let mut backends = random_backends(&mut rng, n);
            assert_eq!(
                build_table(&backends, size),
                Ok(naive_table(&backends, size))
            );
            for b in &mut backends {
                b.weight = random_weight(&mut rng);
            }
            assert_eq!(
                build_table(&backends, size),
                Ok(naive_table(&backends, size))
            );
            // Extreme weights, and idle backends.
            for b in &mut backends {
                b.weight = [0, 1, 2, 65535][rng.below(4) as usize];
            }
            assert_eq!(
                build_table(&backends, size),
                Ok(naive_table(&backends, size))
            );
        }
    }

    #[test]
    fn shares_are_within_one_point_of_weights() {
        let mut rng = XorShift(4);
        let mut worst: f64 = 0.0;
        let mut worst_sigmas: f64 = 0.0;
        let counts = (2..=50).chain([60, 75, 100, 150, 200, 300, 500, 750, 1000]);
        for n in counts {
            let mut backends = random_backends(&mut rng, n);
            for round in 0..2 {
                if round == 1 {
                    for b in &mut backends {
                        b.weight = random_weight(&mut rng);
                    }
                }
                let table = build_table(&backends, DEFAULT_TABLE_SIZE).unwrap();
                worst = worst.max(worst_deviation(&backends, &table));
                let (sigmas, starved) = worst_deviation_in_sigmas(&backends, &table);
                assert_eq!(
                    starved, 0,
                    "{n} backends, round {round}: a backend got no slot"
                );
                worst_sigmas = worst_sigmas.max(sigmas);
            }
        }
        println!(
            "worst share deviation {worst:.3} points; {worst_sigmas:.2} standard deviations of a backend's own slot count"
        );
        assert!(worst <= 1.0, "a share is {worst:.3} points off its weight");
        // At 1000 equal backends one point is ten shares, so the absolute bound alone would
        // pass a backend with no slot: each count must also stay within 5 of its own
        // standard deviations.
        assert!(
            worst_sigmas <= 5.0,
            "a backend's slot count is {worst_sigmas:.2} standard deviations off its weight"
        );
    }

    #[test]
    fn small_tables_are_full() {
        let mut rng = XorShift(5);
        for size in [3, 5, 7, 101, 997] {
            for n in [1, 2, 3, 7, 40] {
                let mut backends = random_backends(&mut rng, n);
                for b in &mut backends {
                    b.weight = random_weight(&mut rng);
                }
                let table = build_table(&backends, size).unwrap();
                assert_eq!(table.len(), size as usize);
                worst_deviation(&backends, &table);
                assert!(!table.contains(&NONE));
            }
        }
    }

    #[test]
    fn zero_weights_get_nothing_and_change_nothing() {
        let mut rng = XorShift(6);
        let mut backends = random_backends(&mut rng, 60);
        for b in &mut backends {
            b.weight = rng.below(1000) as u16 + 1;
        }
        let serving: Vec<MaglevBackend> = backends.iter().step_by(2).copied().collect();
        for b in backends.iter_mut().skip(1).step_by(2) {
            b.weight = 0;
        }
        let with_idle = build_table(&backends, DEFAULT_TABLE_SIZE).unwrap();
        let without_idle = build_table(&serving, DEFAULT_TABLE_SIZE).unwrap();
        assert_eq!(with_idle, without_idle);
        assert!(worst_deviation(&backends, &with_idle) <= 1.0);
    }

    #[test]
    fn no_serving_backend_gives_an_empty_table() {
        let mut backends = random_backends(&mut XorShift(7), 5);
        for b in &mut backends {
            b.weight = 0;
        }
        let table = build_table(&backends, 101).unwrap();
        assert!(table.iter().all(|&i| i == NONE));
        assert_eq!(build_table(&[], 101).unwrap(), vec![NONE; 101]);
    }

    #[test]
    fn input_order_does_not_matter() {
        let mut rng = XorShift(8);
        let mut backends = random_backends(&mut rng, 200);
        for (i, b) in backends.iter_mut().enumerate() {
            if i % 3 == 0 {
                let mut octets = [0u8; 16];
                octets[..8].copy_from_slice(&rng.next().to_be_bytes());
                b.addr = IpAddr::V6(Ipv6Addr::from(octets));
            }
        }
        // Equal weights tie on equal positions; random weights hardly ever tie.
        for weighted in [false, true] {
            if weighted {
                for b in &mut backends {
                    b.weight = random_weight(&mut rng);
                }
            }
            let table = build_table(&backends, DEFAULT_TABLE_SIZE).unwrap();
            for _ in 0..3 {
                for i in (1..backends.len()).rev() {
                    backends.swap(i, rng.below(i as u64 + 1) as usize);
                }
                assert_eq!(build_table(&backends, DEFAULT_TABLE_SIZE).unwrap(), table);
            }
        }
    }

    /// Removes one of `n` equal backends and adds one, `trials` times; asserts that only
    /// the slots of the backend leaving or joining change, and returns the mean and the
    /// largest number of changed slots as multiples of the unavoidable change (`size / n`
    /// and `size / (n + 1)`).
    fn disruption(n: usize, trials: usize, seed: u64) -> (f64, f64) {
        let size = DEFAULT_TABLE_SIZE;
        let mut rng = XorShift(seed);
        let (mut sum, mut max) = (0.0, 0.0f64);
        for _ in 0..trials {
            let backends = random_backends(&mut rng, n + 1);
            let (current, joining) = backends.split_at(n);
            let table = build_table(current, size).unwrap();

            let leaving = current[rng.below(n as u64) as usize];
            let shrunk: Vec<MaglevBackend> =
                current.iter().filter(|b| **b != leaving).copied().collect();
            let removed = changed(&table, &build_table(&shrunk, size).unwrap());
            assert_eq!(removed, held_by(&table, leaving.index));

            let grown = build_table(&backends, size).unwrap();
            let added = changed(&table, &grown);
            assert_eq!(added, held_by(&grown, joining[0].index));

            for ratio in [
                removed.len() as f64 * n as f64 / f64::from(size),
                added.len() as f64 * (n + 1) as f64 / f64::from(size),
            ] {
                sum += ratio;
                max = max.max(ratio);
            }
        }
        (sum / (2 * trials) as f64, max)
    }

    #[test]
    fn only_the_slots_of_a_leaving_or_joining_backend_move() {
        for (n, trials) in [(10, 6), (100, 6), (1000, 6)] {
            let (mean, max) = disruption(n, trials, 9 + n as u64);
            println!("n={n}: moved {mean:.3}x ideal on average, {max:.3}x at most");
            assert!(mean <= 1.1, "n={n}: moved {mean:.3}x ideal on average");
        }
    }

    #[test]
    fn a_weight_change_moves_slots_to_or_from_that_backend_only() {
        let mut rng = XorShift(10);
        let mut backends = random_backends(&mut rng, 50);
        for b in &mut backends {
            b.weight = random_weight(&mut rng);
        }
        let table = build_table(&backends, DEFAULT_TABLE_SIZE).unwrap();
        let changing = backends[17].index;
        for weight in [
            backends[17].weight / 2,
            backends[17].weight.saturating_mul(2),
        ] {
            let mut reweighted = backends.clone();
            reweighted[17].weight = weight;
            let after = build_table(&reweighted, DEFAULT_TABLE_SIZE).unwrap();
            let moved = changed(&table, &after);
            assert!(!moved.is_empty());
            assert!(moved
                .iter()
                .all(|&slot| table[slot] == changing || after[slot] == changing));
        }
    }
}
