//! How many calls to Altinn's access management go out at once.
//!
//! Altinn publishes no rate limit, and answers in 50–300 ms. A fixed number in flight either
//! leaves most of its capacity unused or, raised by hand, risks a storm of 429s. So by default
//! the limit finds the capacity itself, as TCP's congestion control does (AIMD):
//! - **slow start**: every success adds one, doubling the limit each round trip, until the
//!   first sign of congestion;
//! - **additive increase**: then one more per round trip (a limit's worth of successes),
//!   while the limit is used and latency stays near its usual level;
//! - **multiplicative decrease**: a 429, a 503, no answer at all, or latency rising well above its
//!   usual level cuts it (by half on leaving slow start, then by a tenth, or by a quarter when
//!   the round trip right after a cut is refused too), at most once a round trip, so a burst
//!   of refusals from one round counts once; a refused call holds its place for a round trip;
//! - **Retry-After**: when the limit is at its floor and Altinn still refuses, nothing goes
//!   out until the time Altinn asked for, capped at [`RETRY_AFTER_CAP`]. Above the floor,
//!   fewer calls in flight is the answer, and only the refused change waits (its own backoff).
//!
//! A fixed limit (`FLUSH_CONCURRENCY`) keeps the old behaviour. Maskinporten and the token
//! exchange are not counted: they are other services.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::telemetry::metrics;

/// The longest Altinn's `Retry-After` holds every call back.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(30);
/// Latency counts as rising once its recent average is this many times its usual level...
const LATENCY_TOLERANCE: f64 = 1.5;
/// ...and this much above it: Altinn's endpoints differ by tens of milliseconds, and a loaded
/// machine's scheduling adds as much; neither is congestion.
const LATENCY_MARGIN: Duration = Duration::from_millis(100);
/// The weight of each answer in the recent average, and in the usual level, which follows
/// Altinn slowly should its latency change over a night.
const RECENT_WEIGHT: f64 = 0.1;
const USUAL_WEIGHT: f64 = 0.02;
/// Cut on congestion after slow start, and on leaving it...
const BACKOFF: f64 = 0.9;
const SLOW_START_BACKOFF: f64 = 0.5;
/// ...and when Altinn still refuses in the round trip right after a cut: a limit far above
/// its capacity (a slow start that overshot) comes down in a few round trips, not a dozen.
const REPEATED_BACKOFF: f64 = 0.75;
/// No second cut within this, when no round trip has been measured yet.
const DEFAULT_ROUND_TRIP: Duration = Duration::from_millis(100);
/// A refused call holds its place at most this long.
const MAX_ROUND_TRIP: Duration = Duration::from_secs(1);

/// How the limit is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    /// Exactly this many calls in flight.
    Fixed(usize),
    /// Found between `min` and `max`, starting at `initial`.
    Adaptive {
        min: usize,
        initial: usize,
        max: usize,
    },
}

/// What became of one call, for the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// An answer that says nothing about Altinn's load: a success, or a refusal of the request
    /// itself (a 4xx), with its latency.
    Answered(Duration),
    /// 429, 503 or a timeout: Altinn is at its capacity.
    Overloaded { retry_after: Option<Duration> },
}

#[derive(Debug)]
struct State {
    limit: f64,
    in_flight: usize,
    slow_start: bool,
    /// Seconds, averaged over the last few answers and over many.
    recent: Option<f64>,
    usual: Option<f64>,
    /// No cut before this: one per round trip.
    calm_until: Option<Instant>,
    /// A cut after this is a repeated one.
    repeat_until: Option<Instant>,
    /// Nothing goes out before this.
    hold_until: Option<Instant>,
}

/// The shared limit on calls in flight; see the module docs.
#[derive(Debug)]
pub struct CallLimit {
    mode: Concurrency,
    state: Mutex<State>,
    freed: Notify,
}

/// One call's place in the limit; dropping it without [`CallPermit::finish`] just frees it.
#[must_use]
pub struct CallPermit<'a> {
    limit: &'a CallLimit,
    /// Calls in flight when this one went out, itself included.
    busy: usize,
}

impl Concurrency {
    fn bounds(self) -> (usize, usize, usize) {
        match self {
            Self::Fixed(n) => (n.max(1), n.max(1), n.max(1)),
            Self::Adaptive { min, initial, max } => {
                let min = min.max(1);
                let max = max.max(min);
                (min, initial.clamp(min, max), max)
            }
        }
    }
}

impl CallLimit {
    pub fn new(mode: Concurrency) -> Self {
        let (_, initial, _) = mode.bounds();
        metrics::set_concurrency_limit(initial);
        Self {
            mode,
            state: Mutex::new(State {
                #[allow(clippy::cast_precision_loss)] // a few hundred at most
                limit: initial as f64,
                in_flight: 0,
                slow_start: true,
                recent: None,
                usual: None,
                calm_until: None,
                repeat_until: None,
                hold_until: None,
            }),
            freed: Notify::new(),
        }
    }

    /// The number of calls that may be in flight now.
    pub fn current(&self) -> usize {
        whole(self.locked().limit)
    }

    /// The most calls that may ever be in flight: the adaptive limit's ceiling, or the fixed one.
    pub fn ceiling(&self) -> usize {
        self.mode.bounds().2
    }

    /// Waits for a place within the limit (and for any Retry-After hold to pass).
    pub async fn acquire(&self) -> CallPermit<'_> {
        loop {
            // Registered before looking, so a permit freed in between is not missed.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let hold = {
                let mut s = self.locked();
                let now = Instant::now();
                match s.hold_until {
                    Some(until) if until > now => Some(until),
                    _ => {
                        s.hold_until = None;
                        if s.in_flight < whole(s.limit) {
                            s.in_flight += 1;
                            return CallPermit {
                                limit: self,
                                busy: s.in_flight,
                            };
                        }
                        None
                    }
                }
            };
            match hold {
                Some(until) => tokio::time::sleep_until(until.into()).await,
                None => freed.await,
            }
        }
    }

    /// The recent latency of an answered call, within bounds.
    fn round_trip(&self) -> Duration {
        self.locked()
            .recent
            .map_or(DEFAULT_ROUND_TRIP, Duration::from_secs_f64)
            .clamp(Duration::from_millis(1), MAX_ROUND_TRIP)
    }

    fn locked(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn learn(&self, feedback: Feedback, busy: usize) {
        if matches!(self.mode, Concurrency::Fixed(_)) {
            return;
        }
        let (min, _, max) = self.mode.bounds();
        let mut s = self.locked();
        let before = whole(s.limit);
        let now = Instant::now();
        match feedback {
            Feedback::Answered(latency) => s.answered(latency, busy, now, min, max),
            Feedback::Overloaded { retry_after } => s.overloaded(retry_after, now, min),
        }
        let after = whole(s.limit);
        drop(s);
        if after != before {
            metrics::set_concurrency_limit(after);
            if after > before {
                self.freed.notify_waiters();
            }
        }
    }
}

impl State {
    fn answered(&mut self, latency: Duration, busy: usize, now: Instant, min: usize, max: usize) {
        let secs = latency.as_secs_f64();
        let average =
            |last: Option<f64>, weight: f64| last.map_or(secs, |a| a + weight * (secs - a));
        let (recent, usual) = (
            average(self.recent, RECENT_WEIGHT),
            average(self.usual, USUAL_WEIGHT),
        );
        self.recent = Some(recent);
        self.usual = Some(usual);
        if recent > usual * LATENCY_TOLERANCE && recent > usual + LATENCY_MARGIN.as_secs_f64() {
            self.cut(now, min);
            return;
        }
        // Only a limit in use grows: an idle one says nothing of what Altinn would take.
        #[allow(clippy::cast_precision_loss)]
        let used = busy as f64 >= self.limit / 2.0;
        if !used {
            return;
        }
        let step = if self.slow_start {
            1.0
        } else {
            1.0 / self.limit
        };
        #[allow(clippy::cast_precision_loss)]
        let max = max as f64;
        self.limit = (self.limit + step).min(max);
    }

    fn overloaded(&mut self, retry_after: Option<Duration>, now: Instant, min: usize) {
        // Refusals of calls sent before the last cut were answered already.
        if self.calm_until.is_some_and(|t| t > now) {
            return;
        }
        let at_floor = whole(self.limit) <= min;
        self.cut(now, min);
        if let (true, Some(wait)) = (at_floor, retry_after) {
            let until = now + wait.min(RETRY_AFTER_CAP);
            self.hold_until = Some(self.hold_until.map_or(until, |h| h.max(until)));
        }
    }

    /// At most once a round trip.
    fn cut(&mut self, now: Instant, min: usize) {
        if self.calm_until.is_some_and(|t| t > now) {
            return;
        }
        let factor = if self.slow_start {
            SLOW_START_BACKOFF
        } else if self.repeat_until.is_some_and(|t| t > now) {
            REPEATED_BACKOFF
        } else {
            BACKOFF
        };
        self.slow_start = false;
        #[allow(clippy::cast_precision_loss)]
        let min = min as f64;
        self.limit = (self.limit * factor).max(min);
        let round_trip = self
            .recent
            .map_or(DEFAULT_ROUND_TRIP, Duration::from_secs_f64)
            .max(Duration::from_millis(1));
        self.calm_until = Some(now + round_trip);
        self.repeat_until = Some(now + round_trip * 2);
    }
}

impl CallPermit<'_> {
    /// Frees the place, teaching the limit what the call's answer said. A refusal keeps its
    /// place for one round trip first: Altinn refuses at once, and a place freed at once would
    /// only carry the next refusal, so a burst of 429s would outrun the cut it caused.
    pub async fn finish(self, feedback: Feedback) {
        self.limit.learn(feedback, self.busy);
        if matches!(feedback, Feedback::Overloaded { .. }) {
            tokio::time::sleep(self.limit.round_trip()).await;
        }
    }
}

impl Drop for CallPermit<'_> {
    fn drop(&mut self) {
        self.limit.locked().in_flight -= 1;
        self.limit.freed.notify_one();
    }
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // bounded by `max`
fn whole(limit: f64) -> usize {
    limit.floor().max(1.0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adaptive() -> CallLimit {
        CallLimit::new(Concurrency::Adaptive {
            min: 2,
            initial: 4,
            max: 64,
        })
    }

    /// `n` calls in flight at once, each answered with `feedback`.
    async fn round(limit: &CallLimit, n: usize, feedback: Feedback) {
        let mut permits = Vec::new();
        for _ in 0..n.min(limit.current()) {
            permits.push(limit.acquire().await);
        }
        futures_util::future::join_all(permits.into_iter().map(|p| p.finish(feedback))).await;
    }

    const FAST: Feedback = Feedback::Answered(Duration::from_millis(100));

    #[tokio::test]
    async fn slow_start_grows_a_used_limit_by_half_or_more_each_round_up_to_the_ceiling() {
        let limit = adaptive();
        for _ in 0..8 {
            let before = limit.current();
            round(&limit, 64, FAST).await;
            assert!(
                limit.current() >= (before * 3 / 2).min(64),
                "{before} → {}",
                limit.current()
            );
        }
        assert_eq!(limit.current(), 64);
    }

    #[tokio::test]
    async fn an_idle_limit_does_not_grow() {
        let limit = adaptive();
        for _ in 0..100 {
            round(&limit, 1, FAST).await;
        }
        assert_eq!(limit.current(), 4);
    }

    #[tokio::test]
    async fn a_429_halves_slow_start_once_per_round_then_cuts_by_a_tenth() {
        let limit = adaptive();
        for _ in 0..4 {
            round(&limit, 64, FAST).await;
        }
        let grown = limit.current();
        assert!(grown >= 16, "{grown}");
        let refused = Feedback::Overloaded {
            retry_after: Some(Duration::from_secs(1)),
        };
        round(&limit, 64, refused).await;
        assert_eq!(
            limit.current(),
            grown / 2,
            "a burst from one round counts once"
        );
        // The next round's refusal, once the calm window has passed: right after a cut, a
        // quarter; later, a tenth.
        limit.locked().calm_until = None;
        round(&limit, 64, refused).await;
        let repeated = limit.current();
        assert_eq!(repeated, grown / 2 * 3 / 4);
        {
            let mut s = limit.locked();
            s.calm_until = None;
            s.repeat_until = None;
        }
        round(&limit, 64, refused).await;
        assert_eq!(limit.current(), repeated * 9 / 10);
    }

    #[tokio::test]
    async fn rising_latency_cuts_the_limit() {
        let limit = adaptive();
        for _ in 0..3 {
            round(&limit, 64, FAST).await;
        }
        let mut peak = limit.current();
        for _ in 0..20 {
            round(&limit, 64, Feedback::Answered(Duration::from_millis(500))).await;
            peak = peak.max(limit.current());
        }
        assert!(!limit.locked().slow_start, "the rise ended slow start");
        assert!(limit.current() < peak, "{} < {peak}", limit.current());
    }

    #[tokio::test]
    async fn retry_after_holds_every_call_only_at_the_floor() {
        let limit = adaptive();
        let refused = Feedback::Overloaded {
            retry_after: Some(Duration::from_secs(5)),
        };
        round(&limit, 64, refused).await;
        assert_eq!(limit.current(), 2);
        assert!(
            limit.locked().hold_until.is_none(),
            "above the floor: no hold"
        );
        limit.locked().calm_until = None;
        round(&limit, 64, refused).await;
        let hold = limit.locked().hold_until.expect("held at the floor");
        assert!(hold <= Instant::now() + Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_fixed_limit_never_moves() {
        let limit = CallLimit::new(Concurrency::Fixed(16));
        round(&limit, 64, FAST).await;
        round(&limit, 64, Feedback::Overloaded { retry_after: None }).await;
        assert_eq!(limit.current(), 16);
    }
}
