//! Planning a flush: the delta between desired and applied grants, written to the outbox.
//!
//! # Guarantees
//! - One transaction per firm, under a per-firm advisory lock: two replicas never plan the
//!   same firm at once, and a crashed one leaves no lock behind.
//! - At most one open change per grant key; an open change that is no longer needed (the
//!   desired state changed back) is superseded, unless a dispatcher holds it right now.
//! - A parked change is not planned again in a loop; it is retried when its desired state
//!   changes, at the nightly reconcile, or when an operator asks.
//! - Every plan goes through the mass-revoke guard (`guard`); a staged revoke is not planned
//!   twice, and is superseded once its grant is wanted again.
//! - A plan that saw every change of the firm's desired grants clears the automatic sync's
//!   marks (`auto`).

use sqlx::PgConnection;
use uuid::Uuid;

use super::guard::{Tripped, guard};
use super::parked::{Requeue, WORKER, lift_pause, requeue_parked};
use super::{FlushSettings, Result};
use crate::policy::Action;
use crate::telemetry;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    pub grants: u64,
    pub revokes: u64,
    pub superseded: u64,
    /// Parked grants retried because their desired state changed.
    pub requeued: u64,
    /// Revokes the mass-revoke guard staged in this plan.
    pub staged: u64,
    /// The guard's figures, when its threshold tripped.
    pub guard: Option<Tripped>,
}

/// Logs, once per plan, that the guard staged revokes. Counts only: no person is named.
pub(super) fn log_staged(firm: &str, planned: &Planned) {
    if planned.staged == 0 {
        return;
    }
    let t = planned.guard.unwrap_or_default();
    tracing::warn!(
        firm,
        revokes.staged = planned.staged,
        revokes.counted = t.revokes,
        revokes.recent = t.recent,
        grants.applied = t.grants,
        "mass-revoke guard: revokes staged; they wait for an operator to approve or reject them"
    );
}

/// Writes the firm's delta to the outbox, in the caller's transaction.
pub async fn plan_flush(
    conn: &mut PgConnection,
    firm: &str,
    cause: Uuid,
    settings: &FlushSettings,
) -> Result<Planned> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended('altinn-sync.flush:' || $1, 0))",
        firm
    )
    .execute(&mut *conn)
    .await?;
    // Read before the delta: a change ingested after this keeps the firm due for a sync.
    let changes = sqlx::query_scalar!(
        "SELECT desired_changes FROM firms WHERE org_number = $1",
        firm
    )
    .fetch_optional(&mut *conn)
    .await?;
    lift_pause(conn, firm).await?;
    let superseded = supersede_unneeded(conn, firm).await?;
    // A parked grant is retried once its desired state changes: the grant was wanted anew, or
    // AdminFlow corrected the person's identity that Altinn could not match.
    let requeued = requeue_parked(conn, firm, Requeue::WhoseDesiredStateChanged, WORKER).await?;
    // The delta is taken against what Altinn will hold once the changes on their way are
    // delivered (the last open change of a key decides), not against `applied_grants` alone:
    // a removal while its grant is being delivered must plan the revoke now, to follow it.
    let grants = insert_grants(conn, firm, cause).await?;
    let revokes = insert_revokes(conn, firm, cause).await?;
    let (staged, tripped) = guard(conn, firm, cause, settings).await?;
    if let Some(changes) = changes {
        super::auto::planned(conn, firm, changes).await?;
    }
    Ok(Planned {
        grants,
        revokes,
        superseded,
        requeued,
        staged,
        guard: tripped,
    })
}

/// Supersedes the open changes no longer needed (the desired state changed back), a parked one
/// too (a parked grant for a grant no longer wanted is moot), and a staged revoke whose grant
/// is wanted again; a change a dispatcher holds right now is left to it. Returns how many.
async fn supersede_unneeded(conn: &mut PgConnection, firm: &str) -> Result<u64> {
    let superseded = sqlx::query!(
        r#"UPDATE outbox o SET status = 'superseded', finished_at = now()
           WHERE o.firm = $1
             AND ((o.status = 'pending' AND (o.lease_until IS NULL OR o.lease_until < now()))
                  OR o.status IN ('parked', 'staged'))
             AND (o.action = 'grant') <> EXISTS (
                 SELECT 1 FROM desired_grants d
                 WHERE d.firm = o.firm AND d.employee_id = o.employee_id
                   AND d.client_org_number = o.client_org_number AND d.package = o.package)"#,
        firm
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(superseded)
}

// The two deltas below share their shape. Each inserts an outbox row for each key its inner
// query `k` selects, unless a change of the same action is parked for it (a parked change is
// retried on its own terms, never re-planned) or staged (it waits for an operator).
//
// In `k`, `last_open` is the last open change of each of the firm's grant keys that has one:
// what Altinn will hold once the changes on their way are delivered, in order. Keys without an
// open change are compared with `applied_grants` (each arm joins real tables, so PostgreSQL can
// hash them); keys with open changes are decided by the last of them.

/// Plans a grant for each key desired but neither applied nor on its way, and for each key
/// whose last open change is a revoke although it is desired again. Returns how many.
async fn insert_grants(conn: &mut PgConnection, firm: &str, cause: Uuid) -> Result<u64> {
    let inserted = sqlx::query!(
        r#"INSERT INTO outbox (firm, employee_id, client_org_number, package, action, generation,
                               idempotency_key, cause)
           SELECT $1, k.employee_id, k.client_org_number, k.package, $3::text, g.generation,
                  concat_ws('/', $1, k.employee_id, k.client_org_number, k.package, $3,
                            g.generation),
                  $2
           FROM (WITH last_open AS MATERIALIZED (
                     SELECT DISTINCT ON (employee_id, client_org_number, package)
                            employee_id, client_org_number, package, action
                     FROM outbox WHERE firm = $1 AND status = 'pending'
                     ORDER BY employee_id, client_org_number, package, generation DESC)
                 SELECT d.employee_id, d.client_org_number, d.package FROM desired_grants d
                 WHERE d.firm = $1
                   AND NOT EXISTS (SELECT 1 FROM applied_grants a WHERE a.firm = $1
                                   AND a.employee_id = d.employee_id
                                   AND a.client_org_number = d.client_org_number
                                   AND a.package = d.package)
                   AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.firm = $1
                                   AND o.status = 'pending' AND o.employee_id = d.employee_id
                                   AND o.client_org_number = d.client_org_number
                                   AND o.package = d.package)
                 UNION ALL
                 SELECT l.employee_id, l.client_org_number, l.package FROM last_open l
                 WHERE l.action = 'revoke'
                   AND EXISTS (SELECT 1 FROM desired_grants d WHERE d.firm = $1
                               AND d.employee_id = l.employee_id
                               AND d.client_org_number = l.client_org_number
                               AND d.package = l.package)) k
           CROSS JOIN LATERAL (
               SELECT coalesce(max(o.generation), 0) + 1 AS generation FROM outbox o
               WHERE o.firm = $1 AND o.employee_id = k.employee_id
                 AND o.client_org_number = k.client_org_number AND o.package = k.package
           ) g
           WHERE NOT EXISTS (
               SELECT 1 FROM outbox o
               WHERE o.firm = $1 AND o.employee_id = k.employee_id
                 AND o.client_org_number = k.client_org_number AND o.package = k.package
                 AND o.status IN ('parked', 'staged') AND o.action = $3)
           ON CONFLICT DO NOTHING"#,
        firm,
        cause,
        Action::Grant.as_str()
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(inserted)
}

/// Plans a revoke for each key applied but neither desired nor on its way, and for each key
/// whose last open change is a grant although it is no longer desired. Returns how many.
async fn insert_revokes(conn: &mut PgConnection, firm: &str, cause: Uuid) -> Result<u64> {
    let inserted = sqlx::query!(
        r#"INSERT INTO outbox (firm, employee_id, client_org_number, package, action, generation,
                               idempotency_key, cause)
           SELECT $1, k.employee_id, k.client_org_number, k.package, $3::text, g.generation,
                  concat_ws('/', $1, k.employee_id, k.client_org_number, k.package, $3,
                            g.generation),
                  $2
           FROM (WITH last_open AS MATERIALIZED (
                     SELECT DISTINCT ON (employee_id, client_org_number, package)
                            employee_id, client_org_number, package, action
                     FROM outbox WHERE firm = $1 AND status = 'pending'
                     ORDER BY employee_id, client_org_number, package, generation DESC)
                 SELECT a.employee_id, a.client_org_number, a.package FROM applied_grants a
                 WHERE a.firm = $1
                   AND NOT EXISTS (SELECT 1 FROM desired_grants d WHERE d.firm = $1
                                   AND d.employee_id = a.employee_id
                                   AND d.client_org_number = a.client_org_number
                                   AND d.package = a.package)
                   AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.firm = $1
                                   AND o.status = 'pending' AND o.employee_id = a.employee_id
                                   AND o.client_org_number = a.client_org_number
                                   AND o.package = a.package)
                 UNION ALL
                 SELECT l.employee_id, l.client_org_number, l.package FROM last_open l
                 WHERE l.action = 'grant'
                   AND NOT EXISTS (SELECT 1 FROM desired_grants d WHERE d.firm = $1
                                   AND d.employee_id = l.employee_id
                                   AND d.client_org_number = l.client_org_number
                                   AND d.package = l.package)) k
           CROSS JOIN LATERAL (
               SELECT coalesce(max(o.generation), 0) + 1 AS generation FROM outbox o
               WHERE o.firm = $1 AND o.employee_id = k.employee_id
                 AND o.client_org_number = k.client_org_number AND o.package = k.package
           ) g
           WHERE NOT EXISTS (
               SELECT 1 FROM outbox o
               WHERE o.firm = $1 AND o.employee_id = k.employee_id
                 AND o.client_org_number = k.client_org_number AND o.package = k.package
                 AND o.status IN ('parked', 'staged') AND o.action = $3)
           ON CONFLICT DO NOTHING"#,
        firm,
        cause,
        Action::Revoke.as_str()
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(inserted)
}

/// The changes the transaction plans record the current span's trace (`outbox.traceparent`
/// defaults to this setting), so their delivery joins it, later or on another replica.
pub(super) async fn trace_planning(conn: &mut sqlx::PgConnection) -> Result<()> {
    if let Some(traceparent) = telemetry::traceparent(&tracing::Span::current()) {
        sqlx::query!(
            "SELECT set_config('altinn_sync.traceparent', $1, true)",
            traceparent
        )
        .fetch_one(conn)
        .await?;
    }
    Ok(())
}
