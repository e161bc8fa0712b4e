//! The commands that start a flush: each ready `SyncNow` is planned, each `NightlyReconcile`
//! reads Altinn and plans every firm it covers.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::dispatch::Dispatcher;
use super::plan::{Planned, log_staged, plan_flush, trace_planning};
use super::reconcile::{Report, reconcile};
use super::{FlushSettings, Result};
use crate::telemetry;
use crate::telemetry::metrics::{self, CommandOutcome};

/// How long a `SyncNow` waits for the firm's events up to its `after_sequence`.
const AFTER_SEQUENCE_WAIT: Duration = Duration::from_secs(30);

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
    let pending = sqlx::query_as!(
        PendingSyncNow,
        r#"SELECT c.command_id AS id, c.firm AS "firm!", c.after_sequence AS after,
                  c.received_at AS received,
                  coalesce(f.high_water_sequence, -1) AS "high_water!",
                  c.traceparent
           FROM commands c LEFT JOIN firms f ON f.org_number = c.firm
           WHERE c.handled_at IS NULL AND c.command_type = 'SyncNow'
           ORDER BY c.received_at"#
    )
    .fetch_all(pool)
    .await?;
    let mut handled = 0;
    for command in pending {
        let waited = chrono::Utc::now() - command.received;
        let caught_up = command.after.is_none_or(|a| command.high_water >= a);
        if !caught_up && waited.to_std().unwrap_or_default() < AFTER_SEQUENCE_WAIT {
            continue;
        }
        let span = command_span(
            "SyncNow",
            command.id,
            Some(&command.firm),
            command.traceparent.as_deref(),
        );
        plan_sync_now(pool, settings, &command, caught_up)
            .instrument(span)
            .await?;
        handled += 1;
    }
    Ok(handled)
}

/// Plans the firm of a ready `SyncNow` and marks the commands the plan answers handled, in one
/// transaction.
async fn plan_sync_now(
    pool: &PgPool,
    settings: &FlushSettings,
    command: &PendingSyncNow,
    caught_up: bool,
) -> Result<()> {
    let PendingSyncNow {
        id,
        firm,
        received,
        high_water,
        ..
    } = command;
    let mut tx = pool.begin().await?;
    trace_planning(&mut tx).await?;
    let planned = plan_flush(&mut tx, firm, *id, settings).await?;
    let outcome = sync_now_outcome(&planned, caught_up);
    // Every SyncNow of this firm received so far joins this flush, unless it waits for
    // events this plan has not seen: it is honoured once they are applied, or when its
    // wait runs out. (`high_water` was read before planning began.)
    sqlx::query!(
        r#"UPDATE commands SET handled_at = now(), outcome = $2
           WHERE command_id = $4
              OR (firm = $1 AND command_type = 'SyncNow' AND handled_at IS NULL
                  AND received_at <= $3
                  AND (after_sequence IS NULL OR after_sequence <= $5))"#,
        firm,
        outcome,
        received,
        id,
        high_water
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(r#"SELECT pg_notify('altinn_sync_flushed', $1)"#, firm)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    metrics::command("SyncNow", CommandOutcome::Handled, 1);
    tracing::Span::current().record("outcome", outcome.as_str());
    tracing::info!(firm, command.id = %id, planned.grants, planned.revokes,
        planned.superseded, planned.requeued, planned.staged, "sync-now planned");
    log_staged(firm, &planned);
    Ok(())
}

/// The outcome a `SyncNow` records: what was planned, and what it could not wait for.
fn sync_now_outcome(planned: &Planned, caught_up: bool) -> String {
    format!(
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
    )
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

/// Handles every `NightlyReconcile`: for the named firm, or every firm not on hold.
///
/// On `shutdown` a reconcile in progress is dropped: each firm is planned in a transaction of
/// its own, so the command stays unhandled and the next run starts it again.
pub async fn handle_reconciles(
    pool: &PgPool,
    dispatcher: &Dispatcher,
    shutdown: &CancellationToken,
) -> Result<usize> {
    let pending = sqlx::query!(
        r#"SELECT command_id, firm, traceparent FROM commands
           WHERE handled_at IS NULL AND command_type = 'NightlyReconcile'
           ORDER BY received_at"#
    )
    .fetch_all(pool)
    .await?;
    for command in &pending {
        let id = command.command_id;
        let Some((mut lock, key)) = claim(pool, id).await? else {
            continue;
        };
        let firms = firms_to_reconcile(pool, command.firm.as_deref()).await?;
        let span = command_span(
            "NightlyReconcile",
            id,
            command.firm.as_deref(),
            command.traceparent.as_deref(),
        );
        span.in_scope(|| {
            tracing::info!(command.id = %id, firms = firms.len(), "nightly reconcile started");
        });
        let report = tokio::select! {
            report = reconcile(pool, dispatcher, &firms, id).instrument(span.clone()) => report?,
            () = shutdown.cancelled() => {
                tracing::info!(command.id = %id, "nightly reconcile interrupted by shutdown; it runs again at the next start");
                return Ok(0);
            }
        };
        finish_reconcile(pool, id, &report, &span).await?;
        unlock(&mut lock, &key).await?;
    }
    Ok(pending.len())
}

/// Claims reconcile `id` for this replica: one replica per reconcile. The claim is a session
/// lock on a connection of its own, returned with the lock's key: the connection closes (and
/// the lock with it) when it is dropped, however the reconcile ends, or when the worker dies.
/// `None` when another replica holds it or the command was handled meanwhile.
async fn claim(pool: &PgPool, id: Uuid) -> Result<Option<(PgConnection, String)>> {
    let mut lock = pool.acquire().await?.detach();
    let key = format!("altinn-sync.reconcile:{id}");
    let mine = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_lock(hashtextextended($1, 0)) AS "mine!""#,
        key
    )
    .fetch_one(&mut lock)
    .await?;
    let still_open = sqlx::query_scalar!(
        r#"SELECT handled_at IS NULL AS "still_open!" FROM commands WHERE command_id = $1"#,
        id
    )
    .fetch_one(&mut lock)
    .await?;
    if !mine || !still_open {
        if mine {
            unlock(&mut lock, &key).await?;
        }
        return Ok(None);
    }
    Ok(Some((lock, key)))
}

/// The firms a reconcile covers: the one it names, or every firm not on hold.
async fn firms_to_reconcile(pool: &PgPool, firm: Option<&str>) -> Result<Vec<String>> {
    let firms = match firm {
        Some(f) => vec![f.to_owned()],
        None => {
            sqlx::query_scalar!(
                r#"SELECT org_number FROM firms WHERE held_since IS NULL ORDER BY org_number"#
            )
            .fetch_all(pool)
            .await?
        }
    };
    Ok(firms)
}

/// Records a reconcile's report as its command's outcome, marks it handled and wakes whoever
/// waits for flushes.
async fn finish_reconcile(
    pool: &PgPool,
    id: Uuid,
    report: &Report,
    span: &tracing::Span,
) -> Result<()> {
    let outcome = report.to_string();
    span.record("outcome", outcome.as_str());
    sqlx::query!(
        r#"UPDATE commands SET handled_at = now(), outcome = $2 WHERE command_id = $1"#,
        id,
        outcome
    )
    .execute(pool)
    .await?;
    sqlx::query!(r#"SELECT pg_notify('altinn_sync_flushed', '')"#)
        .execute(pool)
        .await?;
    metrics::command("NightlyReconcile", CommandOutcome::Handled, 1);
    let r = &report.reconciled;
    tracing::info!(command.id = %id, firms = r.firms, drift.missing = r.missing,
        drift.extra = r.extra, unknown = r.unknown, retried = r.retried,
        planned.grants = r.planned.grants, planned.revokes = r.planned.revokes,
        read.secs = report.read.as_secs_f64(), apply.secs = report.apply.as_secs_f64(),
        "nightly reconcile done");
    Ok(())
}

async fn unlock(conn: &mut PgConnection, key: &str) -> Result<()> {
    // Whether the lock was held is of no use: the connection is dropped either way.
    sqlx::query_scalar!(r#"SELECT pg_advisory_unlock(hashtextextended($1, 0))"#, key)
        .fetch_one(conn)
        .await?;
    Ok(())
}
