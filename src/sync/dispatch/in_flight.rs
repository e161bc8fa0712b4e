//! Rows in flight per firm, for the per-firm limit.

use std::collections::HashMap;

use super::locked::Locked;
use super::row::Row;

/// A step's claimed rows, counted per firm until the step is over.
pub(super) struct InFlight<'a> {
    counts: &'a std::sync::Mutex<HashMap<String, usize>>,
    firms: HashMap<String, usize>,
}

impl<'a> InFlight<'a> {
    pub(super) fn new(counts: &'a std::sync::Mutex<HashMap<String, usize>>, rows: &[Row]) -> Self {
        let mut firms = HashMap::new();
        for row in rows {
            *firms.entry(row.firm.clone()).or_default() += 1;
        }
        let mut all = counts.locked();
        for (firm, n) in &firms {
            *all.entry(firm.clone()).or_default() += n;
        }
        Self { counts, firms }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut all = self.counts.locked();
        for (firm, n) in &self.firms {
            if let Some(count) = all.get_mut(firm) {
                *count = count.saturating_sub(*n);
                if *count == 0 {
                    all.remove(firm);
                }
            }
        }
    }
}
