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
use crate::telemetry::ErrorChain;

use super::apply::{Applied, apply_firm};
use super::read::{FirmRead, read_firm};
use super::report::{LeftAlone, Reconciled, Report};

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
    let managed: HashSet<String> = sqlx::query_scalar!(r#"SELECT package FROM role_mapping"#)
        .fetch_all(pool)
        .await?
        .into_iter()
        .collect();
    // A rerun of an interrupted reconcile starts clean.
    sqlx::query!(
        r#"DELETE FROM reconcile_actual WHERE command_id = $1"#,
        cause
    )
    .execute(pool)
    .await?;

    let started = Instant::now();
    let ReadAll {
        read,
        unread,
        left_alone,
        mut total,
    } = read_all(pool, dispatcher, firms, cause, &managed).await?;
    let read_time = started.elapsed();

    let started = Instant::now();
    let _hold = dispatcher.hold_for_reconcile();
    apply_all(pool, dispatcher, read, cause, &mut total).await?;
    Ok(Report {
        reconciled: total,
        unread,
        left_alone,
        read: read_time,
        apply: started.elapsed(),
    })
}

/// What the first phase found: the firms read, for the second, and what the report tells.
struct ReadAll {
    /// Each firm read, with when it was read.
    read: Vec<(String, DateTime<Utc>)>,
    unread: Vec<(String, String)>,
    left_alone: Vec<LeftAlone>,
    /// The persons' figures (`unknown`, `adopted`); the second phase adds the rest.
    total: Reconciled,
}

/// The first phase: every firm's actual state read from Altinn, firms side by side at the pace
/// Altinn allows. A firm that cannot be read is reported and left as it was.
async fn read_all(
    pool: &PgPool,
    dispatcher: &Dispatcher,
    firms: &[String],
    cause: Uuid,
    managed: &HashSet<String>,
) -> Result<ReadAll> {
    let mut progress = Progress::new("reading Altinn", firms.len());
    let mut all = ReadAll {
        read: Vec::with_capacity(firms.len()),
        unread: Vec::new(),
        left_alone: Vec::new(),
        total: Reconciled::default(),
    };
    let phase = tracing::info_span!("reconcile.read", firms = firms.len());
    let mut reads = futures_util::stream::iter(firms.iter().cloned())
        .map(|firm| {
            async move {
                let outcome = read_firm(pool, dispatcher, &firm, cause, managed).await;
                (firm, outcome)
            }
            .instrument(phase.clone())
        })
        // Up to the ceiling: each call still waits for its place, so the reads follow the limit
        // as it grows instead of the value it had when the reconcile began (4 on a fresh worker).
        .buffer_unordered(dispatcher.altinn().pace().ceiling());
    while let Some((firm, outcome)) = reads.next().await {
        match outcome? {
            Ok(firm_read) => all.add(firm, firm_read),
            Err(e) => {
                tracing::warn!(firm, error = %ErrorChain(&e), "could not read Altinn; firm not reconciled");
                all.unread.push((firm, e.to_string()));
            }
        }
        progress.tick();
    }
    Ok(all)
}

impl ReadAll {
    /// Counts and logs what reading `firm` found about persons, and keeps it for the second
    /// phase.
    fn add(&mut self, firm: String, firm_read: FirmRead) {
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
        self.total.unknown += firm_read.unknown;
        self.total.adopted += firm_read.adopted;
        self.left_alone.extend(firm_read.left_alone);
        self.read.push((firm, firm_read.at));
    }
}

/// The second phase, while this worker's deliveries wait: firm by firm, the drift counted,
/// Altinn's state made `applied_grants` and the delta planned, all added to `total`.
async fn apply_all(
    pool: &PgPool,
    dispatcher: &Dispatcher,
    read: Vec<(String, DateTime<Utc>)>,
    cause: Uuid,
    total: &mut Reconciled,
) -> Result<()> {
    // The reading replaced the table's contents: without fresh statistics PostgreSQL plans
    // each firm's joins as if the table were as it last saw it (empty, say), and compares
    // every applied grant with every grant read. This also renews the cached plans.
    sqlx::query!(r#"ANALYZE reconcile_actual"#)
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
        progress.tick();
        let Some(r) = r? else {
            total.stale += 1;
            continue;
        };
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
        add_applied(total, &r);
    }
    Ok(())
}

fn add_applied(total: &mut Reconciled, r: &Applied) {
    total.firms += 1;
    total.missing += r.missing;
    total.extra += r.extra;
    total.retried += r.retried;
    total.planned.grants += r.planned.grants;
    total.planned.revokes += r.planned.revokes;
    total.planned.superseded += r.planned.superseded;
    total.planned.requeued += r.planned.requeued;
    total.planned.staged += r.planned.staged;
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
