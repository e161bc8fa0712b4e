//! The automatic sync, opt-in (`AUTO_SYNC_AFTER_SECS` = N): a firm whose desired grants changed
//! is synced N seconds after its last change, and at most [`CAP`] × N after its first unsynced
//! change, so a steady trickle of changes cannot put it off for ever. The sync is a `SyncNow`
//! recorded with `requested_by` = [`REQUESTED_BY`], planned and guarded like any other.
//!
//! # Guarantees
//! - Ingest marks the firm (`firms.desired_changed_*`) in the transaction that changes its
//!   desired grants, so no change goes unnoticed, whichever replica ingested it.
//! - Firing is one statement that claims the due firms with `FOR UPDATE SKIP LOCKED`, clears
//!   their marks and records the command: for each change exactly one replica fires.
//! - A plan of the firm (a sync-now, the nightly reconcile) that saw every change clears the
//!   marks, so a firm synced by hand is not synced again for nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::Result;

/// `requested_by` of the commands the automatic sync records.
pub const REQUESTED_BY: &str = "auto-sync";
/// The longest a firm waits after its first unsynced change, in debounces.
pub const CAP: u32 = 10;

/// Records a `SyncNow` for every firm that is due at `at` (the database's clock when `None`)
/// with the debounce `after`, and clears their marks. Returns those firms.
pub async fn auto_sync(
    pool: &PgPool,
    after: Duration,
    at: Option<DateTime<Utc>>,
) -> Result<Vec<String>> {
    let mut tx = pool.begin().await?;
    let firms: Vec<String> = sqlx::query_scalar!(
        r#"WITH due AS (
               SELECT org_number FROM firms
               WHERE desired_changed_first IS NOT NULL
                 AND (desired_changed_last
                          <= coalesce($1, now()) - make_interval(secs => $2)
                      OR desired_changed_first
                          <= coalesce($1, now()) - make_interval(secs => $3))
               ORDER BY org_number
               FOR UPDATE SKIP LOCKED
           ), cleared AS (
               UPDATE firms f SET desired_changed_first = NULL, desired_changed_last = NULL
               FROM due WHERE f.org_number = due.org_number
               RETURNING f.org_number
           )
           INSERT INTO commands (command_id, command_type, firm, requested_at, requested_by)
           SELECT gen_random_uuid(), 'SyncNow', org_number, now(), $4 FROM cleared
           RETURNING firm AS "firm!""#,
        at,
        after.as_secs_f64(),
        (after * CAP).as_secs_f64(),
        REQUESTED_BY
    )
    .fetch_all(&mut *tx)
    .await?;
    if !firms.is_empty() {
        // Every replica's sync-now planning wakes, as after ingest.
        sqlx::query!("SELECT pg_notify('altinn_sync_ingested', '')")
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    for firm in &firms {
        tracing::info!(
            firm,
            "desired grants changed; sync-now recorded by the automatic sync"
        );
    }
    Ok(firms)
}

/// After a plan that read the firm's desired grants when `changes` changes had been counted:
/// clears the marks unless a change was ingested since.
pub(super) async fn planned(conn: &mut PgConnection, firm: &str, changes: i64) -> Result<()> {
    sqlx::query!(
        r#"UPDATE firms SET desired_changed_first = NULL, desired_changed_last = NULL
           WHERE org_number = $1 AND desired_changes = $2 AND desired_changed_first IS NOT NULL"#,
        firm,
        changes
    )
    .execute(conn)
    .await?;
    Ok(())
}
