//! The audit, newest first, a page at a time: who got access when, and who did it.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use super::lists::when;
use super::{AUDIT_PAGE_MAX, Result};

/// Filters and paging; `before` is an audit id from `next_before`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this employee's entries.
    pub employee: Option<Uuid>,
    /// Only this client's entries (an organisation number).
    pub client: Option<String>,
    /// At most this many (default 50, at most 500).
    pub limit: Option<i64>,
    /// Entries older than this audit id.
    pub before: Option<i64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub employee_id: Uuid,
    pub client_org_number: String,
    pub package: String,
    pub action: String,
    pub outcome: String,
    pub detail: Option<String>,
    /// The admin token's name, or `worker`.
    pub actor: Option<String>,
    /// The command that planned the change.
    pub cause: Uuid,
    pub altinn_trace_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass as `before` for the next page; null on the last.
    pub next_before: Option<i64>,
}

pub(super) async fn page(pool: &PgPool, firm: &str, q: &AuditQuery) -> Result<AuditPage> {
    let limit = q.limit.unwrap_or(50).clamp(1, AUDIT_PAGE_MAX);
    let mut entries = sqlx::query_as!(
        AuditEntry,
        r#"SELECT id, at, employee_id, client_org_number AS "client_org_number!",
                  package AS "package!", action, outcome, detail, actor, cause AS "cause!",
                  altinn_trace_id
           FROM audit
           WHERE firm = $1 AND ($2::uuid IS NULL OR employee_id = $2)
             AND ($3::text IS NULL OR client_org_number = $3)
             AND ($4::bigint IS NULL OR id < $4)
           ORDER BY id DESC LIMIT $5"#,
        firm,
        q.employee,
        q.client.as_deref(),
        q.before,
        limit + 1
    )
    .fetch_all(pool)
    .await?;
    let more = entries.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    entries.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_before = if more {
        entries.last().map(|e| e.id)
    } else {
        None
    };
    Ok(AuditPage {
        entries,
        next_before,
    })
}

impl fmt::Display for AuditPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.entries.is_empty() {
            writeln!(f, "no audit entries")?;
        }
        for e in &self.entries {
            writeln!(
                f,
                "{} {} {} {} {} employee={} client={} by {}{}",
                e.id,
                when(&e.at),
                e.action,
                e.package,
                e.outcome,
                e.employee_id,
                e.client_org_number,
                e.actor.as_deref().unwrap_or("worker"),
                e.detail
                    .as_deref()
                    .map_or_else(String::new, |d| format!(": {d}"))
            )?;
        }
        if let Some(b) = self.next_before {
            writeln!(f, "more: --before {b}")?;
        }
        Ok(())
    }
}
