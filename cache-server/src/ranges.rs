//! Which byte ranges of an upload have arrived (v1 PATCHes come in parallel, out of order).

use std::collections::BTreeMap;

#[derive(Clone, Debug, Default)]
pub struct RangeSet {
    /// start -> end (exclusive), non-overlapping and non-adjacent.
    spans: BTreeMap<u64, u64>,
}

impl RangeSet {
    pub fn insert(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        let overlapping: Vec<(u64, u64)> = self
            .spans
            .range(..=end)
            .filter(|(_, &e)| e >= start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in overlapping {
            self.spans.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.spans.insert(start, end);
    }

    /// True when `[start, end)` is entirely received.
    pub fn covers(&self, start: u64, end: u64) -> bool {
        if start >= end {
            return true;
        }
        self.spans
            .range(..=start)
            .next_back()
            .is_some_and(|(_, &e)| e >= end)
    }

    /// The end of the received prefix `[0, n)`: 0 until byte 0 has arrived.
    pub fn contiguous_end(&self) -> u64 {
        self.spans.get(&0).copied().unwrap_or(0)
    }

    pub fn end(&self) -> u64 {
        self.spans.values().next_back().copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.spans.iter().map(|(s, e)| e - s).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_out_of_order_ranges() {
        let mut r = RangeSet::default();
        r.insert(20, 30);
        r.insert(0, 10);
        assert!(!r.covers(0, 30));
        r.insert(10, 20);
        assert!(r.covers(0, 30));
        assert_eq!(r.end(), 30);
        assert_eq!(r.total(), 30);
        r.insert(5, 25);
        assert_eq!(r.total(), 30);
    }
}
