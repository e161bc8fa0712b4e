//! Planning a flush: the delta between desired and applied grants, written to the outbox.
//!
//! # Guarantees
//! - One transaction per firm, under a per-firm advisory lock: two replicas never plan the
//!   same firm at once, and a crashed one leaves no lock behind.
//! - At most one open change per grant key; an open change that is no longer needed (the
//!   desired state changed back) is superseded, unless a dispatcher holds it right now.

use sqlx::PgConnection;
use uuid::Uuid;

use super::Result;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    pub grants: u64,
    pub revokes: u64,
    pub superseded: u64,
}

/// Writes the firm's delta to the outbox, in the caller's transaction.
pub async fn plan_flush(conn: &mut PgConnection, firm: &str, cause: Uuid) -> Result<Planned> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('altinn-sync.flush:' || $1, 0))")
        .bind(firm)
        .execute(&mut *conn)
        .await?;
    let superseded = sqlx::query(
        r#"UPDATE outbox o SET status = 'superseded', finished_at = now()
           WHERE o.firm = $1 AND o.status = 'pending'
             AND (o.lease_until IS NULL OR o.lease_until < now())
             AND (o.action = 'grant') <> EXISTS (
                 SELECT 1 FROM desired_grants d
                 WHERE d.firm = o.firm AND d.employee_id = o.employee_id
                   AND d.client_org_number = o.client_org_number AND d.package = o.package)"#,
    )
    .bind(firm)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let grants = insert_changes(
        conn,
        firm,
        cause,
        "grant",
        r#"SELECT d.employee_id, d.client_org_number, d.package FROM desired_grants d
           WHERE d.firm = $1 AND NOT EXISTS (
               SELECT 1 FROM applied_grants a
               WHERE a.firm = d.firm AND a.employee_id = d.employee_id
                 AND a.client_org_number = d.client_org_number AND a.package = d.package)"#,
    )
    .await?;
    let revokes = insert_changes(
        conn,
        firm,
        cause,
        "revoke",
        r#"SELECT a.employee_id, a.client_org_number, a.package FROM applied_grants a
           WHERE a.firm = $1 AND NOT EXISTS (
               SELECT 1 FROM desired_grants d
               WHERE d.firm = a.firm AND d.employee_id = a.employee_id
                 AND d.client_org_number = a.client_org_number AND d.package = a.package)"#,
    )
    .await?;
    Ok(Planned {
        grants,
        revokes,
        superseded,
    })
}

/// Inserts an outbox row of `action` for each key `delta` selects that has no open change.
async fn insert_changes(
    conn: &mut PgConnection,
    firm: &str,
    cause: Uuid,
    action: &str,
    delta: &str,
) -> Result<u64> {
    let sql = format!(
        r#"INSERT INTO outbox (firm, employee_id, client_org_number, package, action, generation,
                               idempotency_key, cause)
           SELECT $1, k.employee_id, k.client_org_number, k.package, $3, g.generation,
                  concat_ws('/', $1, k.employee_id, k.client_org_number, k.package, $3,
                            g.generation),
                  $2
           FROM ({delta}) k
           CROSS JOIN LATERAL (
               SELECT coalesce(max(o.generation), 0) + 1 AS generation FROM outbox o
               WHERE o.firm = $1 AND o.employee_id = k.employee_id
                 AND o.client_org_number = k.client_org_number AND o.package = k.package
           ) g
           WHERE NOT EXISTS (
               SELECT 1 FROM outbox o
               WHERE o.firm = $1 AND o.employee_id = k.employee_id
                 AND o.client_org_number = k.client_org_number AND o.package = k.package
                 AND o.status IN ('pending', 'parked') AND o.action = $3)
           ON CONFLICT DO NOTHING"#
    );
    let inserted = sqlx::query(&sql)
        .bind(firm)
        .bind(cause)
        .bind(action)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(inserted)
}
