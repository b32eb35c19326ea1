//! A set of dirty byte ranges of one file, coalesced: adjacent and
//! overlapping ranges merge, so the set stays as small as the writes allow.
//! Past a cap the nearest ranges merge (a superset stays correct: clean
//! bytes copied again are the same bytes), which bounds memory however
//! scattered the writes are.

use std::collections::BTreeMap;

/// Most ranges one file keeps before neighbours merge.
pub const DEFAULT_CAP: usize = 1 << 16;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtentSet {
    /// start → end (exclusive); disjoint and non-adjacent.
    ranges: BTreeMap<u64, u64>,
    cap: usize,
}

impl ExtentSet {
    pub fn new() -> Self {
        Self::with_cap(DEFAULT_CAP)
    }

    pub fn with_cap(cap: usize) -> Self {
        ExtentSet {
            ranges: BTreeMap::new(),
            cap: cap.max(1),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Total bytes covered.
    pub fn bytes(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&s, &e)| (s, e))
    }

    /// Marks `[start, start + len)` dirty.
    pub fn insert(&mut self, start: u64, len: u64) {
        if len == 0 {
            return;
        }
        let mut start = start;
        let mut end = start.saturating_add(len);
        // Merge with a range that begins at or before `start` and reaches it.
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
            }
        }
        // Swallow every range that begins inside (or right after) us.
        let swallowed: Vec<(u64, u64)> = self
            .ranges
            .range(start..=end)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in swallowed {
            self.ranges.remove(&s);
            end = end.max(e);
        }
        self.ranges.insert(start, end);
        if self.ranges.len() > self.cap {
            self.merge_closest();
        }
    }

    /// Adds every range of `other`.
    pub fn union(&mut self, other: &ExtentSet) {
        for (s, e) in other.iter() {
            self.insert(s, e - s);
        }
    }

    /// Drops everything at or beyond `size` (the file was truncated).
    pub fn truncate(&mut self, size: u64) {
        let beyond: Vec<u64> = self.ranges.range(size..).map(|(&s, _)| s).collect();
        for s in beyond {
            self.ranges.remove(&s);
        }
        if let Some((&s, e)) = self.ranges.range_mut(..size).next_back() {
            if *e > size {
                *e = size;
            }
            if s == *e {
                self.ranges.remove(&s);
            }
        }
    }

    /// Merges the two neighbouring ranges with the smallest gap.
    fn merge_closest(&mut self) {
        let mut best: Option<(u64, u64)> = None; // (gap, start of the left range)
        let mut prev: Option<(u64, u64)> = None;
        for (&s, &e) in &self.ranges {
            if let Some((ps, pe)) = prev {
                let gap = s - pe;
                if best.is_none_or(|(g, _)| gap < g) {
                    best = Some((gap, ps));
                }
            }
            prev = Some((s, e));
        }
        if let Some((_, left)) = best {
            let left_end = self.ranges[&left];
            let (&right, &right_end) = self
                .ranges
                .range(left_end..)
                .next()
                .expect("a right neighbour exists");
            self.ranges.remove(&right);
            self.ranges.insert(left, right_end.max(left_end));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn model_bytes(ops: &[(u64, u64)]) -> std::collections::BTreeSet<u64> {
        ops.iter().flat_map(|&(s, l)| s..s + l).collect()
    }

    #[test]
    fn coalesces_adjacent_and_overlapping() {
        let mut x = ExtentSet::new();
        x.insert(10, 10);
        x.insert(20, 5);
        x.insert(0, 3);
        x.insert(2, 9);
        assert_eq!(x.iter().collect::<Vec<_>>(), vec![(0, 25)]);
        x.insert(100, 1);
        x.truncate(15);
        assert_eq!(x.iter().collect::<Vec<_>>(), vec![(0, 15)]);
    }

    #[test]
    fn cap_bounds_the_range_count_and_keeps_a_superset() {
        let mut x = ExtentSet::with_cap(4);
        for i in 0..100u64 {
            x.insert(i * 10, 1);
        }
        assert!(x.len() <= 4);
        for i in 0..100u64 {
            assert!(x.iter().any(|(s, e)| s <= i * 10 && i * 10 < e));
        }
    }

    proptest! {
        #[test]
        fn matches_a_byte_set_model(ops in proptest::collection::vec((0u64..2000, 0u64..100), 0..60)) {
            let mut x = ExtentSet::new();
            for &(s, l) in &ops {
                x.insert(s, l);
            }
            let covered: std::collections::BTreeSet<u64> = x.iter().flat_map(|(s, e)| s..e).collect();
            prop_assert_eq!(covered, model_bytes(&ops));
            // Disjoint and not adjacent.
            let v: Vec<_> = x.iter().collect();
            for w in v.windows(2) {
                prop_assert!(w[0].1 < w[1].0);
            }
        }

        #[test]
        fn truncate_matches_the_model(ops in proptest::collection::vec((0u64..2000, 1u64..100), 0..40), size in 0u64..2100) {
            let mut x = ExtentSet::new();
            for &(s, l) in &ops {
                x.insert(s, l);
            }
            x.truncate(size);
            let covered: std::collections::BTreeSet<u64> = x.iter().flat_map(|(s, e)| s..e).collect();
            let want: std::collections::BTreeSet<u64> = model_bytes(&ops).into_iter().filter(|&b| b < size).collect();
            prop_assert_eq!(covered, want);
        }
    }
}
