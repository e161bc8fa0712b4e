//! The worker's own ingest counters, read by progress logs and readiness.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The worker's own counters, per stream; logged as progress and at shutdown.
#[derive(Debug, Default)]
pub struct Metrics {
    pub events: Counters,
    pub commands: Counters,
    /// Both consumers are attached to a live connection (readiness).
    pub consumers_attached: AtomicBool,
}

#[derive(Debug, Default)]
pub struct Counters {
    pub acked: AtomicU64,
    pub applied: AtomicU64,
    pub duplicates: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub batches: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self) -> [u64; 5] {
        [
            self.acked.load(Ordering::Relaxed),
            self.applied.load(Ordering::Relaxed),
            self.duplicates.load(Ordering::Relaxed),
            self.dead_lettered.load(Ordering::Relaxed),
            self.batches.load(Ordering::Relaxed),
        ]
    }
}
