//! A dry run of a firm's flush: planned exactly as a `SyncNow` would, then rolled back.

use sqlx::PgPool;
use uuid::Uuid;

use super::plan::plan_flush;
use super::{FlushSettings, Result};
use crate::policy::Action;

/// One change of a dry run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Change {
    pub employee_id: Uuid,
    pub client_org_number: String,
    pub package: String,
}

/// What a sync of the firm would leave on its way now: the open grants and revokes, and the
/// revokes the guard holds back.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Preview {
    pub grants: Vec<Change>,
    pub revokes: Vec<Change>,
    pub staged_revokes: Vec<Change>,
}

/// A dry run: plans the firm exactly as a `SyncNow` would, reads the outcome and rolls it all
/// back. It changes nothing, and waits while the firm is being planned.
pub async fn preview(pool: &PgPool, firm: &str, settings: &FlushSettings) -> Result<Preview> {
    let mut tx = pool.begin().await?;
    // The same lock plan_flush takes, tried: an API caller must not hold a connection queued
    // behind a sync's planning (plan_flush takes it again at no cost, being this transaction's).
    let free = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_xact_lock(hashtextextended('altinn-sync.flush:' || $1, 0))
             AS "free!""#,
        firm
    )
    .fetch_one(&mut *tx)
    .await?;
    if !free {
        return Err(super::Error::FirmBusy(firm.to_owned()));
    }
    plan_flush(&mut tx, firm, Uuid::nil(), settings).await?;
    let rows = sqlx::query!(
        r#"SELECT status, action AS "action: Action", employee_id, client_org_number, package
           FROM outbox
           WHERE firm = $1 AND status IN ('pending', 'staged')
           ORDER BY employee_id, client_org_number, package, generation"#,
        firm
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.rollback().await?;
    let mut preview = Preview::default();
    for row in rows {
        let change = Change {
            employee_id: row.employee_id,
            client_org_number: row.client_org_number,
            package: row.package,
        };
        match (row.status.as_str(), row.action) {
            ("staged", _) => preview.staged_revokes.push(change),
            (_, Action::Grant) => preview.grants.push(change),
            _ => preview.revokes.push(change),
        }
    }
    Ok(preview)
}
