//! Operations: the queries and actions behind the CLI's `status`, `explain`, `plan`, `parked`,
//! `retry`, `staged`, `approve`, `reject`, `audit` and `sync`, and the admin API's routes.
//!
//! Each returns a typed, serialisable value: the CLI prints it (its `Display`), the API
//! serves it as JSON. Nothing here is written twice.

mod audit;
mod status;

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::state::{self, Explanation};
use crate::sync::{self, FlushSettings};

pub use audit::{AuditEntry, AuditPage, AuditQuery};
pub use status::{Hold, Pause, Status, SyncSummary};

/// The most audit entries one page holds.
pub const AUDIT_PAGE_MAX: i64 = 500;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("firm {0} is not known: no event for it has been applied")]
    UnknownFirm(String),
    #[error("no sync {command_id} for firm {firm}")]
    UnknownSync { firm: String, command_id: Uuid },
    #[error("database failure")]
    Database(#[from] state::Error),
    #[error("could not publish the command to RabbitMQ")]
    Publish(#[from] crate::publish::Error),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e.into())
    }
}

impl Error {
    /// PostgreSQL or RabbitMQ is down or refusing: worth a retry later (HTTP 503).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Database(_) | Self::Publish(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The worker's mode, which `explain` and `status` report on.
#[derive(Debug, Clone)]
pub struct Mode {
    /// The worker flushes to Altinn (the Altinn settings are configured).
    pub flush_on: bool,
    /// The guard's thresholds and the kill switch.
    pub flush: FlushSettings,
}

/// How long a worker's recorded mode counts as current: a few gauge refreshes.
const MODE_FRESH_SECS: f64 = 60.0;

impl Mode {
    /// Records this worker's mode (with its gauges), so the CLI can read it.
    pub async fn record(&self, pool: &PgPool, worker: &str) -> Result<()> {
        sqlx::query(
            r#"INSERT INTO worker_modes (worker, flush_on, revokes_enabled) VALUES ($1, $2, $3)
               ON CONFLICT (worker) DO UPDATE
               SET flush_on = excluded.flush_on, revokes_enabled = excluded.revokes_enabled,
                   seen_at = now()"#,
        )
        .bind(worker)
        .bind(self.flush_on)
        .bind(self.flush.revokes_enabled)
        .execute(pool)
        .await?;
        Ok(())
    }

    /// Forgets a stopping worker's mode, and any other long gone.
    pub async fn forget(pool: &PgPool, worker: &str) -> Result<()> {
        sqlx::query(
            "DELETE FROM worker_modes WHERE worker = $1 OR seen_at < now() - interval '1 day'",
        )
        .bind(worker)
        .execute(pool)
        .await?;
        Ok(())
    }

    /// The running workers' mode when any has recorded one lately (one flushing is enough;
    /// revokes go out if one worker sends them, as it claims them), else this process's own
    /// settings.
    pub async fn observed(mut self, pool: &PgPool) -> Result<Self> {
        let seen: (Option<bool>, Option<bool>) = sqlx::query_as(
            r#"SELECT bool_or(flush_on), bool_or(revokes_enabled) FROM worker_modes
               WHERE seen_at > now() - make_interval(secs => $1)"#,
        )
        .bind(MODE_FRESH_SECS)
        .fetch_one(pool)
        .await?;
        if let (Some(flush_on), Some(revokes_enabled)) = seen {
            self.flush_on = flush_on;
            self.flush.revokes_enabled = revokes_enabled;
        }
        Ok(self)
    }
}

/// The operations, over one pool.
#[derive(Debug, Clone)]
pub struct Ops {
    pool: PgPool,
    mode: Mode,
}

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

impl Ops {
    pub fn new(pool: PgPool, mode: Mode) -> Self {
        Self { pool, mode }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Fails with [`Error::UnknownFirm`] for a firm no event has named.
    pub async fn known(&self, firm: &str) -> Result<()> {
        let known: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM firms WHERE org_number = $1)")
                .bind(firm)
                .fetch_one(&self.pool)
                .await?;
        if known {
            Ok(())
        } else {
            Err(Error::UnknownFirm(firm.to_owned()))
        }
    }

    pub async fn status(&self, firm: &str) -> Result<Status> {
        self.known(firm).await?;
        status::status(&self.pool, firm, self.mode.flush.revokes_enabled).await
    }

    pub async fn sync_summary(&self, firm: &str, command_id: Uuid) -> Result<SyncSummary> {
        self.known(firm).await?;
        status::sync_summary(&self.pool, firm, command_id)
            .await?
            .ok_or_else(|| Error::UnknownSync {
                firm: firm.to_owned(),
                command_id,
            })
    }

    pub async fn explain(&self, firm: &str, employee: Uuid) -> Result<Explanation> {
        let how = state::ExplainMode {
            flush_on: self.mode.flush_on,
            revokes_enabled: self.mode.flush.revokes_enabled,
        };
        state::explain(&self.pool, firm, employee, how)
            .await?
            .ok_or_else(|| Error::UnknownFirm(firm.to_owned()))
    }

    pub async fn plan(&self, firm: &str) -> Result<sync::Preview> {
        self.known(firm).await?;
        Ok(sync::preview(&self.pool, firm, &self.mode.flush).await?)
    }

    pub async fn parked(&self, firm: &str) -> Result<ParkedList> {
        self.known(firm).await?;
        parked_list(&self.pool, Some(firm)).await
    }

    /// Re-queues the firm's parked changes (or one), with an audit row each naming `actor`.
    pub async fn retry(&self, firm: &str, id: Option<i64>, actor: &str) -> Result<Count> {
        self.known(firm).await?;
        let count = sync::retry(&self.pool, firm, id, actor).await?;
        Ok(Count { count })
    }

    pub async fn staged(&self, firm: &str) -> Result<StagedList> {
        self.known(firm).await?;
        Ok(StagedList {
            staged: sync::staged(&self.pool, firm).await?,
        })
    }

    pub async fn approve(&self, firm: &str, ids: Option<&[i64]>, actor: &str) -> Result<Count> {
        self.known(firm).await?;
        let count = sync::approve_staged(&self.pool, firm, ids, actor).await?;
        Ok(Count { count })
    }

    pub async fn reject(&self, firm: &str, ids: Option<&[i64]>, actor: &str) -> Result<Count> {
        self.known(firm).await?;
        let count = sync::reject_staged(&self.pool, firm, ids, actor).await?;
        Ok(Count { count })
    }

    pub async fn audit(&self, firm: &str, query: &AuditQuery) -> Result<AuditPage> {
        self.known(firm).await?;
        audit::page(&self.pool, firm, query).await
    }
}

/// Parked changes and paused firms, of one firm or of all.
pub async fn parked_list(pool: &PgPool, firm: Option<&str>) -> Result<ParkedList> {
    Ok(ParkedList {
        paused_firms: sync::paused(pool, firm).await?,
        parked_changes: sync::parked(pool, firm).await?,
    })
}

/// Publishes a `SyncNow` for `firm` and waits for the broker's confirm; returns its id.
pub async fn request_sync(
    amqp_url: &str,
    topology_prefix: &str,
    firm: &str,
    after_sequence: Option<i64>,
    requested_by: &str,
) -> Result<Uuid> {
    let command_id = Uuid::new_v4();
    let command = serde_json::json!({
        "command_id": command_id,
        "command_type": "SyncNow",
        "requested_at": now(),
        "requested_by": requested_by,
        "firm": {"org_number": firm},
        "after_sequence": after_sequence,
    });
    send_command(amqp_url, topology_prefix, &command).await?;
    Ok(command_id)
}

/// Publishes a `NightlyReconcile`, for one firm or (without) every firm; returns its id.
pub async fn request_reconcile(
    amqp_url: &str,
    topology_prefix: &str,
    firm: Option<&str>,
    requested_by: &str,
) -> Result<Uuid> {
    let command_id = Uuid::new_v4();
    let command = serde_json::json!({
        "command_id": command_id,
        "command_type": "NightlyReconcile",
        "requested_at": now(),
        "requested_by": requested_by,
        "firm": firm.map(|f| serde_json::json!({"org_number": f})),
    });
    send_command(amqp_url, topology_prefix, &command).await?;
    Ok(command_id)
}

async fn send_command(amqp_url: &str, prefix: &str, command: &serde_json::Value) -> Result<()> {
    let exchange = format!("{prefix}.commands");
    let kind = command["command_type"].as_str().unwrap_or_default();
    #[expect(clippy::expect_used, reason = "a json! value always serialises")]
    let body = serde_json::to_vec(command).expect("a JSON value serialises");
    crate::publish::publish(amqp_url, &exchange, kind, &body).await?;
    Ok(())
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
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
