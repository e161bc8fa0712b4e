//! The gauges computed from PostgreSQL, read here and set in [`crate::telemetry::metrics`].

use sqlx::PgPool;

use super::Result;
use crate::sync::{self, OutboxCounts};
use crate::telemetry::metrics;

struct Gauges {
    firms_paused: i64,
    oldest_pause: f64,
    last_reconcile: f64,
    dead_letters: i64,
}

/// Reads every PostgreSQL gauge: the outbox's counts, then the rest in one statement; returns
/// the outbox's counts.
pub async fn refresh_gauges(pool: &PgPool, revokes_enabled: bool) -> Result<OutboxCounts> {
    let o = sync::outbox_counts(pool, None, revokes_enabled).await?;
    let g = sqlx::query_as!(
        Gauges,
        r#"SELECT
             (SELECT count(*) FROM firms WHERE flush_paused_at IS NOT NULL) AS "firms_paused!",
             coalesce((SELECT extract(epoch FROM now() - min(flush_paused_at))::float8
                       FROM firms WHERE flush_paused_at IS NOT NULL), 0) AS "oldest_pause!",
             coalesce((SELECT extract(epoch FROM max(handled_at))::float8 FROM commands
                       WHERE command_type = 'NightlyReconcile' AND handled_at IS NOT NULL), 0)
               AS "last_reconcile!",
             (SELECT count(*) FROM dead_letters WHERE received_at > now() - interval '24 hours')
               AS "dead_letters!""#
    )
    .fetch_one(pool)
    .await?;
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    let f = |n: i64| n as f64;
    metrics::outbox(
        [
            ("pending", f(o.pending)),
            ("in_flight", f(o.in_flight)),
            ("parked", f(o.parked)),
            ("staged", f(o.staged)),
            ("held", f(o.held)),
        ],
        o.oldest_pending_secs,
    );
    metrics::firms(
        f(g.firms_paused),
        g.oldest_pause,
        g.last_reconcile,
        f(g.dead_letters),
    );
    Ok(o)
}
