//! The flush to Altinn: commands become outbox rows, and a dispatcher delivers them.
//!
//! ```text
//! commands (SyncNow) ──▶ plan: desired_grants − applied_grants ──▶ outbox
//! outbox ──claim (SKIP LOCKED, lease)──▶ Altinn ──▶ outcome + applied_grants + audit
//! ```
//!
//! Built so far: `SyncNow` (with `after_sequence`) plans a firm's delta, and the dispatcher
//! delivers grants and revokes with retries, parking and make-before-break ordering. Not yet:
//! `NightlyReconcile` (it stays recorded, unhandled) and removing idle agents.

mod dispatch;
mod parked;
mod plan;

use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use dispatch::{Dispatcher, Step};
pub use parked::{parked, retry, Parked};
pub use plan::{plan_flush, Planned};

use crate::state;

/// How long a `SyncNow` waits for the firm's events up to its `after_sequence`.
const AFTER_SEQUENCE_WAIT: Duration = Duration::from_secs(30);
/// Rows claimed per dispatch step.
const CLAIM: i64 = 100;

pub type Result<T, E = state::Error> = std::result::Result<T, E>;

/// Flush settings; every flag is also an environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct FlushSettings {
    /// First wait after a failed delivery, in milliseconds; it doubles (with jitter) per attempt.
    #[arg(long, env = "FLUSH_RETRY_INITIAL_MS", default_value_t = 1000)]
    pub flush_retry_initial_ms: u64,
    /// Longest wait between delivery attempts, in seconds.
    #[arg(long, env = "FLUSH_RETRY_MAX_SECS", default_value_t = 600)]
    pub flush_retry_max_secs: u64,
}

impl Default for FlushSettings {
    fn default() -> Self {
        Self {
            flush_retry_initial_ms: 1000,
            flush_retry_max_secs: 600,
        }
    }
}

#[derive(sqlx::FromRow)]
struct PendingSyncNow {
    id: Uuid,
    firm: String,
    after: Option<i64>,
    received: chrono::DateTime<chrono::Utc>,
    /// The firm's high-water mark now, to honour `after_sequence`.
    high_water: i64,
}

/// Plans every `SyncNow` that is ready, oldest first. Several for one firm become one flush.
/// Returns how many commands were handled.
pub async fn handle_commands(pool: &PgPool) -> Result<usize> {
    let pending: Vec<PendingSyncNow> = sqlx::query_as(
        r#"SELECT c.command_id AS id, c.firm, c.after_sequence AS after,
                  c.received_at AS received, coalesce(f.high_water_sequence, -1) AS high_water
           FROM commands c LEFT JOIN firms f ON f.org_number = c.firm
           WHERE c.handled_at IS NULL AND c.command_type = 'SyncNow'
           ORDER BY c.received_at"#,
    )
    .fetch_all(pool)
    .await?;
    let mut handled = 0;
    for PendingSyncNow {
        id,
        firm,
        after,
        received,
        high_water,
    } in pending
    {
        let waited = chrono::Utc::now() - received;
        let caught_up = after.is_none_or(|a| high_water >= a);
        if !caught_up && waited.to_std().unwrap_or_default() < AFTER_SEQUENCE_WAIT {
            continue;
        }
        let mut tx = pool.begin().await?;
        let planned = plan_flush(&mut tx, &firm, id).await?;
        let outcome = format!(
            "planned {} grants and {} revokes{}",
            planned.grants,
            planned.revokes,
            if caught_up {
                ""
            } else {
                "; after_sequence was not reached in time"
            }
        );
        // Every SyncNow of this firm received so far joins this flush.
        sqlx::query(
            r#"UPDATE commands SET handled_at = now(), outcome = $2
               WHERE firm = $1 AND command_type = 'SyncNow' AND handled_at IS NULL
                 AND received_at <= $3"#,
        )
        .bind(&firm)
        .bind(&outcome)
        .bind(received)
        .execute(&mut *tx)
        .await?;
        sqlx::query("SELECT pg_notify('altinn_sync_flushed', $1)")
            .bind(&firm)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(firm, command.id = %id, planned.grants, planned.revokes,
            planned.superseded, "sync-now planned");
        handled += 1;
    }
    Ok(handled)
}

/// Handles commands and dispatches until `shutdown`, waking on ingest commits and every second
/// for retries that come due.
pub async fn run(pool: PgPool, dispatcher: Dispatcher, shutdown: CancellationToken) -> Result<()> {
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen("altinn_sync_ingested").await?;
    loop {
        if let Err(e) = round(&pool, &dispatcher).await {
            if !e.is_retryable() {
                return Err(e);
            }
            tracing::warn!(error = %e, "flush round failed; retrying");
        }
        let tick = Instant::now() + Duration::from_secs(1);
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = listener.recv() => {}
            () = tokio::time::sleep_until(tick) => {}
        }
    }
}

async fn round(pool: &PgPool, dispatcher: &Dispatcher) -> Result<()> {
    handle_commands(pool).await?;
    while let Step::Processed(_) = dispatcher.step(CLAIM).await? {}
    Ok(())
}
