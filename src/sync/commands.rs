//! The commands that start a flush: each ready `SyncNow` is planned, each `NightlyReconcile`
//! reads Altinn and plans every firm it covers.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::dispatch::Dispatcher;
use super::plan::{log_staged, plan_flush, trace_planning};
use super::reconcile::reconcile;
use super::{FlushSettings, Result};
use crate::telemetry::metrics::{self, CommandOutcome};
use crate::{state, telemetry};

/// How long a `SyncNow` waits for the firm's events up to its `after_sequence`.
const AFTER_SEQUENCE_WAIT: Duration = Duration::from_secs(30);

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
            log_staged(&firm, &planned);
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
