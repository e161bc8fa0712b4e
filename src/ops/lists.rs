//! Lists and counts the operations return, and how the CLI prints them.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::Result;
use crate::sync;

/// A count of changed rows, for approve, reject and retry.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct Count {
    pub count: u64,
}

/// What is parked, and which firms are paused.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ParkedList {
    pub paused_firms: Vec<sync::PausedFirm>,
    pub parked_changes: Vec<sync::Parked>,
}

/// The revokes the mass-revoke guard holds back.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StagedList {
    pub staged: Vec<sync::StagedRevoke>,
}

/// Parked changes and paused firms, of one firm or of all.
pub async fn parked_list(pool: &PgPool, firm: Option<&str>) -> Result<ParkedList> {
    Ok(ParkedList {
        paused_firms: sync::paused(pool, firm).await?,
        parked_changes: sync::parked(pool, firm).await?,
    })
}

/// A time as the CLI prints it.
pub(crate) fn when(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.count)
    }
}

impl fmt::Display for ParkedList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.paused_firms {
            writeln!(
                f,
                "firm {} PAUSED since {} ({} changes waiting): {}; next try {}, or at once on a \
                 sync-now or `altinn-sync retry --firm {}`",
                p.firm,
                when(&p.since),
                p.pending,
                p.reason
                    .as_deref()
                    .unwrap_or("Altinn refused the system user"),
                p.until.as_ref().map_or_else(|| "now".to_owned(), when),
                p.firm
            )?;
        }
        if self.parked_changes.is_empty() {
            writeln!(f, "no parked changes")?;
        }
        for r in &self.parked_changes {
            writeln!(
                f,
                "{} firm={} employee={} client={} {} {} (attempts {}): {}",
                r.id,
                r.firm,
                r.employee_id,
                r.client_org_number,
                r.action,
                r.package,
                r.attempts,
                r.explanation.as_deref().unwrap_or("-")
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for StagedList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.staged.is_empty() {
            return writeln!(f, "no staged revokes");
        }
        for s in &self.staged {
            writeln!(
                f,
                "{} employee={} client={} revoke {} staged {}",
                s.id,
                s.employee_id,
                s.client_org_number,
                s.package,
                s.staged_at.as_ref().map_or_else(|| "-".to_owned(), when)
            )?;
        }
        Ok(())
    }
}

/// Prints a dry run as the CLI's `plan` does.
pub fn render_plan(plan: &sync::Preview) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (what, changes) in [
        ("grant", &plan.grants),
        ("revoke", &plan.revokes),
        ("staged revoke", &plan.staged_revokes),
    ] {
        for c in changes {
            let _ = writeln!(
                out,
                "{what} {} employee={} client={}",
                c.package, c.employee_id, c.client_org_number
            );
        }
    }
    let _ = writeln!(
        out,
        "{} grants, {} revokes, {} staged revokes (dry run: nothing changed)",
        plan.grants.len(),
        plan.revokes.len(),
        plan.staged_revokes.len()
    );
    out
}
