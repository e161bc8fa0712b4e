//! What the outbox holds, by state: the one query behind a firm's `status`, the outbox gauges
//! and the kill switch's count.

use sqlx::PgPool;

use super::Result;

/// Open outbox rows by state. `pending` never counts rows in flight, nor revokes the kill
/// switch holds (those are `held`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OutboxCounts {
    pub pending: i64,
    pub in_flight: i64,
    pub parked: i64,
    pub staged: i64,
    pub held: i64,
    /// Age of the oldest change waiting to be sent (0 when none).
    pub oldest_pending_secs: f64,
}

/// The counts for `firm`, or for every firm. `revokes_enabled` is the kill switch.
pub async fn outbox_counts(
    pool: &PgPool,
    firm: Option<&str>,
    revokes_enabled: bool,
) -> Result<OutboxCounts> {
    // Two fixed queries rather than `$2 IS NULL OR firm = $2`, which a generic plan could not
    // serve from the firm's index.
    let counts = match firm {
        Some(firm) => firm_counts(pool, firm, revokes_enabled).await?,
        None => every_firms_counts(pool, revokes_enabled).await?,
    };
    Ok(counts)
}

async fn firm_counts(pool: &PgPool, firm: &str, revokes_enabled: bool) -> Result<OutboxCounts> {
    let counts = sqlx::query_as!(
        OutboxCounts,
        r#"WITH o AS (
               SELECT status, action, created_at, lease_until > now() AS leased FROM outbox
               WHERE firm = $2 AND status IN ('pending', 'parked', 'staged'))
           SELECT
             (SELECT count(*) FROM o WHERE status = 'pending' AND leased IS NOT TRUE
                AND ($1 OR action = 'grant')) AS "pending!",
             (SELECT count(*) FROM o WHERE status = 'pending' AND leased) AS "in_flight!",
             (SELECT count(*) FROM o WHERE status = 'parked') AS "parked!",
             (SELECT count(*) FROM o WHERE status = 'staged') AS "staged!",
             (SELECT count(*) FROM o WHERE status = 'pending' AND leased IS NOT TRUE
                AND NOT $1 AND action = 'revoke') AS "held!",
             coalesce((SELECT extract(epoch FROM now() - min(created_at))::float8 FROM o
                       WHERE status = 'pending' AND ($1 OR action = 'grant')), 0)
               AS "oldest_pending_secs!""#,
        revokes_enabled,
        firm
    )
    .fetch_one(pool)
    .await?;
    Ok(counts)
}

async fn every_firms_counts(pool: &PgPool, revokes_enabled: bool) -> Result<OutboxCounts> {
    let counts = sqlx::query_as!(
        OutboxCounts,
        r#"WITH o AS (
               SELECT status, action, created_at, lease_until > now() AS leased FROM outbox
               WHERE status IN ('pending', 'parked', 'staged'))
           SELECT
             (SELECT count(*) FROM o WHERE status = 'pending' AND leased IS NOT TRUE
                AND ($1 OR action = 'grant')) AS "pending!",
             (SELECT count(*) FROM o WHERE status = 'pending' AND leased) AS "in_flight!",
             (SELECT count(*) FROM o WHERE status = 'parked') AS "parked!",
             (SELECT count(*) FROM o WHERE status = 'staged') AS "staged!",
             (SELECT count(*) FROM o WHERE status = 'pending' AND leased IS NOT TRUE
                AND NOT $1 AND action = 'revoke') AS "held!",
             coalesce((SELECT extract(epoch FROM now() - min(created_at))::float8 FROM o
                       WHERE status = 'pending' AND ($1 OR action = 'grant')), 0)
               AS "oldest_pending_secs!""#,
        revokes_enabled
    )
    .fetch_one(pool)
    .await?;
    Ok(counts)
}
