//! Delivering outbox rows to Altinn: the steps and lanes here; claiming and leases in `claim`,
//! the Altinn calls in `deliver`, what an outcome means in `verdict`, and recording outcomes in
//! `record`.
//!
//! # Guarantees
//! - Rows are claimed with `FOR UPDATE SKIP LOCKED` and a lease; a killed worker's rows are
//!   taken over once the lease runs out.
//! - An outcome, the `applied_grants` change and the audit row commit in one transaction, and
//!   only while this dispatcher still holds the lease.
//! - A transient failure keeps the row, with its next attempt time persisted; a permanent one
//!   parks it with Altinn's code and an explanation in plain words.
//! - Changes to one grant key are delivered in the order they were planned, one at a time.
//! - Make before break: a revoke on a client waits while the client's project accountant (another
//!   employee) has a grant on it on its way, for at most `MAKE_BEFORE_BREAK_MAX_SECS`, so a
//!   transfer does not leave the client without its accountant, and a grant that keeps failing
//!   cannot keep a departed employee's access for ever.

mod claim;
mod deliver;
mod record;
mod verdict;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sqlx::PgPool;
use tokio::sync::{Mutex, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use claim::InFlight;
use verdict::SetupHold;
pub(super) use verdict::retry_delay;

use super::parties::Parties;
use super::{FlushSettings, Result};
use crate::altinn::wire::PersonInput;
use crate::altinn::{self, AltinnClient};
use crate::retry::RetryPolicy;
use crate::telemetry;

/// Altinn's prefix for access-package URNs.
pub(super) const PACKAGE_URN: &str = "urn:altinn:accesspackage:";

/// What one dispatch step did; the loop runs steps until `Idle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Processed(usize),
    Idle,
}

/// The Altinn call a group of rows shares.
struct GroupKey<'a> {
    firm: &'a str,
    client: &'a str,
    employee: Uuid,
    action: &'a str,
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    id: i64,
    firm: String,
    employee_id: Uuid,
    client_org_number: String,
    package: String,
    action: String,
    attempts: i32,
    /// The command that planned the change, and its trace, which the delivery joins.
    cause: Uuid,
    traceparent: Option<String>,
}

/// What becomes of one delivered row.
#[derive(Debug)]
enum Verdict {
    /// With a note for the audit when there was nothing left to do.
    Delivered(Option<String>),
    Parked {
        explanation: String,
        trace: Option<String>,
    },
    Retry {
        error: String,
        wait: Duration,
        hold: Hold,
    },
}

/// What a retried row waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// Its own backoff (and its firm's pause, where the firm is paused).
    Row,
    /// Altinn answered 403: one firm's refusal, or a setup error if every firm gets it; the
    /// step tells which (see [`Dispatcher::judge_forbidden`]) before anything is recorded.
    Forbidden,
    /// A setup error: the row waits for the hold, not for its own backoff.
    Setup,
}

/// Held while one person is made an agent.
type PersonLock = Arc<Mutex<()>>;

/// What the dispatcher knows of an employee it delivers to.
enum Person {
    /// The firm's agent already; the identity, if known, makes them one again should another
    /// replica have removed them.
    Agent {
        party: Uuid,
        identity: Option<PersonInput>,
    },
    /// Not yet the firm's agent; the identity to add them with (never logged).
    ToAdd(PersonInput),
    /// AdminFlow has sent no identity.
    Unknown,
}

/// (firm, employee, agent party, national identity number, last name, lock-out seconds left).
type PersonRow = (
    String,
    Uuid,
    Option<Uuid>,
    Option<String>,
    Option<String>,
    Option<f64>,
);

/// By (firm, employee).
type People = HashMap<(String, Uuid), Person>;

/// Recording a step's outcomes is tried this many times after conflicts, with these waits.
const RECORD_ATTEMPTS: usize = 5;
const RECORD_RETRY: RetryPolicy =
    RetryPolicy::new(Duration::from_millis(10), Duration::from_millis(500));

/// Steps that claim, deliver and finish side by side, so one step's database work overlaps
/// another's Altinn calls. The concurrency limits are shared between them.
const LANES: usize = 4;

pub struct Dispatcher {
    pool: PgPool,
    altinn: AltinnClient,
    settings: FlushSettings,
    id: String,
    claims: AtomicU64,
    /// Reconciles planning right now; deliveries wait meanwhile (see [`Self::hold_for_reconcile`]).
    reconciling: AtomicUsize,
    /// Claimed rows not yet finished, per firm, over all lanes.
    in_flight: std::sync::Mutex<HashMap<String, usize>>,
    /// Altinn calls in flight, over all firms and lanes.
    calls: Arc<Semaphore>,
    /// Altinn calls in flight per firm.
    firm_calls: std::sync::Mutex<HashMap<String, Arc<Semaphore>>>,
    /// One lock per (firm, employee), held while making the person an agent, so two deliveries
    /// for one new employee do not both look the person up (failed lookups count towards
    /// Altinn's lock-out), while different employees go ahead in parallel.
    agent_locks: Mutex<HashMap<(String, Uuid), PersonLock>>,
    /// Agents this dispatcher added, for lanes that claimed rows before the agent existed.
    added: std::sync::Mutex<HashMap<(String, Uuid), Uuid>>,
    /// Agents added since the last finished step, saved with its outcomes.
    unsaved_agents: std::sync::Mutex<Vec<(String, Uuid, Uuid)>>,
    /// Altinn's lock-out after failed person lookups, per firm (also kept in `firms`).
    lookup_locks: std::sync::Mutex<HashMap<String, Instant>>,
    /// Firm and client parties.
    parties: Parties,
    /// Set while a setup error (Maskinporten or Altinn refusing the worker itself, whatever the
    /// firm) holds every delivery back: nothing is parked, a probe step runs when it runs out.
    setup_hold: std::sync::Mutex<Option<SetupHold>>,
    /// Firms Altinn refused with 403 since it last let a change through, for any firm: two or
    /// more mean the worker itself lacks a right (see [`Self::judge_forbidden`]).
    forbidden: std::sync::Mutex<BTreeSet<String>>,
}

impl Dispatcher {
    pub fn new(pool: PgPool, altinn: AltinnClient, settings: FlushSettings) -> Self {
        Self {
            pool,
            altinn,
            calls: Arc::new(Semaphore::new(settings.flush_concurrency.max(1))),
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

    pub(super) fn altinn(&self) -> &AltinnClient {
        &self.altinn
    }

    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(super) fn settings(&self) -> &FlushSettings {
        &self.settings
    }

    /// After the person was removed as agent: the next grant adds them again.
    pub(super) fn forget_agent(&self, firm: &str, employee: Uuid) {
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
        if self.reconciling.load(Ordering::SeqCst) > 0 || self.held_by_setup() {
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
        for row in &rows {
            telemetry::link(&step, row.traceparent.as_deref());
        }
        self.deliver_claimed(rows, &lease, claimed_at)
            .instrument(step)
            .await
    }

    /// Delivers a step's claimed rows and records the outcomes.
    async fn deliver_claimed(
        &self,
        rows: Vec<Row>,
        lease: &str,
        claimed_at: Instant,
    ) -> Result<Step> {
        let n = rows.len();
        let _in_flight = InFlight::new(&self.in_flight, &rows);
        let people = self.people(&rows).await?;
        let mut groups: BTreeMap<(String, String, Uuid, String), Vec<Row>> = BTreeMap::new();
        for row in rows {
            let key = (
                row.firm.clone(),
                row.client_org_number.clone(),
                row.employee_id,
                row.action.clone(),
            );
            groups.entry(key).or_default().push(row);
        }
        let delivered: Vec<Vec<(Row, Verdict)>> = futures_util::stream::iter(groups)
            .map(|((firm, client, employee, action), rows)| {
                let people = &people;
                let span = delivery_span(&firm, &action, &rows);
                async move {
                    let key = GroupKey {
                        firm: &firm,
                        client: &client,
                        employee,
                        action: &action,
                    };
                    // Before the permits: a group waiting for its person to be added by
                    // another holds none.
                    let agent = self.agent_for(&key, people).await;
                    let _firm = self.firm_permit(&firm).await?;
                    let _call = self.calls.acquire().await.map_err(|_| closed())?;
                    // Rows whose lease ran out while they waited are another holder's now.
                    if !self.hold_lease(lease, claimed_at, &rows).await? {
                        tracing::Span::current().record("outcome", "lease lost");
                        return Ok(Vec::new());
                    }
                    let verdicts = self.deliver_group(key, rows, agent, people).await;
                    record_outcome(&tracing::Span::current(), &verdicts);
                    Ok::<_, crate::state::Error>(verdicts)
                }
                .instrument(span)
            })
            // Every group waits on the shared limits, so none is held back by this width.
            .buffer_unordered(n)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        let mut verdicts: Vec<(Row, Verdict)> = delivered.into_iter().flatten().collect();
        self.judge_forbidden(&mut verdicts).await;
        self.note_setup(&verdicts);
        record_outcome(&tracing::Span::current(), &verdicts);
        self.record(lease, &verdicts).await?;
        Ok(Step::Processed(n))
    }

    /// [`Self::finish`], again after a conflict with another replica's step (a deadlock over
    /// the same agents, say): the statement only touches rows this lease still holds, so a
    /// retry is safe. Should it still fail, the rows' leases are given up, so they are due at
    /// once instead of when the lease runs out.
    async fn record(&self, lease: &str, verdicts: &[(Row, Verdict)]) -> Result<()> {
        let mut waits = RECORD_RETRY.waits();
        for _ in 0..RECORD_ATTEMPTS {
            match self.finish(lease, verdicts).await {
                Err(crate::state::Error::Conflict(e)) => {
                    let wait = waits.next_wait();
                    tracing::debug!(error = %e, retry_in = ?wait,
                        "recording a step's outcomes conflicted with another; trying again");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
        let result = self.finish(lease, verdicts).await;
        if result.is_err() {
            let released = sqlx::query(
                r#"UPDATE outbox SET lease_until = NULL
                   WHERE leased_by = $1 AND status = 'pending'"#,
            )
            .bind(lease)
            .execute(&self.pool)
            .await;
            if let Err(e) = released {
                tracing::warn!(error = %e, "could not give up the step's leases");
            }
        }
        result
    }

    /// Holds deliveries back until the guard is dropped: a reconcile's planning and the
    /// deliveries compete for the same database, and planning a full reconcile is a matter of
    /// seconds (measured: a million rows planned in 21 s alone, 37 s beside the deliveries).
    pub(super) fn hold_for_reconcile(&self) -> ReconcileHold<'_> {
        self.reconciling.fetch_add(1, Ordering::SeqCst);
        ReconcileHold(&self.reconciling)
    }
}

/// Deliveries are held back while this lives.
pub(super) struct ReconcileHold<'a>(&'a AtomicUsize);

impl Drop for ReconcileHold<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The span of one group's delivery: a child of the trace of the command that planned its
/// first row (read from the row, so a delivery later or on another replica joins it), linked to
/// the step and to the other rows' traces. Firm, outbox ids and outcome; never the person.
fn delivery_span(firm: &str, action: &str, rows: &[Row]) -> tracing::Span {
    let ids: Vec<String> = rows.iter().map(|r| r.id.to_string()).collect();
    let span = tracing::info_span!(
        "deliver",
        otel.name = %format_args!("deliver {action}"),
        firm,
        action,
        outbox.id = %ids.join(","),
        command.id = %rows.first().map(|r| r.cause).unwrap_or_default(),
        outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let mut traces = rows.iter().filter_map(|r| r.traceparent.as_deref());
    if let Some(first) = traces.next() {
        telemetry::link(
            &span,
            telemetry::traceparent(&tracing::Span::current()).as_deref(),
        );
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

fn permanent(explanation: &str) -> altinn::Error {
    altinn::Error::Permanent(Box::new(altinn::Rejection {
        status: 0,
        code: None,
        validation_errors: Vec::new(),
        explanation: explanation.to_owned(),
        trace_id: None,
    }))
}

fn closed() -> crate::state::Error {
    crate::state::Error::Fatal(sqlx::Error::PoolClosed)
}

/// Our own database failing mid-delivery: the row keeps its lease and is retried later.
fn database(e: sqlx::Error) -> altinn::Error {
    altinn::Error::Transient {
        retry_after: None,
        reason: format!("database: {e}"),
    }
}

/// Locks one of the dispatcher's in-memory maps. They hold caches and counters that every
/// step leaves consistent, so a panic elsewhere while one was held does not make it unusable.
trait Locked<T> {
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> Locked<T> for StdMutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
