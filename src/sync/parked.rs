//! Parked changes: what Altinn refused for good, with the explanation, and re-queuing them.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::Result;
use super::plan::{Requeue, lift_pause, requeue_parked};

#[derive(Debug, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Parked {
    pub id: i64,
    pub firm: String,
    pub employee_id: Uuid,
    pub client_org_number: String,
    pub package: String,
    pub action: String,
    pub explanation: Option<String>,
    pub attempts: i32,
    pub parked_at: Option<DateTime<Utc>>,
}

/// A firm whose flush is paused because Altinn refused its system user.
#[derive(Debug, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct PausedFirm {
    pub firm: String,
    pub since: DateTime<Utc>,
    pub until: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    /// Changes waiting for the firm.
    pub pending: i64,
}

/// Firms whose flush is paused, optionally only the one named.
pub async fn paused(pool: &PgPool, firm: Option<&str>) -> Result<Vec<PausedFirm>> {
    let rows = sqlx::query_as(
        r#"SELECT f.org_number AS firm, f.flush_paused_at AS since, f.flush_paused_until AS until,
                  f.flush_pause_reason AS reason,
                  (SELECT count(*) FROM outbox o
                   WHERE o.firm = f.org_number AND o.status = 'pending') AS pending
           FROM firms f
           WHERE f.flush_paused_at IS NOT NULL AND ($1::text IS NULL OR f.org_number = $1)
           ORDER BY f.org_number"#,
    )
    .bind(firm)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// Parked changes, newest first, optionally for one firm.
pub async fn parked(pool: &PgPool, firm: Option<&str>) -> Result<Vec<Parked>> {
    let rows = sqlx::query_as(
        r#"SELECT id, firm, employee_id, client_org_number, package, action, explanation,
                  attempts, finished_at AS parked_at
           FROM outbox
           WHERE status = 'parked' AND ($1::text IS NULL OR firm = $1)
           ORDER BY finished_at DESC, id DESC"#,
    )
    .bind(firm)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// Re-queues a firm's parked changes (or one of them) for the next dispatch, and ends the
/// firm's pause if it has one. A change whose key already has a newer one on its way stays
/// parked. Each gets an audit row naming `actor`. Returns how many were re-queued.
pub async fn retry(pool: &PgPool, firm: &str, id: Option<i64>, actor: &str) -> Result<u64> {
    let mut tx = pool.begin().await?;
    lift_pause(&mut tx, firm).await?;
    let which = id.map_or(Requeue::All, Requeue::One);
    let n = requeue_parked(&mut tx, firm, which, actor).await?;
    tx.commit().await?;
    Ok(n)
}
