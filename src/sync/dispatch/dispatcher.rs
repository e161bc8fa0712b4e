//! [`Dispatcher`]: the steps and lanes that deliver outbox rows.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sqlx::PgPool;
use tokio::sync::{Mutex, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::in_flight::InFlight;
use super::lease::{GroupLease, StepLease};
use super::locked::Locked;
use super::row::{GroupKey, PersonLock, Row, Verdict};
use super::setup_hold::SetupHold;
use super::{FlushSettings, Result};
use crate::altinn::{self, AltinnClient};
use crate::policy::Action;
use crate::retry::RetryPolicy;
use crate::sync::parties::Parties;
use crate::telemetry;
use crate::telemetry::ErrorChain;

/// Altinn's prefix for access-package URNs.
pub(in crate::sync) const PACKAGE_URN: &str = "urn:altinn:accesspackage:";

/// What one dispatch step did; the loop runs steps until `Idle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Processed(usize),
    Idle,
}

/// Recording a step's outcomes is tried this many times after conflicts, with these waits.
const RECORD_ATTEMPTS: usize = 5;
const RECORD_RETRY: RetryPolicy =
    RetryPolicy::new(Duration::from_millis(10), Duration::from_millis(500));

/// Steps that claim, deliver and finish side by side, so one step's database work overlaps
/// another's Altinn calls. The concurrency limits are shared between them.
const LANES: usize = 4;

pub struct Dispatcher {
    pub(super) pool: PgPool,
    pub(super) altinn: AltinnClient,
    pub(super) settings: FlushSettings,
    pub(super) id: String,
    pub(super) claims: AtomicU64,
    /// Reconciles planning right now; deliveries wait meanwhile (see [`Self::hold_for_reconcile`]).
    pub(super) reconciling: AtomicUsize,
    /// Claimed rows not yet finished, per firm, over all lanes.
    pub(super) in_flight: std::sync::Mutex<HashMap<String, usize>>,
    /// Altinn calls in flight per firm.
    pub(super) firm_calls: std::sync::Mutex<HashMap<String, Arc<Semaphore>>>,
    /// One lock per (firm, employee), held while making the person an agent, so two deliveries
    /// for one new employee do not both look the person up (failed lookups count towards
    /// Altinn's lock-out), while different employees go ahead in parallel.
    pub(super) agent_locks: Mutex<HashMap<(String, Uuid), PersonLock>>,
    /// Agents this dispatcher added, for lanes that claimed rows before the agent existed.
    pub(super) added: std::sync::Mutex<HashMap<(String, Uuid), Uuid>>,
    /// Agents added since the last finished step, saved with its outcomes.
    pub(super) unsaved_agents: std::sync::Mutex<Vec<(String, Uuid, Uuid)>>,
    /// Altinn's lock-out after failed person lookups, per firm (also kept in `firms`).
    pub(super) lookup_locks: std::sync::Mutex<HashMap<String, Instant>>,
    /// Firm and client parties.
    pub(super) parties: Parties,
    /// Set while a setup error (Maskinporten or Altinn refusing the worker itself, whatever the
    /// firm) holds every delivery back: nothing is parked, a probe step runs when it runs out.
    pub(super) setup_hold: std::sync::Mutex<Option<SetupHold>>,
    /// Firms Altinn refused with 403 since it last let a change through, for any firm: two or
    /// more mean the worker itself lacks a right (see [`Self::judge_forbidden`]).
    pub(super) forbidden: std::sync::Mutex<BTreeSet<String>>,
}

impl Dispatcher {
    pub fn new(pool: PgPool, altinn: AltinnClient, settings: FlushSettings) -> Self {
        Self {
            pool,
            altinn: altinn.with_concurrency(settings.concurrency()),
            settings,
            id: format!("dispatcher-{}", Uuid::new_v4()),
            claims: AtomicU64::new(0),
            firm_calls: std::sync::Mutex::default(),
            in_flight: std::sync::Mutex::default(),
            reconciling: AtomicUsize::new(0),
            agent_locks: Mutex::default(),
            added: std::sync::Mutex::default(),
            unsaved_agents: std::sync::Mutex::default(),
            lookup_locks: std::sync::Mutex::default(),
            parties: Parties::default(),
            setup_hold: std::sync::Mutex::default(),
            forbidden: std::sync::Mutex::default(),
        }
    }

    pub(in crate::sync) fn altinn(&self) -> &AltinnClient {
        &self.altinn
    }

    pub(in crate::sync) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(in crate::sync) fn settings(&self) -> &FlushSettings {
        &self.settings
    }

    /// After the person was removed as agent: the next grant adds them again.
    pub(in crate::sync) fn forget_agent(&self, firm: &str, employee: Uuid) {
        self.added.locked().remove(&(firm.to_owned(), employee));
    }

    /// Delivers every due row, in [`LANES`] concurrent steps; returns how many were processed.
    ///
    /// A lane that finds nothing to claim waits for another lane's step and tries again: rows
    /// planned meanwhile, or firms another lane no longer keeps busy, are then its work. The
    /// drain ends when every lane is idle.
    /// On `shutdown` no lane claims again; the steps in hand are finished.
    pub async fn drain(&self, shutdown: &CancellationToken) -> Result<usize> {
        let working = AtomicUsize::new(LANES);
        let stepped = Notify::new();
        let lane = || async {
            let mut processed = 0;
            loop {
                if shutdown.is_cancelled() {
                    return Ok(processed);
                }
                // Registered before this lane counts itself idle, so no step goes unseen.
                let next_step = stepped.notified();
                tokio::pin!(next_step);
                next_step.as_mut().enable();
                match self.step(self.claim_size()).await {
                    Ok(Step::Processed(n)) => {
                        processed += n;
                        stepped.notify_waiters();
                    }
                    Ok(Step::Idle) => {
                        if working.fetch_sub(1, Ordering::SeqCst) == 1 {
                            stepped.notify_waiters();
                            return Ok(processed);
                        }
                        tokio::select! {
                            () = next_step => {}
                            () = shutdown.cancelled() => return Ok(processed),
                        }
                        if working.load(Ordering::SeqCst) == 0 {
                            return Ok(processed);
                        }
                        working.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        // The other lanes must not wait for this one.
                        working.store(0, Ordering::SeqCst);
                        stepped.notify_waiters();
                        return Err(e);
                    }
                }
            }
        };
        let lanes = futures_util::future::try_join_all((0..LANES).map(|_| lane())).await?;
        Ok(lanes.into_iter().sum())
    }

    /// Claims up to `limit` due rows and delivers them, one Altinn call per
    /// (firm, client, employee, action).
    pub async fn step(&self, limit: i64) -> Result<Step> {
        if self.reconciling.load(Ordering::SeqCst) > 0 {
            return Ok(Step::Idle);
        }
        // Another replica's setup error holds this one too (`shared_hold`).
        self.follow_setup_hold().await;
        if self.held_by_setup() {
            return Ok(Step::Idle);
        }
        self.unpause_forbidden().await;
        // Each claim has its own lease, so a lane never finishes rows another lane re-claimed.
        let lease = format!(
            "{}/{}",
            self.id,
            self.claims.fetch_add(1, Ordering::Relaxed)
        );
        let rows = self.claim(limit, &lease).await?;
        let claimed_at = Instant::now();
        if rows.is_empty() {
            return Ok(Step::Idle);
        }
        let step = tracing::info_span!(
            "flush.step",
            rows = rows.len(),
            outcome = tracing::field::Empty
        );
        // One link per trace, not per row: a command plans many rows under one trace.
        let traces: BTreeSet<&str> = rows
            .iter()
            .filter_map(|r| r.traceparent.as_deref())
            .collect();
        for trace in traces {
            telemetry::link(&step, Some(trace));
        }
        self.deliver_claimed(rows, lease, claimed_at)
            .instrument(step)
            .await
    }

    /// Delivers a step's claimed rows and records the outcomes.
    async fn deliver_claimed(
        &self,
        rows: Vec<Row>,
        lease: String,
        claimed_at: Instant,
    ) -> Result<Step> {
        let n = rows.len();
        let _in_flight = InFlight::new(&self.in_flight, &rows);
        let lease = self.step_lease(lease, &rows, claimed_at);
        let people = self.people(&rows).await?;
        let groups = calls(rows);
        // The step's own trace, read once for every group's link to it.
        let step_trace = telemetry::traceparent(&tracing::Span::current());
        let delivered = futures_util::stream::iter(groups)
            .map(|((firm, client, employee, action), rows)| {
                let people = &people;
                let span = delivery_span(&firm, action, &rows, step_trace.as_deref());
                let lease = &lease;
                async move {
                    let group_lease = GroupLease::new(lease);
                    let key = GroupKey {
                        firm: &firm,
                        client: &client,
                        employee,
                        action,
                        lease: &group_lease,
                    };
                    // Before the permits: a group waiting for its person to be added by
                    // another holds none.
                    let agent = self.agent_for(&key, people).await;
                    // The call limit over all firms is the Altinn client's (`altinn::pace`);
                    // the lease is checked once a place in it is ours (`deliver`).
                    let _firm = self.firm_permit(&firm).await?;
                    let verdicts = self.deliver_group(&key, rows, agent, people).await;
                    if group_lease.lost() {
                        tracing::Span::current().record("outcome", "lease lost");
                    } else {
                        record_outcome(&tracing::Span::current(), &verdicts);
                    }
                    Ok::<_, crate::sync::Error>(verdicts)
                }
                .instrument(span)
            })
            // Every group waits on the shared limits, so none is held back by this width.
            .buffer_unordered(n)
            .collect::<Vec<_>>();
        let delivered: Vec<Vec<(Row, Verdict)>> = lease
            .kept_during(&self.pool, delivered)
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        let mut verdicts: Vec<(Row, Verdict)> = delivered.into_iter().flatten().collect();
        self.judge_forbidden(&mut verdicts).await;
        self.note_and_share_setup(&verdicts).await;
        record_outcome(&tracing::Span::current(), &verdicts);
        self.record(&lease.name, &verdicts).await?;
        Ok(Step::Processed(n))
    }

    fn step_lease(&self, name: String, rows: &[Row], claimed_at: Instant) -> StepLease {
        let length = Duration::from_secs(self.settings.flush_lease_secs);
        StepLease::new(
            name,
            rows.iter().map(|r| r.id).collect(),
            length,
            claimed_at,
        )
    }

    /// [`Self::finish`], again after a conflict with another replica's step (a deadlock over
    /// the same agents, say): the statement only touches rows this lease still holds, so a
    /// retry is safe. Should it still fail, the rows' leases are given up, so they are due at
    /// once instead of when the lease runs out.
    async fn record(&self, lease: &str, verdicts: &[(Row, Verdict)]) -> Result<()> {
        let mut waits = RECORD_RETRY.waits();
        for _ in 0..RECORD_ATTEMPTS {
            match self.finish(lease, verdicts).await {
                Err(crate::sync::Error::Database(crate::state::Error::Conflict(e))) => {
                    let wait = waits.next_wait();
                    tracing::debug!(error = %ErrorChain(&e), retry_in = ?wait,
                        "recording a step's outcomes conflicted with another; trying again");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
        let result = self.finish(lease, verdicts).await;
        if result.is_err() {
            let released = sqlx::query!(
                r#"UPDATE outbox SET lease_until = NULL
                   WHERE leased_by = $1 AND status = 'pending'"#,
                lease
            )
            .execute(&self.pool)
            .await;
            if let Err(e) = released {
                tracing::warn!(error = %ErrorChain(&e), "could not give up the step's leases");
            }
        }
        result
    }

    /// Holds deliveries back until the guard is dropped: a reconcile's planning and the
    /// deliveries compete for the same database, and planning a full reconcile is a matter of
    /// seconds (measured: a million rows planned in 21 s alone, 37 s beside the deliveries).
    pub(in crate::sync) fn hold_for_reconcile(&self) -> ReconcileHold<'_> {
        self.reconciling.fetch_add(1, Ordering::SeqCst);
        ReconcileHold(&self.reconciling)
    }
}

/// The rows by the Altinn call they share: (firm, client, employee, action).
fn calls(rows: Vec<Row>) -> BTreeMap<(String, String, Uuid, Action), Vec<Row>> {
    let mut groups: BTreeMap<(String, String, Uuid, Action), Vec<Row>> = BTreeMap::new();
    for row in rows {
        let key = (
            row.firm.clone(),
            row.client_org_number.clone(),
            row.employee_id,
            row.action,
        );
        groups.entry(key).or_default().push(row);
    }
    groups
}

/// Deliveries are held back while this lives.
pub(in crate::sync) struct ReconcileHold<'a>(&'a AtomicUsize);

impl Drop for ReconcileHold<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The span of one group's delivery: a child of the trace of the command that planned its
/// first row (read from the row, so a delivery later or on another replica joins it), linked to
/// the step and to the other rows' traces. Firm, outbox ids and outcome; never the person.
fn delivery_span(
    firm: &str,
    action: Action,
    rows: &[Row],
    step_trace: Option<&str>,
) -> tracing::Span {
    let ids: Vec<String> = rows.iter().map(|r| r.id.to_string()).collect();
    let span = tracing::info_span!(
        "deliver",
        otel.name = %format_args!("deliver {action}"),
        firm,
        action = action.as_str(),
        outbox.id = %ids.join(","),
        command.id = %rows.first().map(|r| r.cause).unwrap_or_default(),
        outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let mut traces = rows.iter().filter_map(|r| r.traceparent.as_deref());
    if let Some(first) = traces.next() {
        telemetry::link(&span, step_trace);
        telemetry::continue_trace(&span, Some(first));
        for other in traces.filter(|t| *t != first) {
            telemetry::link(&span, Some(other));
        }
    }
    span
}

/// Records on `span` what became of the rows: `delivered`, `parked`, `retry`, or several of
/// them joined with commas.
fn record_outcome(span: &tracing::Span, verdicts: &[(Row, Verdict)]) {
    let mut outcomes: Vec<&str> = verdicts
        .iter()
        .map(|(_, v)| match v {
            Verdict::Delivered(_) => "delivered",
            Verdict::Parked { .. } => "parked",
            Verdict::Retry { .. } => "retry",
        })
        .collect();
    outcomes.sort_unstable();
    outcomes.dedup();
    span.record("outcome", outcomes.join(","));
    if outcomes.iter().any(|o| *o != "delivered") {
        span.record("otel.status_code", "ERROR");
    }
}

pub(super) fn permanent(explanation: &str) -> altinn::Error {
    altinn::Error::Permanent(Box::new(altinn::Rejection {
        status: 0,
        code: None,
        validation_errors: Vec::new(),
        explanation: explanation.to_owned(),
        trace_id: None,
    }))
}

pub(super) fn closed() -> crate::sync::Error {
    crate::state::Error::Fatal(sqlx::Error::PoolClosed).into()
}

/// Our own database failing mid-delivery: the row keeps its lease and is retried later.
pub(super) fn database(e: sqlx::Error) -> altinn::Error {
    altinn::Error::Transient {
        retry_after: None,
        reason: format!("database: {e}"),
    }
}
