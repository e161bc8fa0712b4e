//! How much the simulated Altinn can take: a rate limit across the access-management endpoints,
//! and what it let through and turned away, so a benchmark can read how many 429s it caused.

use std::num::NonZeroU32;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, Quota};
use serde::{Deserialize, Serialize};

/// What `PUT /_sim/capacity` sets; a field left out is 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
// A misspelt field would otherwise quietly mean "unlimited".
#[serde(default, deny_unknown_fields)]
pub struct Capacity {
    /// Requests per second across every access-management endpoint; 0: unlimited.
    pub rate_limit_per_s: u32,
    /// Added to every Altinn and Maskinporten request that gets through; the same value as
    /// [`super::Faults::latency_ms`], so setting either sets it.
    pub latency_ms: u64,
}

/// What `GET /_sim/capacity` reports: the capacity, and what the limiter counted since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapacityReport {
    pub rate_limit_per_s: u32,
    pub latency_ms: u64,
    /// Access-management requests the limiter let through (whatever they were answered).
    pub served: u64,
    /// Of `served`, the reads (GET); the rest are writes (POST, DELETE).
    #[serde(default)]
    pub served_reads: u64,
    /// Access-management requests the limiter answered 429.
    pub rate_limited: u64,
}

/// The rate limiter in front of access management.
///
/// A GCRA (`governor`) whose burst is one second's worth, so a rate of N lets N through at once
/// and then one every 1/N s. Its check is a compare-and-swap, with no lock held across an
/// await; the `RwLock` is only written when the rate changes.
#[derive(Default)]
pub struct Limiter {
    /// `None`: unlimited.
    limiter: RwLock<Option<(NonZeroU32, DefaultDirectRateLimiter)>>,
    served: AtomicU64,
    served_reads: AtomicU64,
    rate_limited: AtomicU64,
}

impl Limiter {
    /// A new rate starts with a full second's burst; 0 lifts the limit.
    pub fn set_rate(&self, per_s: u32) {
        let limiter = NonZeroU32::new(per_s).map(|rate| {
            (
                rate,
                DefaultDirectRateLimiter::direct(Quota::per_second(rate)),
            )
        });
        *self.limiter.write().unwrap_or_else(|e| e.into_inner()) = limiter;
    }

    pub fn rate(&self) -> u32 {
        let limiter = self.limiter.read().unwrap_or_else(|e| e.into_inner());
        limiter.as_ref().map_or(0, |(rate, _)| rate.get())
    }

    /// Counts the request in (a read or a write); `Err` with the wait until capacity frees if it
    /// is turned away.
    pub fn admit(&self, read: bool) -> Result<(), Duration> {
        let verdict = {
            let limiter = self.limiter.read().unwrap_or_else(|e| e.into_inner());
            match limiter.as_ref() {
                None => Ok(()),
                Some((_, limiter)) => limiter
                    .check()
                    .map_err(|not_until| not_until.wait_time_from(limiter.clock().now())),
            }
        };
        let counter = match verdict {
            Ok(()) => &self.served,
            Err(_) => &self.rate_limited,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if read && verdict.is_ok() {
            self.served_reads.fetch_add(1, Ordering::Relaxed);
        }
        verdict
    }

    /// (served, of which reads, rate limited) since start.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.served.load(Ordering::Relaxed),
            self.served_reads.load(Ordering::Relaxed),
            self.rate_limited.load(Ordering::Relaxed),
        )
    }
}

/// `Retry-After` in whole seconds, rounded up and at least 1: a client told 0 would come back
/// at once and be turned away again.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Limiter, retry_after_secs};

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_at_least_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(10)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1_001)), 2);
    }

    #[test]
    fn a_new_rate_lets_its_burst_through_and_counts_the_rest_as_limited() {
        let limiter = Limiter::default();
        limiter.set_rate(3);

        let verdicts: Vec<bool> = (0..5).map(|i| limiter.admit(i != 1).is_ok()).collect();

        // Five checks run in far less than the 1/3 s a new cell takes.
        assert_eq!(verdicts, [true, true, true, false, false]);
        assert_eq!(limiter.counts(), (3, 2, 2));
        assert_eq!(limiter.rate(), 3);
    }

    #[test]
    fn rate_zero_is_unlimited() {
        let limiter = Limiter::default();
        limiter.set_rate(0);

        assert!((0..1_000).all(|_| limiter.admit(false).is_ok()));
        assert_eq!(limiter.counts(), (1_000, 0, 0));
        assert_eq!(limiter.rate(), 0);
    }
}
