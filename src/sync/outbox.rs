//! What the outbox holds, by state: the one query behind a firm's `status`, the outbox gauges
//! and the kill switch's count.

use sqlx::PgPool;

use super::Result;

/// Open outbox rows by state. `pending` never counts rows in flight, nor revokes the kill
/// switch holds (those are `held`).
#[derive(Debug, Clone, Copy, Default, PartialEq, sqlx::FromRow)]
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
    // Two fixed filters rather than `$2 IS NULL OR firm = $2`, which a generic plan could not
    // serve from the firm's index.
    let rows = match firm {
        Some(_) => "firm = $2 AND",
        None => "",
    };
    let sql = format!(
        r#"WITH o AS (
               SELECT status, action, created_at, lease_until > now() AS leased FROM outbox
               WHERE {rows} status IN ('pending', 'parked', 'staged'))
           SELECT
             (SELECT count(*) FROM o WHERE status = 'pending' AND leased IS NOT TRUE
                AND ($1 OR action = 'grant')) AS pending,
             (SELECT count(*) FROM o WHERE status = 'pending' AND leased) AS in_flight,
             (SELECT count(*) FROM o WHERE status = 'parked') AS parked,
             (SELECT count(*) FROM o WHERE status = 'staged') AS staged,
             (SELECT count(*) FROM o WHERE status = 'pending' AND leased IS NOT TRUE
                AND NOT $1 AND action = 'revoke') AS held,
             coalesce((SELECT extract(epoch FROM now() - min(created_at))::float8 FROM o
                       WHERE status = 'pending' AND ($1 OR action = 'grant')), 0)
               AS oldest_pending_secs"#
    );
    // `rows` is one of two constants above; every value is bound.
    let query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(revokes_enabled);
    let query = match firm {
        Some(f) => query.bind(f),
        None => query,
    };
    Ok(query.fetch_one(pool).await?)
}
