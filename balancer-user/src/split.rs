//! Group split: which group each of the `SPLIT_CELLS` cells of new flows goes to.
//!
//! A cell is one basis point of new flows: the data plane hashes a flow to a cell and
//! looks up the cell's group. Changing the shares is monotonic: a group that grows keeps
//! all its cells and gains some, a group that shrinks only loses cells, a group whose share
//! stays keeps exactly its cells. So only the flows of the moved cells change group, and
//! their number is the sum of the shares gained.
//!
//! The preferred layout is canonical: groups in index order, each on one contiguous range
//! of cells. A change moves to the canonical layout whenever that is monotonic (always for
//! two groups); otherwise shrinking groups release their highest cells and growing groups
//! take the released cells lowest first, in group order.
//!
//! With three or more groups the layout depends on the history of changes, and no layout
//! computed from the shares alone can be monotonic: monotonicity forces each group's cells
//! to depend on its own share only (compare moves that feed a growing group from different
//! shrinking groups), so for shares (a, b, c) the cells of B and C would be the same sets
//! X(t) for equal shares t — yet at (0, ½, ½) they must be disjoint. Hosts that applied the
//! same sequence of changes agree; two-group layouts are always canonical, so hosts agree
//! whatever the history.

use balancer_common::{MAX_GROUPS, NO_GROUP, SPLIT_CELLS};
use serde::{Deserialize, Serialize};

/// Sum of the shares of all groups: every cell, in basis points.
const TOTAL_SHARE: u32 = SPLIT_CELLS as u32;

/// Why a split could not be made or read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// Not between 1 and `MAX_GROUPS` groups.
    #[error("a split needs 1 to {max} groups, not {0}", max = MAX_GROUPS)]
    GroupCount(usize),
    /// The shares do not add up to 100%.
    #[error("shares must add up to 10000 basis points (100%), not {0}")]
    ShareSum(u32),
    /// A rebalance with fewer shares than groups.
    #[error("the split has {current} groups but only {given} shares were given")]
    MissingShares {
        /// Groups of the split.
        current: usize,
        /// Shares given.
        given: usize,
    },
    /// No such group.
    #[error("the split has no group {0}")]
    UnknownGroup(u8),
    /// Removing a group that still has cells.
    #[error("group {0} still has a share of the split")]
    GroupHasShare(u8),
    /// A stored run names a group the service does not have.
    #[error("stored split: a run names group {group} but there are {groups} groups")]
    RunGroup {
        /// The group named.
        group: u8,
        /// Groups of the service.
        groups: usize,
    },
    /// A stored run has no cell.
    #[error("stored split: the run at cell {0} is empty")]
    EmptyRun(u16),
    /// Stored runs leave a gap or overlap.
    #[error("stored split: a run starts at cell {found} where cell {expected} was expected")]
    RunStart {
        /// First cell not yet covered.
        expected: u32,
        /// Where the run starts.
        found: u32,
    },
    /// Stored runs do not cover every cell exactly once.
    #[error("stored split: the runs cover {0} cells instead of {total}", total = SPLIT_CELLS)]
    RunCoverage(u32),
}

/// A maximal range of consecutive cells of one group: the persistent form of a split.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellRun {
    /// Group of the cells.
    pub group: u8,
    /// First cell.
    pub start: u16,
    /// Number of cells, at least 1.
    pub len: u16,
}

/// The group of every cell, for a service with up to `MAX_GROUPS` groups.
///
/// A split of 0 groups (a service without groups) has every cell at `NO_GROUP`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitTable {
    /// Group index of each of the `SPLIT_CELLS` cells.
    cells: Vec<u8>,
    /// Number of groups, some of which may have no cell.
    groups: usize,
}

impl SplitTable {
    /// The canonical split for `shares` (basis points per group, in group order, summing to
    /// 10000): group 0 takes the first cells, group 1 the next ones, and so on.
    pub fn initial(shares: &[u16]) -> Result<Self, SplitError> {
        check_shares(shares)?;
        Ok(Self {
            cells: canonical_cells(shares),
            groups: shares.len(),
        })
    }

    /// The split for the new `shares`, moved monotonically from this one. `shares` has one
    /// entry per group; entries beyond the current groups add groups, which start without
    /// cells.
    pub fn rebalance(&self, shares: &[u16]) -> Result<Self, SplitError> {
        check_shares(shares)?;
        if shares.len() < self.groups {
            return Err(SplitError::MissingShares {
                current: self.groups,
                given: shares.len(),
            });
        }
        let owned = self.cells_per_group(shares.len());
        let canonical = canonical_cells(shares);
        let cells = if self.moves_monotonically_to(&canonical, &owned, shares) {
            canonical
        } else {
            self.minimal_move(&owned, shares)
        };
        Ok(Self {
            cells,
            groups: shares.len(),
        })
    }

    /// The same split without `group`, which must have no cell; later groups move down by
    /// one index.
    pub fn without_group(&self, group: u8) -> Result<Self, SplitError> {
        if usize::from(group) >= self.groups {
            return Err(SplitError::UnknownGroup(group));
        }
        if self.share_of(group) > 0 {
            return Err(SplitError::GroupHasShare(group));
        }
        let cells = self
            .cells
            .iter()
            .map(|&g| if g > group && g != NO_GROUP { g - 1 } else { g })
            .collect();
        Ok(Self {
            cells,
            groups: self.groups - 1,
        })
    }

    /// Group index of every cell.
    pub fn cells(&self) -> &[u8] {
        &self.cells
    }

    /// Cells of `group`: its share in basis points (0 for a group the split does not have).
    pub fn share_of(&self, group: u8) -> u16 {
        if usize::from(group) >= self.groups {
            return 0;
        }
        // At most SPLIT_CELLS = 10000.
        self.cells.iter().filter(|&&g| g == group).count() as u16
    }

    /// Data-plane view: cells of groups that cannot serve (serving[g] == false) are handed
    /// to serving groups in proportion to their shares (deterministic); all cells NO_GROUP
    /// if none serves. Does not change self.
    ///
    /// Groups missing from `serving` do not serve. When every serving group has a share of
    /// 0, they take the handed-over cells in equal parts. The handed-over cells, lowest
    /// first, go to the serving groups in group order.
    pub fn effective(&self, serving: &[bool]) -> Vec<u8> {
        let serves = |g: usize| g < self.groups && serving.get(g).copied().unwrap_or(false);
        let serving_groups: Vec<u8> = (0..self.groups)
            .filter(|&g| serves(g))
            .map(group_id)
            .collect();
        if serving_groups.is_empty() {
            return vec![NO_GROUP; SPLIT_CELLS];
        }
        let orphans: Vec<usize> = (0..SPLIT_CELLS)
            .filter(|&cell| !serves(usize::from(self.cells[cell])))
            .collect();
        let mut weights: Vec<u32> = serving_groups
            .iter()
            .map(|&g| u32::from(self.share_of(g)))
            .collect();
        if weights.iter().all(|&w| w == 0) {
            weights.fill(1);
        }
        let mut cells = self.cells.clone();
        let mut next = orphans.iter();
        for (&group, count) in serving_groups
            .iter()
            .zip(largest_remainder(&weights, orphans.len() as u32))
        {
            for &cell in next.by_ref().take(count as usize) {
                cells[cell] = group;
            }
        }
        cells
    }

    /// Compact persistent form: the runs of consecutive cells of one group, in cell order.
    pub fn to_runs(&self) -> Vec<CellRun> {
        let mut runs: Vec<CellRun> = Vec::new();
        if self.groups == 0 {
            return runs;
        }
        for (cell, &group) in self.cells.iter().enumerate() {
            match runs.last_mut() {
                Some(run) if run.group == group => run.len += 1,
                // Cells are below SPLIT_CELLS = 10000, which fits in u16.
                _ => runs.push(CellRun {
                    group,
                    start: cell as u16,
                    len: 1,
                }),
            }
        }
        runs
    }

    /// Reads the persistent form back for a service of `groups` groups: the runs, in any
    /// order, must cover every cell exactly once and name only groups below `groups`. With
    /// 0 groups there must be no run.
    pub fn from_runs(runs: &[CellRun], groups: usize) -> Result<Self, SplitError> {
        if groups > MAX_GROUPS as usize {
            return Err(SplitError::GroupCount(groups));
        }
        if groups == 0 && runs.is_empty() {
            return Ok(Self {
                cells: vec![NO_GROUP; SPLIT_CELLS],
                groups,
            });
        }
        let mut sorted: Vec<&CellRun> = runs.iter().collect();
        sorted.sort_by_key(|run| run.start);
        let mut cells = Vec::with_capacity(SPLIT_CELLS);
        for run in sorted {
            if usize::from(run.group) >= groups {
                return Err(SplitError::RunGroup {
                    group: run.group,
                    groups,
                });
            }
            if run.len == 0 {
                return Err(SplitError::EmptyRun(run.start));
            }
            let expected = cells.len() as u32;
            if u32::from(run.start) != expected {
                return Err(SplitError::RunStart {
                    expected,
                    found: u32::from(run.start),
                });
            }
            if cells.len() + usize::from(run.len) > SPLIT_CELLS {
                return Err(SplitError::RunCoverage(expected + u32::from(run.len)));
            }
            cells.resize(cells.len() + usize::from(run.len), run.group);
        }
        if cells.len() != SPLIT_CELLS {
            return Err(SplitError::RunCoverage(cells.len() as u32));
        }
        Ok(Self { cells, groups })
    }

    /// Cells of each of the first `groups` groups (0 for groups the split does not have).
    fn cells_per_group(&self, groups: usize) -> Vec<u16> {
        let mut owned = vec![0u16; groups];
        for &group in &self.cells {
            if let Some(count) = owned.get_mut(usize::from(group)) {
                *count += 1;
            }
        }
        owned
    }

    /// Whether going from this split to `target` only moves cells from shrinking groups
    /// (`shares` below `owned`) or from no group to growing groups.
    fn moves_monotonically_to(&self, target: &[u8], owned: &[u16], shares: &[u16]) -> bool {
        let shrinks = |g: u8| shares[usize::from(g)] < owned[usize::from(g)];
        let grows = |g: u8| shares[usize::from(g)] > owned[usize::from(g)];
        self.cells
            .iter()
            .zip(target)
            .all(|(&old, &new)| old == new || ((old == NO_GROUP || shrinks(old)) && grows(new)))
    }

    /// The least change to reach `shares`: each shrinking group releases its highest cells,
    /// then the growing groups, in group order, take the released cells lowest first.
    fn minimal_move(&self, owned: &[u16], shares: &[u16]) -> Vec<u8> {
        let mut cells = self.cells.clone();
        let mut released: Vec<usize> = Vec::new();
        for (g, (&share, &had)) in shares.iter().zip(owned).enumerate() {
            if share < had {
                let highest = (0..SPLIT_CELLS).rev().filter(|&c| cells[c] == group_id(g));
                released.extend(highest.take(usize::from(had - share)));
            }
        }
        released.sort_unstable();
        let mut released = released.into_iter();
        for (g, (&share, &had)) in shares.iter().zip(owned).enumerate() {
            if share > had {
                for cell in released.by_ref().take(usize::from(share - had)) {
                    cells[cell] = group_id(g);
                }
            }
        }
        cells
    }
}

/// Checks the number of shares and their sum.
fn check_shares(shares: &[u16]) -> Result<(), SplitError> {
    if shares.is_empty() || shares.len() > MAX_GROUPS as usize {
        return Err(SplitError::GroupCount(shares.len()));
    }
    let sum: u32 = shares.iter().map(|&s| u32::from(s)).sum();
    if sum != TOTAL_SHARE {
        return Err(SplitError::ShareSum(sum));
    }
    Ok(())
}

/// Cells of the canonical layout: each group on one range, in group order.
fn canonical_cells(shares: &[u16]) -> Vec<u8> {
    let mut cells = Vec::with_capacity(SPLIT_CELLS);
    for (g, &share) in shares.iter().enumerate() {
        cells.resize(cells.len() + usize::from(share), group_id(g));
    }
    cells
}

/// A group index as stored in a cell; group indices are below `MAX_GROUPS` = 16.
fn group_id(group: usize) -> u8 {
    group as u8
}

/// Splits `total` items in proportion to `weights` (not all 0): each part rounded down,
/// then one more for the largest remainders, ties to the earlier part.
fn largest_remainder(weights: &[u32], total: u32) -> Vec<u32> {
    let sum: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    let total = u64::from(total);
    // Each part is at most `total`, a u32.
    let mut parts: Vec<u32> = weights
        .iter()
        .map(|&w| (total * u64::from(w) / sum) as u32)
        .collect();
    let given: u64 = parts.iter().map(|&p| u64::from(p)).sum();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(total * u64::from(weights[i]) % sum), i));
    for &i in order.iter().take((total - given) as usize) {
        parts[i] += 1;
    }
    parts
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    use crate::test_rng::XorShift;

    impl XorShift {
        /// Random shares of `groups` groups summing to 10000; often a group gets 0 or all.
        fn shares(&mut self, groups: usize) -> Vec<u16> {
            let mut cuts: Vec<u16> = (1..groups)
                .map(|_| match self.below(8) {
                    0 => 0,
                    1 => 10_000,
                    _ => self.below(10_001) as u16,
                })
                .collect();
            cuts.push(0);
            cuts.push(10_000);
            cuts.sort_unstable();
            cuts.windows(2).map(|pair| pair[1] - pair[0]).collect()
        }
    }

    fn cells_of(table: &SplitTable, group: u8) -> BTreeSet<usize> {
        (0..SPLIT_CELLS)
            .filter(|&cell| table.cells()[cell] == group)
            .collect()
    }

    /// Checks one change of shares against the monotonic rule: every changed cell moves
    /// from a shrinking group to a growing one (so growing groups keep all their cells and
    /// steady groups keep exactly theirs), shares are met, and the number of changed cells
    /// is the sum of the shares gained.
    fn assert_monotonic(old: &SplitTable, new: &SplitTable, old_shares: &[u16], shares: &[u16]) {
        let before = |g: u8| old_shares.get(usize::from(g)).copied().unwrap_or(0);
        let after = |g: u8| shares[usize::from(g)];
        let mut changed = 0;
        for (cell, (&from, &to)) in old.cells().iter().zip(new.cells()).enumerate() {
            if from != to {
                changed += 1;
                assert!(
                    after(from) < before(from) && after(to) > before(to),
                    "cell {cell} moved from group {from} to {to}: {old_shares:?} -> {shares:?}"
                );
            }
        }
        let mut counts = vec![0u16; shares.len()];
        for &group in new.cells() {
            counts[usize::from(group)] += 1;
        }
        assert_eq!(counts, shares);
        let mut gained = 0;
        for g in 0..shares.len() as u8 {
            gained += usize::from(after(g).saturating_sub(before(g)));
        }
        assert_eq!(changed, gained, "{old_shares:?} -> {shares:?}");
    }

    fn is_canonical(table: &SplitTable, shares: &[u16]) -> bool {
        table.cells() == canonical_cells(shares)
    }

    #[test]
    fn initial_split_is_canonical() {
        let table = SplitTable::initial(&[2500, 0, 7000, 500]).unwrap();
        assert_eq!(table.cells().len(), SPLIT_CELLS);
        assert!(table.cells()[..2500].iter().all(|&g| g == 0));
        assert!(table.cells()[2500..9500].iter().all(|&g| g == 2));
        assert!(table.cells()[9500..].iter().all(|&g| g == 3));
        assert_eq!(
            [0, 1, 2, 3, 4].map(|g| table.share_of(g)),
            [2500, 0, 7000, 500, 0]
        );
    }

    #[test]
    fn bad_shares_are_rejected() {
        assert_eq!(SplitTable::initial(&[]), Err(SplitError::GroupCount(0)));
        let too_many = vec![0; MAX_GROUPS as usize + 1];
        assert_eq!(
            SplitTable::initial(&too_many),
            Err(SplitError::GroupCount(too_many.len()))
        );
        assert_eq!(
            SplitTable::initial(&[5000, 4999]),
            Err(SplitError::ShareSum(9999))
        );
        assert_eq!(
            SplitTable::initial(&[u16::MAX, u16::MAX]),
            Err(SplitError::ShareSum(2 * 65535))
        );
        let table = SplitTable::initial(&[5000, 5000]).unwrap();
        assert_eq!(
            table.rebalance(&[10_000]),
            Err(SplitError::MissingShares {
                current: 2,
                given: 1
            })
        );
        assert_eq!(
            table.rebalance(&[5000, 5001]),
            Err(SplitError::ShareSum(10_001))
        );
        assert!(SplitError::ShareSum(9999).to_string().contains("10000"));
    }

    #[test]
    fn random_changes_are_monotonic() {
        let mut rng = XorShift(11);
        for groups in 2..=MAX_GROUPS as usize {
            let mut shares = rng.shares(groups);
            let mut table = SplitTable::initial(&shares).unwrap();
            for _ in 0..600 {
                let next_shares = rng.shares(groups);
                let next = table.rebalance(&next_shares).unwrap();
                assert_monotonic(&table, &next, &shares, &next_shares);
                (table, shares) = (next, next_shares);
            }
        }
    }

    #[test]
    fn small_steps_are_monotonic() {
        let mut rng = XorShift(12);
        for groups in 2..=MAX_GROUPS as usize {
            let mut shares = vec![0u16; groups];
            shares[0] = 10_000;
            let mut table = SplitTable::initial(&shares).unwrap();
            for _ in 0..600 {
                let mut next_shares = shares.clone();
                let from = rng.below(groups as u64) as usize;
                let to = rng.below(groups as u64) as usize;
                let amount = rng.below(u64::from(shares[from]) + 1).min(300) as u16;
                next_shares[from] -= amount;
                next_shares[to] += amount;
                let next = table.rebalance(&next_shares).unwrap();
                assert_monotonic(&table, &next, &shares, &next_shares);
                (table, shares) = (next, next_shares);
            }
        }
    }

    #[test]
    fn two_groups_stay_canonical() {
        let mut rng = XorShift(13);
        let mut table = SplitTable::initial(&[10_000]).unwrap();
        let mut shares = vec![10_000, 0];
        table = table.rebalance(&shares).unwrap();
        for _ in 0..500 {
            assert!(is_canonical(&table, &shares), "{shares:?}");
            shares = rng.shares(2);
            table = table.rebalance(&shares).unwrap();
        }
    }

    #[test]
    fn canonical_layout_returns_when_monotonic() {
        let start = [3000, 3000, 4000];
        let table = SplitTable::initial(&start).unwrap();
        // Groups 0 and 1 both shrink: group 1 cannot stay contiguous at its canonical place.
        let moved = table.rebalance(&[2000, 2000, 6000]).unwrap();
        assert!(!is_canonical(&moved, &[2000, 2000, 6000]));
        assert_eq!(cells_of(&moved, 0), (0..2000).collect());
        assert_eq!(cells_of(&moved, 1), (3000..5000).collect());
        let expected: BTreeSet<usize> = (2000..3000).chain(5000..SPLIT_CELLS).collect();
        assert_eq!(cells_of(&moved, 2), expected);
        // Going back is monotonic towards the canonical layout, so it is taken.
        let back = moved.rebalance(&start).unwrap();
        assert!(is_canonical(&back, &start));
    }

    #[test]
    fn minimal_move_releases_highest_cells_and_fills_lowest_first() {
        let table = SplitTable::initial(&[2000, 3000, 5000]).unwrap();
        // Group 0 shrinks, group 1 stays: group 1 cannot move to its canonical place.
        let next = table.rebalance(&[1000, 3000, 6000]).unwrap();
        assert_eq!(cells_of(&next, 0), (0..1000).collect());
        assert_eq!(cells_of(&next, 1), (2000..5000).collect());
        let group2: BTreeSet<usize> = (1000..2000).chain(5000..SPLIT_CELLS).collect();
        assert_eq!(cells_of(&next, 2), group2);

        let table = SplitTable::initial(&[4000, 4000, 2000, 0]).unwrap();
        // Group 1 releases 5000..8000; groups 0, 2 and 3 take them in that order.
        let next = table.rebalance(&[4500, 1000, 2500, 2000]).unwrap();
        let group0: BTreeSet<usize> = (0..4000).chain(5000..5500).collect();
        let group2: BTreeSet<usize> = (5500..6000).chain(8000..SPLIT_CELLS).collect();
        assert_eq!(cells_of(&next, 0), group0);
        assert_eq!(cells_of(&next, 1), (4000..5000).collect());
        assert_eq!(cells_of(&next, 2), group2);
        assert_eq!(cells_of(&next, 3), (6000..8000).collect());
    }

    #[test]
    fn new_groups_can_be_added_and_empty_groups_removed() {
        let table = SplitTable::initial(&[10_000]).unwrap();
        let two = table.rebalance(&[10_000, 0]).unwrap();
        assert_eq!(two.cells(), table.cells());
        let three = two.rebalance(&[6000, 0, 4000]).unwrap();
        assert!(is_canonical(&three, &[6000, 0, 4000]));
        let without = three.without_group(1).unwrap();
        assert!(is_canonical(&without, &[6000, 4000]));
        // A third share adds a group: the shrinking group 1 hands its cells, and only
        // those, to the growing new group 2.
        let regrown = without.rebalance(&[6000, 0, 4000]).unwrap();
        let moved: Vec<u8> = without
            .cells()
            .iter()
            .map(|&g| if g == 1 { 2 } else { g })
            .collect();
        assert_eq!(regrown.cells(), moved.as_slice());
        assert_eq!(three.without_group(2), Err(SplitError::GroupHasShare(2)));
        assert_eq!(three.without_group(3), Err(SplitError::UnknownGroup(3)));
        let runs = without.to_runs();
        assert_eq!(SplitTable::from_runs(&runs, 2), Ok(without));
    }

    #[test]
    fn a_service_without_groups_has_an_empty_split() {
        let empty = SplitTable::from_runs(&[], 0).unwrap();
        assert!(empty.cells().iter().all(|&g| g == NO_GROUP));
        assert!(empty.to_runs().is_empty());
        assert_eq!(empty.share_of(0), 0);
        assert_eq!(empty.share_of(NO_GROUP), 0);
        assert_eq!(empty.effective(&[]), vec![NO_GROUP; SPLIT_CELLS]);
        let first = empty.rebalance(&[10_000]).unwrap();
        assert_eq!(first, SplitTable::initial(&[10_000]).unwrap());
    }

    #[test]
    fn effective_hands_cells_over_in_proportion() {
        let shares = [5000, 3000, 2000, 0];
        let table = SplitTable::initial(&shares).unwrap();
        let cells = table.effective(&[true, true, false, true]);
        assert_eq!(cells, table.effective(&[true, true, false, true]));
        assert_eq!(table, SplitTable::initial(&shares).unwrap());
        let count = |g: u8| cells.iter().filter(|&&c| c == g).count();
        // Group 2's 2000 cells go 5:3 to groups 0 and 1; group 3 has no share.
        assert!(count(0).abs_diff(5000 + 1250) <= 2);
        assert!(count(1).abs_diff(3000 + 750) <= 2);
        assert_eq!(count(0) + count(1), SPLIT_CELLS);
        // Serving groups keep their own cells.
        let own = table.cells().iter().zip(&cells);
        assert!(own.filter(|(g, _)| **g != 2).all(|(g, e)| g == e));
    }

    #[test]
    fn effective_for_random_failures() {
        let mut rng = XorShift(14);
        for _ in 0..200 {
            let groups = 1 + rng.below(u64::from(MAX_GROUPS)) as usize;
            let shares = rng.shares(groups);
            let table = SplitTable::initial(&shares).unwrap();
            let serving: Vec<bool> = (0..groups).map(|_| rng.below(3) > 0).collect();
            let cells = table.effective(&serving);
            let live: Vec<usize> = (0..groups).filter(|&g| serving[g]).collect();
            if live.is_empty() {
                assert!(cells.iter().all(|&c| c == NO_GROUP));
                continue;
            }
            let live_share: u32 = live.iter().map(|&g| u32::from(shares[g])).sum();
            for &g in &live {
                let count = cells.iter().filter(|&&c| usize::from(c) == g).count() as f64;
                let ideal = if live_share == 0 {
                    SPLIT_CELLS as f64 / live.len() as f64
                } else {
                    SPLIT_CELLS as f64 * f64::from(shares[g]) / f64::from(live_share)
                };
                assert!((count - ideal).abs() <= 1.0, "{shares:?} {serving:?}");
            }
            assert!(cells.iter().all(|&c| serving[usize::from(c)]));
        }
    }

    #[test]
    fn effective_with_nobody_serving_is_empty() {
        let table = SplitTable::initial(&[4000, 6000]).unwrap();
        assert_eq!(
            table.effective(&[false, false]),
            vec![NO_GROUP; SPLIT_CELLS]
        );
        assert_eq!(table.effective(&[]), vec![NO_GROUP; SPLIT_CELLS]);
        assert_eq!(table.effective(&[true, true, true]), table.cells());
        let only_first = table.effective(&[true]);
        assert!(only_first.iter().all(|&c| c == 0));
    }

    #[test]
    fn runs_round_trip() {
        let mut rng = XorShift(15);
        for groups in 1..=MAX_GROUPS as usize {
            let mut table = SplitTable::initial(&rng.shares(groups)).unwrap();
            for _ in 0..50 {
                table = table.rebalance(&rng.shares(groups)).unwrap();
                let runs = table.to_runs();
                assert!(runs.iter().all(|run| run.len > 0));
                assert!(runs.windows(2).all(|pair| pair[0].group != pair[1].group));
                assert_eq!(SplitTable::from_runs(&runs, groups), Ok(table.clone()));
                let mut reversed = runs.clone();
                reversed.reverse();
                assert_eq!(SplitTable::from_runs(&reversed, groups), Ok(table.clone()));
            }
        }
    }

    #[test]
    fn bad_runs_are_rejected() {
        let run = |group, start, len| CellRun { group, start, len };
        let good = [run(0, 0, 4000), run(1, 4000, 6000)];
        assert!(SplitTable::from_runs(&good, 2).is_ok());
        assert_eq!(
            SplitTable::from_runs(&good, 1),
            Err(SplitError::RunGroup {
                group: 1,
                groups: 1
            })
        );
        let too_many = MAX_GROUPS as usize + 1;
        assert_eq!(
            SplitTable::from_runs(&good, too_many),
            Err(SplitError::GroupCount(too_many))
        );
        assert!(matches!(
            SplitTable::from_runs(&good, 0),
            Err(SplitError::RunGroup { .. })
        ));
        let gap = [run(0, 0, 4000), run(1, 4001, 5999)];
        assert_eq!(
            SplitTable::from_runs(&gap, 2),
            Err(SplitError::RunStart {
                expected: 4000,
                found: 4001
            })
        );
        let overlap = [run(0, 0, 4000), run(1, 3999, 6001)];
        assert!(matches!(
            SplitTable::from_runs(&overlap, 2),
            Err(SplitError::RunStart { .. })
        ));
        let short = [run(0, 0, 4000), run(1, 4000, 5999)];
        assert_eq!(
            SplitTable::from_runs(&short, 2),
            Err(SplitError::RunCoverage(9999))
        );
        let long = [run(0, 0, 4000), run(1, 4000, 6001)];
        assert_eq!(
            SplitTable::from_runs(&long, 2),
            Err(SplitError::RunCoverage(10_001))
        );
        let empty_run = [run(0, 0, 4000), run(1, 4000, 0), run(1, 4000, 6000)];
        assert_eq!(
            SplitTable::from_runs(&empty_run, 2),
            Err(SplitError::EmptyRun(4000))
        );
        let beyond = [run(0, 0, 10_000), run(0, u16::MAX, u16::MAX)];
        assert!(SplitTable::from_runs(&beyond, 1).is_err());
        assert!(SplitTable::from_runs(&[], 1).is_err());
    }
}
