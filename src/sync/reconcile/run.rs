//! One reconcile from start to end: read every firm, then apply and plan them.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use sqlx::PgPool;
use tracing::Instrument;
use uuid::Uuid;

use crate::sync::Result;
use crate::sync::dispatch::Dispatcher;
use crate::sync::plan::log_staged;

use super::apply::apply_firm;
use super::read::read_firm;
use super::report::{Reconciled, Report};

/// Firms planned at once: the work is PostgreSQL's, and two transactions keep two cores busy.
const APPLY_PARALLELISM: usize = 2;
/// Progress is logged at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Reconciles `firms` for the command `cause`.
pub async fn reconcile(
    pool: &PgPool,
    dispatcher: &Dispatcher,
    firms: &[String],
    cause: Uuid,
) -> Result<Report> {
    let managed: HashSet<String> = sqlx::query_scalar("SELECT package FROM role_mapping")
        .fetch_all(pool)
        .await?
        .into_iter()
        .collect();
    // A rerun of an interrupted reconcile starts clean.
    sqlx::query("DELETE FROM reconcile_actual WHERE command_id = $1")
        .bind(cause)
        .execute(pool)
        .await?;

    let started = Instant::now();
    let mut progress = Progress::new("reading Altinn", firms.len());
    let mut read: Vec<(String, DateTime<Utc>)> = Vec::with_capacity(firms.len());
    let mut unread = Vec::new();
    let mut left_alone = Vec::new();
    let mut total = Reconciled::default();
    let managed = &managed;
    let phase = tracing::info_span!("reconcile.read", firms = firms.len());
    let mut reads = futures_util::stream::iter(firms.iter().cloned())
        .map(|firm| {
            async move {
                let outcome = read_firm(pool, dispatcher, &firm, cause, managed).await;
                (firm, outcome)
            }
            .instrument(phase.clone())
        })
        .buffer_unordered(dispatcher.altinn().pace().current());
    while let Some((firm, outcome)) = reads.next().await {
        match outcome {
            Ok(Ok(firm_read)) => {
                let persons = firm_read.left_alone.len();
                if firm_read.unknown > 0 {
                    tracing::warn!(
                        firm,
                        packages = firm_read.unknown,
                        persons,
                        "Altinn shows mapped packages on persons AdminFlow does not know; left alone"
                    );
                }
                if firm_read.adopted > 0 {
                    tracing::info!(
                        firm,
                        agents = firm_read.adopted,
                        "adopted agents given access by hand who are known employees"
                    );
                }
                total.unknown += firm_read.unknown;
                total.adopted += firm_read.adopted;
                left_alone.extend(firm_read.left_alone);
                read.push((firm, firm_read.at));
            }
            Ok(Err(e)) => {
                tracing::warn!(firm, error = %e, "could not read Altinn; firm not reconciled");
                unread.push((firm, e.to_string()));
            }
            Err(e) => return Err(e),
        }
        progress.tick();
    }
    drop(reads);
    drop(phase);
    let read_time = started.elapsed();

    let started = Instant::now();
    let _hold = dispatcher.hold_for_reconcile();
    // The reading replaced the table's contents: without fresh statistics PostgreSQL plans
    // each firm's joins as if the table were as it last saw it (empty, say), and compares
    // every applied grant with every grant read. This also renews the cached plans.
    sqlx::query("ANALYZE reconcile_actual")
        .execute(pool)
        .await?;
    let mut progress = Progress::new("planning", read.len());
    let settings = dispatcher.settings();
    let phase = tracing::info_span!("reconcile.apply", firms = read.len());
    let mut applied = futures_util::stream::iter(read)
        .map(|(firm, read_at)| {
            async move {
                let r = apply_firm(pool, &firm, cause, read_at, settings).await;
                (firm, r)
            }
            .instrument(phase.clone())
        })
        .buffer_unordered(APPLY_PARALLELISM);
    while let Some((firm, r)) = applied.next().await {
        let r = r?;
        log_staged(&firm, &r.planned);
        crate::telemetry::metrics::drift(r.missing, r.extra);
        if r.missing + r.extra > 0 {
            tracing::info!(
                firm,
                drift.missing = r.missing,
                drift.extra = r.extra,
                "drift found"
            );
        }
        total.firms += 1;
        total.missing += r.missing;
        total.extra += r.extra;
        total.retried += r.retried;
        total.planned.grants += r.planned.grants;
        total.planned.revokes += r.planned.revokes;
        total.planned.superseded += r.planned.superseded;
        total.planned.requeued += r.planned.requeued;
        total.planned.staged += r.planned.staged;
        progress.tick();
    }
    Ok(Report {
        reconciled: total,
        unread,
        left_alone,
        read: read_time,
        apply: started.elapsed(),
    })
}

/// Logs how far a long phase has got, at most every [`PROGRESS_EVERY`]: firms done and left,
/// the pace, and when the phase should end at that pace.
struct Progress {
    phase: &'static str,
    total: usize,
    done: usize,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn new(phase: &'static str, total: usize) -> Self {
        Self {
            phase,
            total,
            done: 0,
            started: Instant::now(),
            last: Instant::now(),
        }
    }

    fn tick(&mut self) {
        self.done += 1;
        if self.last.elapsed() >= PROGRESS_EVERY || self.done == self.total {
            self.last = Instant::now();
            let secs = self.started.elapsed().as_secs_f64();
            #[allow(clippy::cast_precision_loss)] // firm counts
            let per_s = if secs > 0.0 {
                self.done as f64 / secs
            } else {
                0.0
            };
            let left = self.total.saturating_sub(self.done);
            #[allow(clippy::cast_precision_loss)]
            let finish_in = (per_s > 0.0).then(|| (left as f64 / per_s).round());
            tracing::info!(
                phase = self.phase,
                firms.done = self.done,
                firms.left = left,
                firms.per_s = format!("{per_s:.1}"),
                finish_in_secs = finish_in,
                "reconcile progress"
            );
        }
    }
}
