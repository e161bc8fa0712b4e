//! The worker's one retry policy: exponential backoff with jitter, capped, never giving up.
//!
//! Every retry takes its waits from here: reconnecting to RabbitMQ and PostgreSQL, holding a
//! batch through a database outage, and delivering a change to Altinn again. The `backoff`
//! crate is named in this file only. It is unmaintained (RUSTSEC-2025-0012, see `deny.toml`),
//! so replacing it is a change to this file alone.

use std::time::Duration;

use backoff::ExponentialBackoff;
use backoff::backoff::Backoff as _;

/// The one question every module's error answers for the loop that called it: is the same work
/// worth trying again later (the database or the broker away for a moment, a conflict, Altinn
/// busy), or will it fail the same way until someone changes something?
pub trait Retryable {
    fn is_retryable(&self) -> bool;
}

/// How long to wait after each failure of a run of failures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// The first wait.
    pub initial: Duration,
    /// No wait is longer than this, jitter included.
    pub max: Duration,
    /// Each wait is drawn uniformly within ±this share of its nominal value, so that replicas
    /// failing together do not retry together.
    pub jitter: f64,
    /// Each nominal wait is this many times the one before.
    pub multiplier: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl RetryPolicy {
    /// 200 ms, doubling, ±50 %, at most 30 s.
    pub const DEFAULT: Self = Self::new(Duration::from_millis(200), Duration::from_secs(30));

    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            jitter: 0.5,
            multiplier: 2.0,
        }
    }

    #[must_use]
    pub const fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// The waits of one run of failures. Call [`Waits::reset`] after a success.
    pub fn waits(&self) -> Waits {
        let mut inner = ExponentialBackoff {
            initial_interval: self.initial,
            current_interval: self.initial,
            max_interval: self.max,
            randomization_factor: self.jitter.clamp(0.0, 1.0),
            multiplier: self.multiplier.max(1.0),
            max_elapsed_time: None,
            ..ExponentialBackoff::default()
        };
        inner.reset();
        Waits {
            inner,
            max: self.max,
        }
    }

    /// The wait after the `attempts`th failure in a row (1 for the first), for work whose
    /// failures are counted in a database row rather than in a live [`Waits`].
    pub fn after_attempts(&self, attempts: u32) -> Duration {
        let mut waits = self.waits();
        let mut wait = self.initial;
        // Past 64 doublings every wait is capped anyway.
        for _ in 0..attempts.clamp(1, 64) {
            wait = waits.next_wait();
        }
        wait
    }
}

/// A run of waits from a [`RetryPolicy`].
#[derive(Debug)]
pub struct Waits {
    inner: ExponentialBackoff,
    max: Duration,
}

impl Waits {
    /// The wait before the next attempt.
    pub fn next_wait(&mut self) -> Duration {
        // `backoff` jitters around the capped interval, which can overshoot the cap.
        self.inner.next_backoff().unwrap_or(self.max).min(self.max)
    }

    /// Starts over from the first wait, after a success.
    pub fn reset(&mut self) {
        self.inner.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy =
        RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(2)).with_jitter(0.3);

    #[test]
    fn waits_grow_within_their_jitter_and_stop_at_the_cap() {
        let mut waits = POLICY.waits();
        let mut nominal = 0.1_f64;
        for _ in 0..12 {
            let wait = waits.next_wait().as_secs_f64();
            let capped = nominal.min(2.0);
            assert!(
                wait >= capped * 0.7 - 1e-9 && wait <= (capped * 1.3).min(2.0) + 1e-9,
                "{wait} s is not within 30 % of {capped} s"
            );
            nominal *= 2.0;
        }
    }

    #[test]
    fn reset_starts_over() {
        let mut waits = POLICY.waits();
        for _ in 0..10 {
            waits.next_wait();
        }
        waits.reset();
        assert!(waits.next_wait() <= Duration::from_millis(130));
    }

    #[test]
    fn after_attempts_counts_failures_from_one() {
        for attempts in [0, 1] {
            let first = POLICY.after_attempts(attempts);
            assert!(first >= Duration::from_millis(70) && first <= Duration::from_millis(130));
        }
        let fourth = POLICY.after_attempts(4);
        assert!(fourth >= Duration::from_millis(560) && fourth <= Duration::from_millis(1040));
        assert!(POLICY.after_attempts(u32::MAX) <= Duration::from_secs(2));
    }
}
