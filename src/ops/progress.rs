//! Progress of a long flush, over every replica: done, left, pace and an estimated finish.
//!
//! Read from the outbox, not from this process's counters, so each replica logs the same
//! figures: the changes planned since the last look are the growth of the outbox's id, and
//! the changes done are what was left plus what was planned, less what is left now.

use std::time::{Duration, Instant};

use sqlx::PgPool;

use super::Result;
use crate::sync::OutboxCounts;

/// A flush with fewer changes left than this is not worth a progress line.
const PROGRESS_MIN: i64 = 2_000;

#[derive(Debug, Default)]
pub struct FlushProgress {
    last: Option<Seen>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    at: Instant,
    max_id: i64,
    left: i64,
}

/// One progress line's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Pace {
    done: i64,
    left: i64,
    per_s: f64,
    /// `None` while nothing is done.
    finish_in: Option<Duration>,
}

impl FlushProgress {
    /// Looks again; logs a line while a large flush is under way, and once as it ends.
    pub async fn observe(&mut self, pool: &PgPool, counts: &OutboxCounts) -> Result<()> {
        let max_id = sqlx::query_scalar!(r#"SELECT coalesce(max(id), 0) AS "max_id!" FROM outbox"#)
            .fetch_one(pool)
            .await?;
        let now = Seen {
            at: Instant::now(),
            max_id,
            left: counts.pending + counts.in_flight,
        };
        if let Some(p) = self.last.replace(now).and_then(|last| pace(last, now)) {
            let finish_in = p.finish_in.map(|d| format!("{}s", d.as_secs()));
            tracing::info!(
                done = p.done,
                left = p.left,
                per_s = format!("{:.0}", p.per_s),
                finish_in = finish_in.as_deref().unwrap_or("unknown"),
                "flush progress"
            );
        }
        Ok(())
    }
}

fn pace(last: Seen, now: Seen) -> Option<Pace> {
    if last.left < PROGRESS_MIN && now.left < PROGRESS_MIN {
        return None;
    }
    let planned = now.max_id - last.max_id;
    let done = (last.left + planned - now.left).max(0);
    let secs = now.at.duration_since(last.at).as_secs_f64();
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    let per_s = if secs > 0.0 { done as f64 / secs } else { 0.0 };
    #[allow(clippy::cast_precision_loss)]
    let finish_in = (per_s > 0.0).then(|| Duration::from_secs_f64(now.left as f64 / per_s));
    Some(Pace {
        done,
        left: now.left,
        per_s,
        finish_in,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(at: Instant, max_id: i64, left: i64) -> Seen {
        Seen { at, max_id, left }
    }

    #[test]
    fn done_counts_what_was_planned_meanwhile_and_the_finish_follows_the_pace() {
        let t = Instant::now();
        let p = pace(
            seen(t, 10_000, 5_000),
            seen(t + Duration::from_secs(10), 11_000, 4_000),
        )
        .unwrap();
        assert_eq!(p.done, 2_000);
        assert_eq!(p.left, 4_000);
        assert!((p.per_s - 200.0).abs() < 1e-9);
        assert_eq!(p.finish_in, Some(Duration::from_secs(20)));
    }

    #[test]
    fn a_small_flush_logs_nothing_and_the_end_of_a_large_one_logs_once() {
        let t = Instant::now();
        let later = t + Duration::from_secs(15);
        assert!(pace(seen(t, 0, 10), seen(later, 5, 3)).is_none());
        let end = pace(seen(t, 0, 3_000), seen(later, 0, 0)).unwrap();
        assert_eq!((end.done, end.left), (3_000, 0));
        assert_eq!(end.finish_in, Some(Duration::ZERO));
    }
}
