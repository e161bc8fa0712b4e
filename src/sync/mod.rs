//! The flush to Altinn: commands become outbox rows, and a dispatcher delivers them.
//!
//! ```text
//! commands (SyncNow) ──▶ plan: desired_grants − applied_grants ──▶ outbox
//! outbox ──claim (SKIP LOCKED, lease)──▶ Altinn ──▶ outcome + applied_grants + audit
//! ```
//!
//! `SyncNow` (with `after_sequence`) plans a firm's delta; `NightlyReconcile` first reads what
//! Altinn actually holds, so drift made by hand joins the delta. The dispatcher delivers grants
//! and revokes with retries, parking and make-before-break ordering, with bounded concurrency
//! overall and per firm. Removing idle agents is an opt-in policy (`idle`).
//!
//! Guard rails: the mass-revoke guard stages a plan's revokes for approval when they would
//! remove much of a firm's access (`guard`); the kill switch `REVOKES_ENABLED=false` holds
//! every revoke; the reconcile adopts agents given access by hand who are known employees; the
//! opt-in automatic sync records a `SyncNow` after a firm's desired grants change (`auto`).

mod auto;
mod dispatch;
mod guard;
mod idle;
mod outbox;
mod parked;
mod parties;
mod plan;
mod reconcile;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

pub use auto::{REQUESTED_BY as AUTO_SYNC_REQUESTED_BY, auto_sync};
pub use dispatch::{Dispatcher, Step};
pub use guard::{
    Change, Preview, StagedRevoke, Tripped, approve_staged, guard_trips, held_revokes, preview,
    reject_staged, staged,
};
pub use outbox::{OutboxCounts, outbox_counts};
pub use parked::{Parked, PausedFirm, parked, paused, retry};
pub use plan::{Planned, plan_flush};
pub use reconcile::{LeftAlone, Reconciled, Report, reconcile};

use crate::retry::RetryPolicy;
use crate::telemetry::metrics::{self, CommandOutcome};
use crate::{state, telemetry};

/// How long a `SyncNow` waits for the firm's events up to its `after_sequence`.
const AFTER_SEQUENCE_WAIT: Duration = Duration::from_secs(30);

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
    /// Altinn calls in flight at once, over all firms.
    #[arg(long, env = "FLUSH_CONCURRENCY", default_value_t = 16)]
    pub flush_concurrency: usize,
    /// How long a dispatcher holds the rows it claimed; a killed worker's rows are taken over
    /// after this. Longer than the slowest Altinn call with its retries on one connection.
    #[arg(long, env = "FLUSH_LEASE_SECS", default_value_t = 120)]
    pub flush_lease_secs: u64,
    /// Remove an employee with no access left to manage as the firm's agent in Altinn
    /// (`cascade=false`: a person holding packages this worker does not manage is left alone).
    #[arg(long, env = "REMOVE_IDLE_AGENTS", default_value_t = false)]
    pub remove_idle_agents: bool,
    /// Altinn calls in flight at once for any one firm.
    #[arg(long, env = "FLUSH_CONCURRENCY_PER_FIRM", default_value_t = 4)]
    pub flush_concurrency_per_firm: usize,
    /// Make before break: the longest a revoke on a client waits for the grant of the client's
    /// new project accountant, in seconds. After that it is delivered anyway.
    #[arg(long, env = "MAKE_BEFORE_BREAK_MAX_SECS", default_value_t = 900)]
    pub make_before_break_max_secs: u64,
    /// The kill switch: `false` plans revokes but never sends them (they wait in the outbox,
    /// held) and stops idle-agent removal; grants still go out. `true` again sends them.
    #[arg(long, env = "REVOKES_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub revokes_enabled: bool,
    /// The mass-revoke guard: a firm's revokes are staged for approval when this many or more
    /// are planned or were sent without approval in the last 24 hours...
    #[arg(long, env = "REVOKE_GUARD_MIN", default_value_t = 10)]
    pub revoke_guard_min: u64,
    /// ...and they are more than this share of the firm's grants in Altinn (0 to 1).
    #[arg(long, env = "REVOKE_GUARD_SHARE", default_value_t = 0.2, value_parser = share)]
    pub revoke_guard_share: f64,
    /// Sync a firm by itself this many seconds after its desired grants last changed (and at
    /// most ten times as long after the first unsynced change). Unset: only on request and at
    /// the nightly reconcile.
    #[arg(long, env = "AUTO_SYNC_AFTER_SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub auto_sync_after_secs: Option<u64>,
}

impl FlushSettings {
    /// The automatic sync's debounce, when it is on.
    pub fn auto_sync_after(&self) -> Option<Duration> {
        self.auto_sync_after_secs.map(Duration::from_secs)
    }
}

/// A share between 0 and 1.
fn share(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a share between 0 and 1")),
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
    /// The trace the command arrived with.
    traceparent: Option<String>,
}

/// Plans every `SyncNow` that is ready, oldest first. Several for one firm become one flush.
/// Returns how many commands were handled.
pub async fn handle_commands(pool: &PgPool, settings: &FlushSettings) -> Result<usize> {
    let pending: Vec<PendingSyncNow> = sqlx::query_as(
        r#"SELECT c.command_id AS id, c.firm, c.after_sequence AS after,
                  c.received_at AS received, coalesce(f.high_water_sequence, -1) AS high_water,
                  c.traceparent
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
        traceparent,
    } in pending
    {
        let waited = chrono::Utc::now() - received;
        let caught_up = after.is_none_or(|a| high_water >= a);
        if !caught_up && waited.to_std().unwrap_or_default() < AFTER_SEQUENCE_WAIT {
            continue;
        }
        let span = command_span("SyncNow", id, Some(&firm), traceparent.as_deref());
        async {
            let mut tx = pool.begin().await?;
            trace_planning(&mut tx).await?;
            let planned = plan_flush(&mut tx, &firm, id, settings).await?;
            let outcome = format!(
                "planned {} grants and {} revokes{}{}",
                planned.grants,
                planned.revokes,
                if planned.staged > 0 {
                    format!(
                        "; {} revokes staged by the mass-revoke guard, waiting for approval",
                        planned.staged
                    )
                } else {
                    String::new()
                },
                if caught_up {
                    ""
                } else {
                    "; after_sequence was not reached in time"
                }
            );
            // Every SyncNow of this firm received so far joins this flush, unless it waits for
            // events this plan has not seen: it is honoured once they are applied, or when its
            // wait runs out. (`high_water` was read before planning began.)
            sqlx::query(
                r#"UPDATE commands SET handled_at = now(), outcome = $2
                   WHERE command_id = $4
                      OR (firm = $1 AND command_type = 'SyncNow' AND handled_at IS NULL
                          AND received_at <= $3
                          AND (after_sequence IS NULL OR after_sequence <= $5))"#,
            )
            .bind(&firm)
            .bind(&outcome)
            .bind(received)
            .bind(id)
            .bind(high_water)
            .execute(&mut *tx)
            .await?;
            sqlx::query("SELECT pg_notify('altinn_sync_flushed', $1)")
                .bind(&firm)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            metrics::command("SyncNow", CommandOutcome::Handled, 1);
            tracing::Span::current().record("outcome", outcome.as_str());
            tracing::info!(firm, command.id = %id, planned.grants, planned.revokes,
                planned.superseded, planned.requeued, planned.staged, "sync-now planned");
            guard::log_staged(&firm, &planned);
            Ok::<_, state::Error>(())
        }
        .instrument(span)
        .await?;
        handled += 1;
    }
    Ok(handled)
}

/// The span of one command, continuing the trace it arrived with.
fn command_span(
    kind: &'static str,
    id: Uuid,
    firm: Option<&str>,
    traceparent: Option<&str>,
) -> tracing::Span {
    let span = tracing::info_span!(
        "command",
        otel.name = kind,
        command.type = kind,
        command.id = %id,
        firm,
        outcome = tracing::field::Empty,
    );
    telemetry::continue_trace(&span, traceparent);
    span
}

/// The changes the transaction plans record the current span's trace (`outbox.traceparent`
/// defaults to this setting), so their delivery joins it, later or on another replica.
async fn trace_planning(conn: &mut sqlx::PgConnection) -> Result<()> {
    if let Some(traceparent) = telemetry::traceparent(&tracing::Span::current()) {
        sqlx::query("SELECT set_config('altinn_sync.traceparent', $1, true)")
            .bind(traceparent)
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Plans sync-nows, runs reconciles and dispatches until `shutdown`, each in its own loop, so
/// a long nightly reconcile holds back neither a sync-now nor the deliveries. Each loop wakes
/// on its signal and every second, for retries that come due and other replicas' work.
pub async fn run(pool: PgPool, dispatcher: &Dispatcher, shutdown: CancellationToken) -> Result<()> {
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen("altinn_sync_ingested").await?;
    let (commands, reconciles, planned) = (Notify::new(), Notify::new(), Notify::new());
    // The automatic sync wakes only on its tick.
    let never = Notify::new();
    let ingested = async {
        let mut waits = RetryPolicy::DEFAULT.waits();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                received = listener.recv() => match received {
                    Ok(_) => {
                        waits.reset();
                        commands.notify_one();
                        reconciles.notify_one();
                    }
                    // sqlx reconnects on the next call; the loops' ticks cover the gap.
                    Err(e) => {
                        let wait = waits.next_wait();
                        tracing::warn!(error = %e, retry_in = ?wait,
                            "lost the database notifications; reconnecting");
                        tokio::select! {
                            () = shutdown.cancelled() => return Ok(()),
                            () = tokio::time::sleep(wait) => {}
                        }
                    }
                },
            }
        }
    };
    tokio::try_join!(
        ingested,
        repeat("sync-now planning", &shutdown, &commands, || async {
            let handled = handle_commands(&pool, dispatcher.settings())
                .await
                .inspect_err(|_| metrics::command("SyncNow", CommandOutcome::Failed, 1))?;
            if handled > 0 {
                planned.notify_one();
            }
            Ok(())
        }),
        repeat("nightly reconcile", &shutdown, &reconciles, || async {
            let handled = handle_reconciles(&pool, dispatcher, &shutdown)
                .await
                .inspect_err(|_| metrics::command("NightlyReconcile", CommandOutcome::Failed, 1))?;
            if handled > 0 {
                planned.notify_one();
            }
            Ok(())
        }),
        repeat("dispatch", &shutdown, &planned, || async {
            dispatcher.drain(&shutdown).await?;
            dispatcher.remove_idle_agents().await.map(drop)
        }),
        async {
            let Some(after) = dispatcher.settings().auto_sync_after() else {
                return Ok(());
            };
            // Checked every second: a firm fires within a second of being due.
            repeat("automatic sync", &shutdown, &never, || async {
                if !auto_sync(&pool, after, None).await?.is_empty() {
                    commands.notify_one();
                }
                Ok(())
            })
            .await
        },
    )?;
    Ok(())
}

/// Runs `work` now, then on every `wake` and every second, until `shutdown`. A retryable
/// failure (the database away for a moment) is logged and retried; a fatal one ends the run.
async fn repeat<F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    wake: &Notify,
    mut work: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    loop {
        if let Err(e) = work().await {
            if !e.is_retryable() {
                return Err(e);
            }
            tracing::warn!(error = %e, "{what} failed; retrying");
        }
        let tick = Instant::now() + Duration::from_secs(1);
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = wake.notified() => {}
            () = tokio::time::sleep_until(tick) => {}
        }
    }
}

/// Handles every `NightlyReconcile`: for the named firm, or every firm not on hold.
///
/// On `shutdown` a reconcile in progress is dropped: each firm is planned in a transaction of
/// its own, so the command stays unhandled and the next run starts it again.
pub async fn handle_reconciles(
    pool: &PgPool,
    dispatcher: &Dispatcher,
    shutdown: &CancellationToken,
) -> Result<usize> {
    let pending: Vec<(Uuid, Option<String>, Option<String>)> = sqlx::query_as(
        r#"SELECT command_id, firm, traceparent FROM commands
           WHERE handled_at IS NULL AND command_type = 'NightlyReconcile'
           ORDER BY received_at"#,
    )
    .fetch_all(pool)
    .await?;
    for (id, firm, traceparent) in &pending {
        // One replica per reconcile: a session lock on a connection of its own, closed (and
        // the lock with it) when this returns, however it returns, or when the worker dies.
        let mut lock = pool.acquire().await?.detach();
        let key = format!("altinn-sync.reconcile:{id}");
        let mine: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
            .bind(&key)
            .fetch_one(&mut lock)
            .await?;
        let still_open: bool =
            sqlx::query_scalar("SELECT handled_at IS NULL FROM commands WHERE command_id = $1")
                .bind(id)
                .fetch_one(&mut lock)
                .await?;
        if !mine || !still_open {
            if mine {
                unlock(&mut lock, &key).await?;
            }
            continue;
        }
        let firms: Vec<String> = match firm {
            Some(f) => vec![f.clone()],
            None => {
                sqlx::query_scalar(
                    "SELECT org_number FROM firms WHERE held_since IS NULL ORDER BY org_number",
                )
                .fetch_all(pool)
                .await?
            }
        };
        let span = command_span(
            "NightlyReconcile",
            *id,
            firm.as_deref(),
            traceparent.as_deref(),
        );
        span.in_scope(|| {
            tracing::info!(command.id = %id, firms = firms.len(), "nightly reconcile started");
        });
        let report = tokio::select! {
            report = reconcile(pool, dispatcher, &firms, *id).instrument(span.clone()) => report?,
            () = shutdown.cancelled() => {
                tracing::info!(command.id = %id, "nightly reconcile interrupted by shutdown; it runs again at the next start");
                return Ok(0);
            }
        };
        let outcome = report.to_string();
        span.record("outcome", outcome.as_str());
        sqlx::query("UPDATE commands SET handled_at = now(), outcome = $2 WHERE command_id = $1")
            .bind(id)
            .bind(&outcome)
            .execute(pool)
            .await?;
        sqlx::query("SELECT pg_notify('altinn_sync_flushed', '')")
            .execute(pool)
            .await?;
        metrics::command("NightlyReconcile", CommandOutcome::Handled, 1);
        let r = &report.reconciled;
        tracing::info!(command.id = %id, firms = r.firms, drift.missing = r.missing,
            drift.extra = r.extra, unknown = r.unknown, retried = r.retried,
            planned.grants = r.planned.grants, planned.revokes = r.planned.revokes,
            read.secs = report.read.as_secs_f64(), apply.secs = report.apply.as_secs_f64(),
            "nightly reconcile done");
        unlock(&mut lock, &key).await?;
    }
    Ok(pending.len())
}

async fn unlock(conn: &mut sqlx::PgConnection, key: &str) -> Result<()> {
    sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}
