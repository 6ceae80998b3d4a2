//! Weighted Maglev lookup tables.
//!
//! Each backend walks its own permutation of the table's slots, derived from its address
//! alone (an offset and a skip from the flow hash), so every host computes the same table
//! from the same backend set, whatever the order in which it lists the backends.
//!
//! A backend walks at the pace of its weight: the `k`-th slot of its permutation (from 0)
//! comes due at `(k + 1) * floor(2^30 / weight)`. Every backend takes exactly its quota
//! (`size * weight / total weight`, rounded by largest remainder), and a slot goes to the
//! backend for which it comes due first among those still short of their quota (ties to
//! the lower address). That is the unique stable matching of backends and slots under this
//! order; deferred acceptance computes it: a backend may claim a slot held by one for which
//! the slot came due later, and the displaced backend walks on.
//!
//! A backend's permutation and pace do not depend on the others, so adding or removing one
//! moves its own slots plus the chains of displacements they set off. The chains grow with
//! the number of backends for the table size: in 65537 slots, adding or removing one of N
//! equal backends changes about 1.02x the unavoidable `65537 / N` slots for N = 10, 1.3x for
//! N = 100 and 4.3x for N = 1000 (classic Maglev filling with quota caps: 1.03x, 1.5x, 6.6x).

use std::{cmp::Reverse, net::IpAddr};

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
/// Each backend with weight `w` out of a total `W` holds `size * w / W` slots rounded down
/// or up, so within one slot of its exact share. Backends of weight 0 hold no slot and
/// change nothing for the others: the table is the one built without them.
pub fn build_table(backends: &[MaglevBackend], size: u32) -> Result<Vec<u32>, MaglevError> {
    if size < 3 || size as usize > RING_CAPACITY || !is_prime(size) {
        return Err(MaglevError::BadSize(size));
    }
    check_distinct(backends)?;

    let mut sorted: Vec<&MaglevBackend> = backends.iter().filter(|b| b.weight > 0).collect();
    sorted.sort_by_key(|b| (b.addr, b.index));
    let weights: Vec<u64> = sorted.iter().map(|b| u64::from(b.weight)).collect();
    let quotas = largest_remainder_quotas(&weights, size);
    let mut walkers: Vec<Walker> = sorted
        .iter()
        .zip(quotas)
        .filter(|&(_, quota)| quota > 0)
        .enumerate()
        .map(|(position, (backend, quota))| Walker::new(backend, quota, position, size))
        .collect();

    let claims = stable_matching(&mut walkers, size);
    Ok(claims
        .iter()
        .map(|&claim| match claim {
            UNCLAIMED => NONE,
            claim => walkers[(claim & WALKER_MASK) as usize].index,
        })
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

/// Splits `size` slots in proportion to `weights` (all > 0): each share rounded down, then
/// one more slot for the largest remainders, ties to the earlier backend.
fn largest_remainder_quotas(weights: &[u64], size: u32) -> Vec<u32> {
    let total: u64 = weights.iter().sum();
    let size = u64::from(size);
    // Each quotient is at most `size`, which fits in u32.
    let mut quotas: Vec<u32> = weights.iter().map(|w| (size * w / total) as u32).collect();
    let assigned: u64 = quotas.iter().map(|&q| u64::from(q)).sum();
    let mut by_remainder: Vec<usize> = (0..weights.len()).collect();
    by_remainder.sort_by_key(|&i| (Reverse(size * weights[i] % total), i));
    for &i in by_remainder.iter().take((size - assigned) as usize) {
        quotas[i] += 1;
    }
    quotas
}

/// Bits of a claim that name the walker. Only walkers with a quota walk, and quotas are
/// at least 1 and sum to `size` <= RING_CAPACITY < 2^17, so 17 bits are enough.
const WALKER_BITS: u32 = 17;
/// Mask of the walker bits of a claim.
const WALKER_MASK: u64 = (1 << WALKER_BITS) - 1;
/// Scale of due times: a step of a walker of weight `w` lasts `2^30 / w` time units.
const TIME_SCALE_BITS: u32 = 30;
/// Claim value of a slot nobody holds; later than every real claim.
const UNCLAIMED: u64 = u64::MAX;

/// A backend walking its permutation of the slots.
///
/// Its claims are `due time << WALKER_BITS | walker`: a lower claim comes first. The `p`-th
/// slot of the permutation (from 0) is due at `(p + 1) * (2^30 / weight)`, below
/// `65537 * 2^30 < 2^47`, so a claim fits in 64 bits and never equals `UNCLAIMED`.
struct Walker {
    /// What the backend's slots hold.
    index: u32,
    /// Slots the backend must end with.
    quota: u32,
    /// Slots it holds now.
    held: u32,
    /// Next slot of its permutation.
    next_slot: u32,
    /// Step between consecutive slots of its permutation, in `1..size`.
    skip: u32,
    /// Slots of its permutation not yet claimed.
    unclaimed: u32,
    /// Claim on `next_slot`.
    next_claim: u64,
    /// Difference between consecutive claims.
    claim_step: u64,
}

impl Walker {
    fn new(backend: &MaglevBackend, quota: u32, position: usize, size: u32) -> Self {
        let key = address_key(backend.addr);
        let size64 = u64::from(size);
        let claim_step = ((1u64 << TIME_SCALE_BITS) / u64::from(backend.weight)) << WALKER_BITS;
        Self {
            index: backend.index,
            quota,
            held: 0,
            // Both remainders are below `size`, which fits in u32.
            next_slot: (flow_hash(&key, OFFSET_SEED).0 % size64) as u32,
            skip: (flow_hash(&key, SKIP_SEED).0 % (size64 - 1)) as u32 + 1,
            unclaimed: size,
            next_claim: claim_step | position as u64,
            claim_step,
        }
    }
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

/// Deferred acceptance: walkers claim slots along their permutations until each holds its
/// quota; a claim on a held slot wins when it comes first, and the displaced walker
/// resumes its walk later. Returns the winning claim of every slot. The outcome does not
/// depend on the order in which walkers take turns. Quotas sum to `size` and a held slot
/// stays held, so a walker short of its quota always finds a slot before its permutation
/// runs out.
fn stable_matching(walkers: &mut [Walker], size: u32) -> Vec<u64> {
    let mut claims = vec![UNCLAIMED; size as usize];
    let mut waiting: Vec<usize> = (0..walkers.len()).rev().collect();
    let mut is_waiting = vec![true; walkers.len()];
    while let Some(current) = waiting.pop() {
        is_waiting[current] = false;
        let Walker {
            quota,
            mut held,
            mut next_slot,
            skip,
            mut unclaimed,
            mut next_claim,
            claim_step,
            ..
        } = walkers[current];
        while held < quota && unclaimed > 0 {
            let slot = next_slot as usize;
            let claim = next_claim;
            // Both terms are below `size` <= RING_CAPACITY: no overflow.
            next_slot += skip;
            if next_slot >= size {
                next_slot -= size;
            }
            next_claim += claim_step;
            unclaimed -= 1;
            let holder = claims[slot];
            if claim < holder {
                claims[slot] = claim;
                held += 1;
                if holder != UNCLAIMED {
                    let displaced = (holder & WALKER_MASK) as usize;
                    walkers[displaced].held -= 1;
                    if !is_waiting[displaced] {
                        is_waiting[displaced] = true;
                        waiting.push(displaced);
                    }
                }
            }
        }
        let walker = &mut walkers[current];
        walker.held = held;
        walker.next_slot = next_slot;
        walker.unclaimed = unclaimed;
        walker.next_claim = next_claim;
    }
    claims
}

#[cfg(test)]
mod tests {
    use std::{
        collections::{BTreeMap, BTreeSet},
        net::{Ipv4Addr, Ipv6Addr},
    };

    use super::*;

    /// Deterministic xorshift64 generator for test inputs.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
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

    /// Asserts that every backend holds its exact share `size * w / W` within one slot
    /// (one slot of 65537 is far inside one percentage point) and nothing else is held.
    fn assert_fair(backends: &[MaglevBackend], table: &[u32]) {
        let size = table.len() as u64;
        let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
        let counts = slot_counts(table);
        for b in backends {
            let held = counts.get(&b.index).copied().unwrap_or(0);
            let ideal_times_total = size * u64::from(b.weight);
            assert!(
                (held * total).abs_diff(ideal_times_total) < total,
                "backend {} of weight {} holds {held} slots, ideal {:.3}",
                b.index,
                b.weight,
                ideal_times_total as f64 / total as f64
            );
        }
        let known: BTreeSet<u32> = backends.iter().map(|b| b.index).collect();
        assert!(counts.keys().all(|index| known.contains(index)));
    }

    fn changed(a: &[u32], b: &[u32]) -> usize {
        a.iter().zip(b).filter(|(x, y)| x != y).count()
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
    fn shares_are_within_one_slot_of_ideal() {
        let mut rng = XorShift(3);
        let counts = (2..=50).chain([60, 75, 100, 150, 200, 300, 500, 750, 1000]);
        for n in counts {
            let mut backends = random_backends(&mut rng, n);
            let table = build_table(&backends, DEFAULT_TABLE_SIZE).unwrap();
            assert_fair(&backends, &table);
            for b in &mut backends {
                b.weight = rng.below(65535) as u16 + 1;
            }
            let table = build_table(&backends, DEFAULT_TABLE_SIZE).unwrap();
            assert_fair(&backends, &table);
        }
    }

    #[test]
    fn small_tables_are_fair() {
        let mut rng = XorShift(4);
        for size in [3, 5, 7, 101, 997] {
            for n in [1, 2, 3, 7, 40] {
                let mut backends = random_backends(&mut rng, n);
                for b in &mut backends {
                    b.weight = rng.below(65535) as u16 + 1;
                }
                let table = build_table(&backends, size).unwrap();
                assert_eq!(table.len(), size as usize);
                assert_fair(&backends, &table);
            }
        }
    }

    #[test]
    fn zero_weights_get_nothing_and_change_nothing() {
        let mut rng = XorShift(5);
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
        assert_fair(&backends, &with_idle);
    }

    #[test]
    fn no_serving_backend_gives_an_empty_table() {
        let mut backends = random_backends(&mut XorShift(6), 5);
        for b in &mut backends {
            b.weight = 0;
        }
        let table = build_table(&backends, 101).unwrap();
        assert!(table.iter().all(|&i| i == NONE));
        assert_eq!(build_table(&[], 101).unwrap(), vec![NONE; 101]);
    }

    #[test]
    fn input_order_does_not_matter() {
        let mut rng = XorShift(7);
        let mut backends = random_backends(&mut rng, 200);
        for (i, b) in backends.iter_mut().enumerate() {
            if i % 3 == 0 {
                let mut octets = [0u8; 16];
                octets[..8].copy_from_slice(&rng.next().to_be_bytes());
                b.addr = IpAddr::V6(Ipv6Addr::from(octets));
            }
        }
        // Equal weights tie everywhere; random weights hardly ever.
        for weighted in [false, true] {
            if weighted {
                for b in &mut backends {
                    b.weight = rng.below(65535) as u16 + 1;
                }
            }
            let table = build_table(&backends, DEFAULT_TABLE_SIZE).unwrap();
            assert_fair(&backends, &table);
            for _ in 0..3 {
                for i in (1..backends.len()).rev() {
                    backends.swap(i, rng.below(i as u64 + 1) as usize);
                }
                assert_eq!(build_table(&backends, DEFAULT_TABLE_SIZE).unwrap(), table);
            }
        }
    }

    /// Slots that change when one of `n` equal backends leaves and when one joins, as
    /// multiples of the unavoidable change (`size / n` and `size / (n + 1)`).
    fn disruption(n: usize, seed: u64) -> (f64, f64) {
        let size = DEFAULT_TABLE_SIZE;
        let mut rng = XorShift(seed);
        let backends = random_backends(&mut rng, n + 1);
        let (current, joining) = backends.split_at(n);
        let table = build_table(current, size).unwrap();

        let mut grown = current.to_vec();
        grown.push(joining[0]);
        let added = changed(&table, &build_table(&grown, size).unwrap());

        let leaving = rng.below(n as u64) as usize;
        let mut shrunk = current.to_vec();
        shrunk.remove(leaving);
        let removed = changed(&table, &build_table(&shrunk, size).unwrap());

        let counts = slot_counts(&table);
        assert!(removed as u64 >= counts[&current[leaving].index]);
        assert!(added as u64 >= size as u64 / (n as u64 + 1));
        let size = f64::from(size);
        (
            removed as f64 / (size / n as f64),
            added as f64 / (size / (n + 1) as f64),
        )
    }

    #[test]
    fn few_slots_move_when_one_backend_leaves_or_joins() {
        for (n, bound) in [(10, 1.1), (100, 1.5), (1000, 5.5)] {
            let (removed, added) = disruption(n, 8 + n as u64);
            println!("n={n}: remove {removed:.3}x, add {added:.3}x of ideal");
            assert!(removed <= bound, "n={n}: remove moved {removed:.3}x ideal");
            assert!(added <= bound, "n={n}: add moved {added:.3}x ideal");
        }
    }
}
