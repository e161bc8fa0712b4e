//! Applying a firm's actual state: the drift counted, `applied_grants` aligned, the delta planned.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::sync::parked::{Requeue, WORKER, requeue_parked};
use crate::sync::plan::{Planned, plan_flush, trace_planning};
use crate::sync::{FlushSettings, Result};

/// One firm's second phase, in one transaction: drift counted against the facts, Altinn's
/// state made `applied_grants`, parked changes re-queued, the delta planned.
pub(super) struct Applied {
    pub(super) missing: u64,
    pub(super) extra: u64,
    pub(super) retried: u64,
    pub(super) planned: Planned,
}

/// Applies one firm's reading, begun at `read_at`; `None` when a newer reading of the firm has
/// been applied already (two reconciles on two replicas: the newer wins).
pub(super) async fn apply_firm(
    pool: &PgPool,
    firm: &str,
    cause: Uuid,
    read_at: DateTime<Utc>,
    settings: &FlushSettings,
) -> Result<Option<Applied>> {
    let mut tx = pool.begin().await?;
    // Everything here is planned again by the next reconcile or sync-now, so a crash may lose
    // the last few commits: no need to wait for each firm's flush to disk.
    sqlx::query!(r#"SET LOCAL synchronous_commit = off"#)
        .execute(&mut *tx)
        .await?;
    // The firm's planning lock (`plan_flush` takes it again, which is free) from the alignment
    // on: no other reconcile or sync-now of the firm plans between the two.
    lock_firm(&mut tx, firm).await?;
    let applied = if newer_reading_applied(&mut tx, firm, read_at).await? {
        tracing::info!(
            firm,
            "a newer reading of the firm was applied meanwhile; this one is left"
        );
        None
    } else {
        let (missing, extra) = align_applied(&mut tx, firm, cause, read_at).await?;
        // The help page promises that the nightly run tries refused changes again.
        let retried = requeue_parked(&mut tx, firm, Requeue::All, WORKER).await?;
        trace_planning(&mut tx).await?;
        let planned = plan_flush(&mut tx, firm, cause, settings).await?;
        Some(Applied {
            missing,
            extra,
            retried,
            planned,
        })
    };
    sqlx::query!(
        r#"DELETE FROM reconcile_actual WHERE command_id = $1 AND firm = $2"#,
        cause,
        firm
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(applied)
}

async fn lock_firm(conn: &mut PgConnection, firm: &str) -> Result<()> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended('altinn-sync.flush:' || $1, 0))",
        firm
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Whether a reading of the firm begun after `read_at` was applied already; if not, this one's
/// time is recorded as the firm's last. Under the firm's lock, so check and record are one.
async fn newer_reading_applied(
    conn: &mut PgConnection,
    firm: &str,
    read_at: DateTime<Utc>,
) -> Result<bool> {
    let stamped = sqlx::query_scalar!(
        r#"UPDATE firms SET reconcile_read_at = $2
           WHERE org_number = $1 AND (reconcile_read_at IS NULL OR reconcile_read_at <= $2)
           RETURNING org_number"#,
        firm,
        read_at
    )
    .fetch_optional(&mut *conn)
    .await?;
    if stamped.is_some() {
        return Ok(false);
    }
    // No stamp: either a newer reading holds the firm, or the firm has no row yet.
    let newer = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM firms WHERE org_number = $1 AND reconcile_read_at > $2)
             AS "newer!""#,
        firm,
        read_at
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(newer)
}

/// Counts the drift against the facts, then makes Altinn's state `applied_grants` by writing
/// only the differences (in a steady state, a handful of rows). Returns (missing, extra).
///
/// One statement, each of the firm's sets read once from its index. Keys a dispatcher is
/// delivering, or delivered since the read (the `NOT EXISTS` on `outbox`), keep what the
/// dispatcher recorded: the read may predate it.
async fn align_applied(
    conn: &mut PgConnection,
    firm: &str,
    cause: Uuid,
    read_at: DateTime<Utc>,
) -> Result<(u64, u64)> {
    let drift = sqlx::query!(
        r#"WITH actual AS MATERIALIZED (
               SELECT employee_id, client_org_number, package FROM reconcile_actual
               WHERE command_id = $3 AND firm = $1
           ), applied AS MATERIALIZED (
               SELECT employee_id, client_org_number, package FROM applied_grants
               WHERE firm = $1
           ), desired AS MATERIALIZED (
               SELECT employee_id, client_org_number, package FROM desired_grants
               WHERE firm = $1
           ), gone AS (
               SELECT * FROM applied EXCEPT SELECT * FROM actual
           ), new AS (
               SELECT * FROM actual EXCEPT SELECT * FROM applied
           ), forgotten AS (
               DELETE FROM applied_grants k USING gone g
               WHERE k.firm = $1 AND k.employee_id = g.employee_id
                 AND k.client_org_number = g.client_org_number AND k.package = g.package
                 AND NOT EXISTS (
                   SELECT 1 FROM outbox o
                   WHERE o.firm = $1 AND o.employee_id = k.employee_id
                     AND o.client_org_number = k.client_org_number AND o.package = k.package
                     AND ((o.status = 'pending' AND o.lease_until > now())
                          OR o.finished_at >= $2))
           ), learnt AS (
               INSERT INTO applied_grants (firm, employee_id, client_org_number, package)
               SELECT $1, k.employee_id, k.client_org_number, k.package FROM new k
               WHERE NOT EXISTS (
                   SELECT 1 FROM outbox o
                   WHERE o.firm = $1 AND o.employee_id = k.employee_id
                     AND o.client_org_number = k.client_org_number AND o.package = k.package
                     AND ((o.status = 'pending' AND o.lease_until > now())
                          OR o.finished_at >= $2))
               ON CONFLICT DO NOTHING
           )
           SELECT (SELECT count(*) FROM (SELECT * FROM desired EXCEPT SELECT * FROM actual) m)
                    AS "missing!",
                  (SELECT count(*) FROM (SELECT * FROM actual EXCEPT SELECT * FROM desired) e)
                    AS "extra!""#,
        firm,
        read_at,
        cause
    )
    .fetch_one(conn)
    .await?;
    Ok((drift.missing.unsigned_abs(), drift.extra.unsigned_abs()))
}
