//! [`Census`] in memory: one counter per dialect.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::cluster::{Census, DIALECT_SLOTS};

#[derive(Default)]
pub struct MemoryCensus {
    counts: [AtomicUsize; DIALECT_SLOTS],
}

impl Census for MemoryCensus {
    fn arrived(&self, dialect: usize) {
        if let Some(c) = self.counts.get(dialect) {
            c.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn left(&self, dialect: usize) {
        if let Some(c) = self.counts.get(dialect) {
            let _ = c.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        }
    }

    fn present(&self, dialect: usize) -> bool {
        self.counts.get(dialect).is_some_and(|c| c.load(Ordering::SeqCst) > 0)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn meets_the_census_contract() {
        crate::cluster::suite::census(|| std::sync::Arc::new(super::MemoryCensus::default()));
    }
}
