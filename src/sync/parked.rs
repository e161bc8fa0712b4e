//! Parked changes: what Altinn refused for good, with the explanation, and re-queuing them.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::Result;

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
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
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
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
    let rows = sqlx::query_as!(
        PausedFirm,
        r#"SELECT f.org_number AS firm, f.flush_paused_at AS "since!",
                  f.flush_paused_until AS until, f.flush_pause_reason AS reason,
                  (SELECT count(*) FROM outbox o
                   WHERE o.firm = f.org_number AND o.status = 'pending') AS "pending!"
           FROM firms f
           WHERE f.flush_paused_at IS NOT NULL AND ($1::text IS NULL OR f.org_number = $1)
           ORDER BY f.org_number"#,
        firm
    )
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// Parked changes, newest first, optionally for one firm.
pub async fn parked(pool: &PgPool, firm: Option<&str>) -> Result<Vec<Parked>> {
    let rows = sqlx::query_as!(
        Parked,
        r#"SELECT id, firm, employee_id, client_org_number, package, action, explanation,
                  attempts, finished_at AS parked_at
           FROM outbox
           WHERE status = 'parked' AND ($1::text IS NULL OR firm = $1)
           ORDER BY finished_at DESC, id DESC"#,
        firm
    )
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

/// The actor of what the worker does by itself, in the audit.
pub const WORKER: &str = "worker";

/// Which parked changes [`requeue_parked`] puts back in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// Every one (the nightly reconcile, as the help page promises).
    All,
    /// One, by its outbox id (an operator's `retry --id`).
    One(i64),
    /// Grants whose desired state changed since they were parked: the grant was wanted anew,
    /// or AdminFlow corrected the person's identity that Altinn could not match.
    WhoseDesiredStateChanged,
}

/// Puts a firm's parked changes back in the queue, due now. A change whose key already has a
/// newer one on its way stays parked. Returns how many were re-queued.
/// Each re-queued change gets an audit row naming `actor` (an admin token's name, or `worker`).
pub async fn requeue_parked(
    conn: &mut PgConnection,
    firm: &str,
    which: Requeue,
    actor: &str,
) -> Result<u64> {
    let (id, changed_only) = match which {
        Requeue::All => (None, false),
        Requeue::One(id) => (Some(id), false),
        Requeue::WhoseDesiredStateChanged => (None, true),
    };
    let requeued = sqlx::query_scalar!(
        r#"WITH requeued AS (
           UPDATE outbox o SET status = 'pending', next_attempt_at = now(), finished_at = NULL,
                               lease_until = NULL
           WHERE o.firm = $1 AND o.status = 'parked' AND ($2::bigint IS NULL OR o.id = $2)
             AND (NOT $3 OR (o.action = 'grant' AND (
                      EXISTS (SELECT 1 FROM desired_grants d
                              WHERE d.firm = o.firm AND d.employee_id = o.employee_id
                                AND d.client_org_number = o.client_org_number
                                AND d.package = o.package AND d.since > o.finished_at)
                      OR EXISTS (SELECT 1 FROM employee_identities e
                                 WHERE e.firm = o.firm AND e.employee_id = o.employee_id
                                   AND e.identity_changed_at > o.finished_at))))
             AND NOT EXISTS (SELECT 1 FROM outbox p
                             WHERE p.firm = o.firm AND p.employee_id = o.employee_id
                               AND p.client_org_number = o.client_org_number
                               AND p.package = o.package AND p.status = 'pending')
           RETURNING o.id, o.firm, o.employee_id, o.client_org_number, o.package, o.action,
                     o.cause
           ), audited AS (
               INSERT INTO audit (firm, employee_id, client_org_number, package, action,
                                  outcome, cause, outbox_id, detail, actor)
               SELECT firm, employee_id, client_org_number, package, action, 'requeued', cause,
                      id, 'parked change re-queued', $4
               FROM requeued
           )
           SELECT count(*) AS "requeued!" FROM requeued"#,
        firm,
        id,
        changed_only,
        actor
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(requeued.unsigned_abs())
}

/// A sync-now or retry is the moment to try a paused firm again: the pause ends now and the
/// firm's waiting changes are due. The pause itself is cleared by the first delivery.
pub async fn lift_pause(conn: &mut PgConnection, firm: &str) -> Result<()> {
    sqlx::query!(
        r#"WITH lifted AS (
               UPDATE firms SET flush_paused_until = now()
               WHERE org_number = $1 AND flush_paused_until > now()
               RETURNING org_number
           )
           UPDATE outbox SET next_attempt_at = now()
           WHERE firm IN (SELECT org_number FROM lifted) AND status = 'pending'
             AND next_attempt_at > now()"#,
        firm
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}
