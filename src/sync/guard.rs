//! The mass-revoke guard: a plan that would remove much of a firm's access at once stages the
//! firm's revokes for an operator to approve or reject, instead of sending them. Entra ID calls
//! this accidental-deletion prevention; a wrong export from AdminFlow, or a first reconcile that
//! adopts access given by hand, must not strip a firm's accountants of their clients overnight.
//!
//! # Guarantees
//! - H is the firm's mapped grants in `applied_grants` (what Altinn holds as far as the worker
//!   knows, after the reading for a reconcile). R is the firm's revokes not approved that are
//!   open (this plan's, and earlier ones not sent yet, O) or were delivered in the last 24 hours
//!   (D), so a mass removal cut into slices is caught too. E and C are the distinct employees and
//!   clients those R revokes concern. Every unsent, unapproved revoke of the firm is staged when
//!   - the firm would be emptied: O > 0 takes all H, and E ≥ 2 and C ≥ 2; or
//!   - R ≥ `REVOKE_GUARD_MIN` and R > `REVOKE_GUARD_SHARE` × (H + D), the firm's access before
//!     them, and E and C both reach `REVOKE_GUARD_SPREAD`.
//!
//!   So revokes that all concern one employee (someone left) or one client (it left the firm)
//!   never trip it at the defaults, however large the firm (`docs/design.md`, "Guard rails").
//! - Grants are never staged; a revoke a dispatcher holds right now is left to it.
//! - An approved revoke is not staged again. A revoke planned again after a rejection is staged
//!   again, whatever the threshold says: the operator asked for it not to go out.
//! - A staged revoke whose grant is wanted again is superseded by the next plan (`plan`).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::{FlushSettings, Result};

/// Whether the figures trip the guard: the firm emptied (O > 0 takes all H, E ≥ 2, C ≥ 2), or
/// R ≥ `min` and R > `share` × (H + D) with E and C both at least `spread`.
pub fn guard_trips(f: &Tripped, min: u64, share: f64, spread: u64) -> bool {
    let open = f.revokes.saturating_sub(f.recent);
    let emptied = open > 0 && open >= f.grants && f.employees >= 2 && f.clients >= 2;
    // share × (H + D) to a millionth, so that 0.29 × 100 is 29 and not 28.999999999999996.
    #[allow(clippy::cast_precision_loss)]
    let limit = (share * (f.grants + f.recent) as f64 * 1e6).round() / 1e6;
    #[allow(clippy::cast_precision_loss)]
    let r = f.revokes as f64;
    let spread = f.employees >= spread && f.clients >= spread;
    emptied || (spread && f.revokes >= min && r > limit)
}

/// The figures the guard judges a plan by.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tripped {
    /// R: open revokes not approved, plus those sent without approval in the last 24 hours.
    pub revokes: u64,
    /// D: of which sent in the last 24 hours.
    pub recent: u64,
    /// H: the firm's mapped grants in Altinn as far as the worker knows.
    pub grants: u64,
    /// E: the distinct employees the R revokes concern.
    pub employees: u64,
    /// C: the distinct clients the R revokes concern.
    pub clients: u64,
}

/// Stages what the guard holds back, in the plan's transaction. Returns how many revokes it
/// staged now, and the figures when the threshold tripped.
pub(super) async fn guard(
    conn: &mut PgConnection,
    firm: &str,
    cause: Uuid,
    settings: &FlushSettings,
) -> Result<(u64, Option<Tripped>)> {
    let restaged = stage_rejected_again(conn, firm, cause).await?;
    let tripped = figures(conn, firm).await?;
    if !guard_trips(
        &tripped,
        settings.revoke_guard_min,
        settings.revoke_guard_share,
        settings.revoke_guard_spread,
    ) {
        return Ok((restaged, None));
    }
    let detail = format!(
        "held by the mass-revoke guard: {} revokes ({} of them sent in the last 24 hours) \
         of {} employees on {} clients, against {} grants in Altinn",
        tripped.revokes, tripped.recent, tripped.employees, tripped.clients, tripped.grants
    );
    let staged = stage_all(conn, firm, cause, &detail).await?;
    Ok((restaged + staged, Some(tripped)))
}

/// H, R, D, E and C, as the guard counts them; by the firm's outbox index.
async fn figures(conn: &mut PgConnection, firm: &str) -> Result<Tripped> {
    let counts = sqlx::query!(
        r#"WITH r AS (
               SELECT o.employee_id, o.client_org_number, o.status FROM outbox o
               WHERE o.firm = $1 AND o.action = 'revoke' AND o.approved_by IS NULL
                 AND (o.status IN ('pending', 'staged')
                      OR (o.status = 'delivered'
                          AND o.finished_at > now() - interval '24 hours'))
           )
           SELECT (SELECT count(*) FROM applied_grants a
                   WHERE a.firm = $1 AND a.package IN (SELECT package FROM role_mapping))
                    AS "grants!",
                  (SELECT count(*) FROM r) AS "revokes!",
                  (SELECT count(*) FROM r WHERE r.status = 'delivered') AS "recent!",
                  (SELECT count(DISTINCT r.employee_id) FROM r) AS "employees!",
                  (SELECT count(DISTINCT r.client_org_number) FROM r) AS "clients!""#,
        firm
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(Tripped {
        revokes: counts.revokes.unsigned_abs(),
        recent: counts.recent.unsigned_abs(),
        grants: counts.grants.unsigned_abs(),
        employees: counts.employees.unsigned_abs(),
        clients: counts.clients.unsigned_abs(),
    })
}

/// Stages the revokes of keys whose last revoke an operator rejected: a new one waits for them
/// again, whatever the threshold says. Each gets an audit row. Returns how many.
async fn stage_rejected_again(conn: &mut PgConnection, firm: &str, cause: Uuid) -> Result<u64> {
    let staged = sqlx::query_scalar!(
        r#"WITH staged AS (
               UPDATE outbox o SET status = 'staged', staged_at = now()
               WHERE o.firm = $1 AND o.status = 'pending' AND o.action = 'revoke'
                 AND o.approved_by IS NULL
                 AND (o.lease_until IS NULL OR o.lease_until < now())
                 AND EXISTS (SELECT 1 FROM outbox r
                             WHERE r.firm = o.firm AND r.employee_id = o.employee_id
                               AND r.client_org_number = o.client_org_number
                               AND r.package = o.package AND r.generation = o.generation - 1
                               AND r.action = 'revoke' AND r.rejected_by IS NOT NULL)
               RETURNING o.id, o.firm, o.employee_id, o.client_org_number, o.package
           ), audited AS (
               INSERT INTO audit (firm, employee_id, client_org_number, package, action,
                                  outcome, cause, outbox_id, detail, actor)
               SELECT firm, employee_id, client_org_number, package, 'revoke', 'staged', $2,
                      id, $3, 'worker'
               FROM staged
           )
           SELECT count(*) AS "staged!" FROM staged"#,
        firm,
        cause,
        "planned again after a rejection"
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(staged.unsigned_abs())
}

/// Stages every unsent, unapproved revoke of the firm, with an audit row each giving `detail`.
/// Returns how many.
async fn stage_all(conn: &mut PgConnection, firm: &str, cause: Uuid, detail: &str) -> Result<u64> {
    let staged = sqlx::query_scalar!(
        r#"WITH staged AS (
               UPDATE outbox o SET status = 'staged', staged_at = now()
               WHERE o.firm = $1 AND o.status = 'pending' AND o.action = 'revoke'
                 AND o.approved_by IS NULL
                 AND (o.lease_until IS NULL OR o.lease_until < now())
               RETURNING o.id, o.firm, o.employee_id, o.client_org_number, o.package
           ), audited AS (
               INSERT INTO audit (firm, employee_id, client_org_number, package, action,
                                  outcome, cause, outbox_id, detail, actor)
               SELECT firm, employee_id, client_org_number, package, 'revoke', 'staged', $2,
                      id, $3, 'worker'
               FROM staged
           )
           SELECT count(*) AS "staged!" FROM staged"#,
        firm,
        cause,
        detail
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(staged.unsigned_abs())
}

/// A revoke the guard holds back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct StagedRevoke {
    /// The outbox id, for approving or rejecting this one.
    pub id: i64,
    pub employee_id: Uuid,
    pub client_org_number: String,
    pub package: String,
    pub staged_at: Option<DateTime<Utc>>,
    /// The command whose plan staged it.
    pub cause: Uuid,
}

/// The firm's staged revokes, oldest first.
pub async fn staged(pool: &PgPool, firm: &str) -> Result<Vec<StagedRevoke>> {
    let rows = sqlx::query_as!(
        StagedRevoke,
        r#"SELECT id, employee_id, client_org_number, package, staged_at, cause FROM outbox
           WHERE firm = $1 AND status = 'staged'
           ORDER BY id"#,
        firm
    )
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// Releases the firm's staged revokes (those of `ids`, or all): they are sent as soon as a
/// dispatcher claims them, and the guard never stages them again. Each gets an audit row with
/// `actor`. Returns how many.
pub async fn approve_staged(
    pool: &PgPool,
    firm: &str,
    ids: Option<&[i64]>,
    actor: &str,
) -> Result<u64> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query_scalar!(
        r#"WITH decided AS (
               UPDATE outbox o SET status = 'pending', approved_by = $3, approved_at = now(),
                                   next_attempt_at = now(), lease_until = NULL
               WHERE o.firm = $1 AND o.status = 'staged'
                 AND ($2::bigint[] IS NULL OR o.id = ANY($2))
                 AND NOT EXISTS (SELECT 1 FROM outbox p
                                 WHERE p.firm = o.firm AND p.employee_id = o.employee_id
                                   AND p.client_org_number = o.client_org_number
                                   AND p.package = o.package AND p.action = o.action
                                   AND p.status = 'pending')
               RETURNING o.id, o.firm, o.employee_id, o.client_org_number, o.package, o.cause
           ), audited AS (
               INSERT INTO audit (firm, employee_id, client_org_number, package, action,
                                  outcome, cause, outbox_id, actor)
               SELECT firm, employee_id, client_org_number, package, 'revoke', $4, cause, id,
                      $3
               FROM decided
           )
           SELECT count(*) AS "n!" FROM decided"#,
        firm,
        ids,
        actor,
        "approved"
    )
    .fetch_one(&mut *tx)
    .await?;
    decided(tx, firm, actor, "approved", n).await
}

/// Drops the firm's staged revokes (those of `ids`, or all): they are superseded, with an
/// audit row each naming `actor`. A plan that still finds the grant unwanted stages its revoke
/// again. Returns how many.
pub async fn reject_staged(
    pool: &PgPool,
    firm: &str,
    ids: Option<&[i64]>,
    actor: &str,
) -> Result<u64> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query_scalar!(
        r#"WITH decided AS (
               UPDATE outbox o SET status = 'superseded', finished_at = now(), rejected_by = $3
               WHERE o.firm = $1 AND o.status = 'staged'
                 AND ($2::bigint[] IS NULL OR o.id = ANY($2))
               RETURNING o.id, o.firm, o.employee_id, o.client_org_number, o.package, o.cause
           ), audited AS (
               INSERT INTO audit (firm, employee_id, client_org_number, package, action,
                                  outcome, cause, outbox_id, actor)
               SELECT firm, employee_id, client_org_number, package, 'revoke', $4, cause, id,
                      $3
               FROM decided
           )
           SELECT count(*) AS "n!" FROM decided"#,
        firm,
        ids,
        actor,
        "rejected"
    )
    .fetch_one(&mut *tx)
    .await?;
    decided(tx, firm, actor, "rejected", n).await
}

/// Ends an operator's decision on `n` staged revokes: wakes whoever follows the firm's flush,
/// commits, and logs the decision. Returns `n`.
async fn decided(
    mut tx: Transaction<'_, Postgres>,
    firm: &str,
    actor: &str,
    outcome: &str,
    n: i64,
) -> Result<u64> {
    sqlx::query!("SELECT pg_notify('altinn_sync_flushed', $1)", firm)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    if n > 0 {
        tracing::info!(firm, revokes = n, actor, outcome, "staged revokes decided");
    }
    Ok(n.unsigned_abs())
}

/// Revokes the kill switch holds: with `revokes_enabled` false, every open revoke not in flight
/// (of `firm`, or of every firm); with it true, none.
pub async fn held_revokes(pool: &PgPool, firm: Option<&str>, revokes_enabled: bool) -> Result<i64> {
    Ok(super::outbox::outbox_counts(pool, firm, revokes_enabled)
        .await?
        .held)
}
