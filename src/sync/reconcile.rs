//! The nightly reconcile: read what Altinn actually holds, count the drift, and let the normal
//! flush repair it.
//!
//! Two phases, each timed and reported: first every firm's actual state is read from Altinn
//! (firms side by side, within the flush's concurrency limits) into `reconcile_actual`, one firm
//! at a time in memory; then, firm by firm, the drift is counted, Altinn's state becomes
//! `applied_grants`, and the delta is planned into the outbox as for a sync-now, while this
//! worker's deliveries wait. Memory stays bounded by the firms being read at once, however many
//! grants there are.
//!
//! # Guarantees
//! - Only packages in the role mapping, on the firm's agents this worker manages, are compared
//!   and repaired. Packages outside the mapping are never touched.
//! - Adoption (midPoint calls it correlation): an agent given access by hand whose
//!   `personIdentifier` is a known employee of the firm is adopted, and their mapped packages
//!   are managed like those of the agents this worker added itself. Persons AdminFlow does not
//!   know are left alone and reported by party id and name, never by identity number.
//! - Every firm's plan goes through the mass-revoke guard, the first reconcile of a firm too.
//! - A key a dispatcher is delivering, or delivered after the firm was read, keeps its
//!   `applied_grants` state: the read may predate the delivery.
//! - Parked changes are tried again, as the help page promises.
//! - An agent Altinn no longer has is forgotten, so the next grant makes the person an agent
//!   again instead of failing.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use sqlx::PgPool;
use tracing::Instrument;
use uuid::Uuid;

use super::dispatch::{Dispatcher, PACKAGE_URN};
use super::parked::{Requeue, WORKER, requeue_parked};
use super::plan::{Planned, log_staged, plan_flush, trace_planning};
use super::{FlushSettings, Result};
use crate::altinn;
use crate::altinn::wire::CompactEntity;

/// Firms planned at once: the work is PostgreSQL's, and two transactions keep two cores busy.
const APPLY_PARALLELISM: usize = 2;
/// Progress is logged at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Persons left alone named in a reconcile's outcome; the rest are counted.
const LEFT_ALONE_LISTED: usize = 20;

/// What one reconcile found and planned, summed over its firms.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    pub firms: u64,
    /// Desired but missing in Altinn.
    pub missing: u64,
    /// In Altinn but not desired.
    pub extra: u64,
    /// Mapped packages on agents this worker does not know.
    pub unknown: u64,
    /// Agents given access by hand who are known employees, now managed by this worker.
    pub adopted: u64,
    /// Parked changes put back in the queue.
    pub retried: u64,
    pub planned: Planned,
}

/// An agent holding mapped packages whom AdminFlow does not know: left alone.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeftAlone {
    pub firm: String,
    /// The person's party in Altinn.
    pub party: Uuid,
    /// The name Altinn shows.
    pub name: Option<String>,
    /// Mapped packages they hold.
    pub packages: u64,
}

/// One reconcile's outcome, with how long each phase took.
#[derive(Debug)]
pub struct Report {
    pub reconciled: Reconciled,
    /// Firms whose state could not be read from Altinn, with why; they are left as they were.
    pub unread: Vec<(String, String)>,
    /// Persons AdminFlow does not know who hold mapped packages, left alone.
    pub left_alone: Vec<LeftAlone>,
    pub read: Duration,
    pub apply: Duration,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.reconciled;
        write!(
            f,
            "reconciled {} firms: {} missing and {} extra grants drifted, {} packages on unknown \
             persons left alone, {} parked changes retried; planned {} grants and {} revokes; \
             read Altinn in {:.1} s, delta and outbox in {:.1} s",
            r.firms,
            r.missing,
            r.extra,
            r.unknown,
            r.retried,
            r.planned.grants,
            r.planned.revokes,
            self.read.as_secs_f64(),
            self.apply.as_secs_f64()
        )?;
        if r.adopted > 0 {
            write!(
                f,
                "; adopted {} agents given access by hand who are known employees",
                r.adopted
            )?;
        }
        if r.planned.staged > 0 {
            write!(
                f,
                "; {} revokes staged by the mass-revoke guard, waiting for approval",
                r.planned.staged
            )?;
        }
        if !self.unread.is_empty() {
            let names: Vec<&str> = self.unread.iter().map(|(f, _)| f.as_str()).collect();
            write!(f, "; not read: {}", names.join(", "))?;
        }
        if !self.left_alone.is_empty() {
            let listed: Vec<String> = self
                .left_alone
                .iter()
                .take(LEFT_ALONE_LISTED)
                .map(|p| {
                    format!(
                        "party {} ({}) for firm {}",
                        p.party,
                        p.name.as_deref().unwrap_or("no name"),
                        p.firm
                    )
                })
                .collect();
            write!(
                f,
                "; persons AdminFlow does not know, left alone: {}",
                listed.join(", ")
            )?;
            if let Some(more) = self.left_alone.len().checked_sub(LEFT_ALONE_LISTED)
                && more > 0
            {
                write!(f, " and {more} more")?;
            }
        }
        Ok(())
    }
}

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

/// What reading one firm found, besides the grants written to `reconcile_actual`.
struct FirmRead {
    /// When it was read, by the database's clock.
    at: DateTime<Utc>,
    /// Mapped packages on persons AdminFlow does not know.
    unknown: u64,
    adopted: u64,
    left_alone: Vec<LeftAlone>,
}

/// Reads one firm's actual delegations into `reconcile_actual`, as (employee, client, package)
/// for the mapped packages on the agents this worker manages, adopting the known employees
/// among the agents given access by hand. The outer error is our database's.
async fn read_firm(
    pool: &PgPool,
    dispatcher: &Dispatcher,
    org: &str,
    cause: Uuid,
    managed: &HashSet<String>,
) -> Result<altinn::Result<FirmRead>> {
    // By the database's clock, which also stamps deliveries (`finished_at`) and agents
    // (`added_at`): a delivery recorded after this may not show in the reading.
    let read_at: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(pool)
        .await?;
    let actual = match actual(dispatcher, org).await {
        Ok(actual) => actual,
        Err(e) => return Ok(Err(e)),
    };
    let mut agents: HashMap<Uuid, Uuid> = sqlx::query_as::<_, (Uuid, Uuid)>(
        "SELECT agent_party, employee_id FROM altinn_agents WHERE firm = $1",
    )
    .bind(org)
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    // Agents removed in Altinn (by hand, or a simulator that started empty) are forgotten, so
    // the next grant adds the person again. One added since the read began is kept.
    let listed: Vec<Uuid> = actual.agents.iter().map(|a| a.id).collect();
    let gone: Vec<Uuid> = sqlx::query_scalar(
        r#"DELETE FROM altinn_agents
           WHERE firm = $1 AND agent_party <> ALL($2) AND added_at < $3
           RETURNING employee_id"#,
    )
    .bind(org)
    .bind(&listed)
    .bind(read_at)
    .fetch_all(pool)
    .await?;
    for employee in gone {
        dispatcher.forget_agent(org, employee);
    }
    // The agents Altinn lists that this worker does not manage, with their identities.
    let (parties, identities): (Vec<Uuid>, Vec<String>) = actual
        .agents
        .iter()
        .filter(|a| !agents.contains_key(&a.id))
        .filter_map(|a| Some((a.id, a.person_identifier.clone()?)))
        .unzip();
    let adopted = adopt(pool, org, parties, identities).await?;
    let adopted_count = adopted.len() as u64;
    agents.extend(adopted);
    let mut held = Vec::with_capacity(actual.packages.len());
    let mut strangers: HashMap<Uuid, u64> = HashMap::new();
    for (agent, client, package) in actual.packages {
        if !managed.contains(&package) {
            continue;
        }
        match agents.get(&agent) {
            Some(employee) => held.push((*employee, client, package)),
            None => *strangers.entry(agent).or_default() += 1,
        }
    }
    let unknown = strangers.values().sum();
    let mut left_alone: Vec<LeftAlone> = actual
        .agents
        .iter()
        .filter_map(|a| {
            strangers.get(&a.id).map(|&packages| LeftAlone {
                firm: org.to_owned(),
                party: a.id,
                name: a.name.clone(),
                packages,
            })
        })
        .collect();
    left_alone.sort_by_key(|p| p.party);
    // A package Altinn lists twice (under two roles, say) is held once.
    held.sort_unstable();
    held.dedup();
    let (mut employees, mut clients, mut packages) = (
        Vec::with_capacity(held.len()),
        Vec::with_capacity(held.len()),
        Vec::with_capacity(held.len()),
    );
    for (employee, client, package) in held {
        employees.push(employee);
        clients.push(client);
        packages.push(package);
    }
    sqlx::query(
        r#"INSERT INTO reconcile_actual (command_id, firm, employee_id, client_org_number, package)
           SELECT $1, $2, * FROM unnest($3::uuid[], $4::text[], $5::text[])"#,
    )
    .bind(cause)
    .bind(org)
    .bind(&employees)
    .bind(&clients)
    .bind(&packages)
    .execute(pool)
    .await?;
    Ok(Ok(FirmRead {
        at: read_at,
        unknown,
        adopted: adopted_count,
        left_alone,
    }))
}

/// Adopts the agents Altinn lists (`parties`, with their `identities`) that this worker does
/// not manage yet and whose `personIdentifier` is a known employee of the firm: they join
/// `altinn_agents`, as if this worker had added them. Returns (agent party, employee) of each.
async fn adopt(
    pool: &PgPool,
    org: &str,
    parties: Vec<Uuid>,
    identities: Vec<String>,
) -> Result<Vec<(Uuid, Uuid)>> {
    if parties.is_empty() {
        return Ok(Vec::new());
    }
    // An employee already managed under another party keeps it (ON CONFLICT): Altinn lists
    // one party per person, so that row is the newer one, added since the read.
    let adopted = sqlx::query_as(
        r#"INSERT INTO altinn_agents (firm, employee_id, agent_party)
           SELECT DISTINCT ON (a.party) $1, e.employee_id, a.party
           FROM unnest($2::uuid[], $3::text[]) AS a(party, identity)
           JOIN employee_identities e
             ON e.firm = $1 AND e.national_identity_number = a.identity
           ORDER BY a.party, e.employee_id
           ON CONFLICT (firm, employee_id) DO NOTHING
           RETURNING agent_party, employee_id"#,
    )
    .bind(org)
    .bind(&parties)
    .bind(&identities)
    .fetch_all(pool)
    .await?;
    Ok(adopted)
}

struct Actual {
    agents: Vec<CompactEntity>,
    /// (agent party, client org number, package without its URN prefix).
    packages: Vec<(Uuid, String, String)>,
}

/// The firm's agents and every package they hold, the agents read side by side within the
/// flush's limits.
async fn actual(dispatcher: &Dispatcher, org: &str) -> altinn::Result<Actual> {
    let firm = dispatcher.firm(org).await?;
    let agents: Vec<CompactEntity> = {
        let _permits = dispatcher.call_permits(org).await;
        dispatcher.altinn().agents(&firm).await?
    }
    .into_iter()
    .map(|a| a.agent)
    .collect();
    // A plain list: a stream over a mapping iterator is a closure held across the awaits, which
    // trips up the compiler's proof that the future is `Send` (rust-lang/rust#102211).
    let ids: Vec<Uuid> = agents.iter().map(|a| a.id).collect();
    let held: Vec<Vec<(Uuid, String, String)>> = futures_util::stream::iter(ids)
        .map(|agent| {
            let firm = &firm;
            async move {
                let _permits = dispatcher.call_permits(org).await;
                let clients = dispatcher.altinn().agent_packages(firm, agent).await?;
                let mut out = Vec::new();
                for client in clients {
                    let Some(client_org) = client.client.organization_identifier else {
                        continue;
                    };
                    for package in client.access.into_iter().flat_map(|a| a.packages) {
                        let Some(urn) = package.urn else { continue };
                        let name = urn.strip_prefix(PACKAGE_URN).unwrap_or(&urn).to_owned();
                        out.push((agent, client_org.clone(), name));
                    }
                }
                Ok::<_, altinn::Error>(out)
            }
        })
        .buffer_unordered(dispatcher.settings().flush_concurrency_per_firm.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<altinn::Result<_>>()?;
    Ok(Actual {
        agents,
        packages: held.into_iter().flatten().collect(),
    })
}

/// One firm's second phase, in one transaction: drift counted against the facts, Altinn's
/// state made `applied_grants`, parked changes re-queued, the delta planned.
struct Applied {
    missing: u64,
    extra: u64,
    retried: u64,
    planned: Planned,
}

async fn apply_firm(
    pool: &PgPool,
    firm: &str,
    cause: Uuid,
    read_at: DateTime<Utc>,
    settings: &FlushSettings,
) -> Result<Applied> {
    let mut tx = pool.begin().await?;
    // Everything here is planned again by the next reconcile or sync-now, so a crash may lose
    // the last few commits: no need to wait for each firm's flush to disk.
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    // One statement, each of the firm's sets read once from its index: the drift counted
    // against the facts, then Altinn's state made `applied_grants` by writing only the
    // differences (in a steady state, a handful of rows). Keys a dispatcher is delivering, or
    // delivered since the read, keep what the dispatcher recorded: the read may predate it.
    const TOUCHED: &str = r#"EXISTS (
        SELECT 1 FROM outbox o
        WHERE o.firm = $1 AND o.employee_id = k.employee_id
          AND o.client_org_number = k.client_org_number AND o.package = k.package
          AND ((o.status = 'pending' AND o.lease_until > now()) OR o.finished_at >= $2))"#;
    // Built from constants only; every value is bound.
    let (missing, extra): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"WITH actual AS MATERIALIZED (
               SELECT employee_id, client_org_number, package FROM reconcile_actual
               WHERE command_id = $3 AND firm = $1
           ), applied AS MATERIALIZED (
               SELECT employee_id, client_org_number, package FROM applied_grants
               WHERE firm = $1
           ), desired AS MATERIALIZED (
               SELECT employee_id, client_org_number, package FROM desired_grants
               WHERE firm = $1
           ), gone AS (
               SELECT * FROM applied EXCEPT SELECT * FROM actual
           ), new AS (
               SELECT * FROM actual EXCEPT SELECT * FROM applied
           ), forgotten AS (
               DELETE FROM applied_grants k USING gone g
               WHERE k.firm = $1 AND k.employee_id = g.employee_id
                 AND k.client_org_number = g.client_org_number AND k.package = g.package
                 AND NOT {TOUCHED}
           ), learnt AS (
               INSERT INTO applied_grants (firm, employee_id, client_org_number, package)
               SELECT $1, k.employee_id, k.client_org_number, k.package FROM new k
               WHERE NOT {TOUCHED}
               ON CONFLICT DO NOTHING
           )
           SELECT (SELECT count(*) FROM (SELECT * FROM desired EXCEPT SELECT * FROM actual) m),
                  (SELECT count(*) FROM (SELECT * FROM actual EXCEPT SELECT * FROM desired) e)"#
    )))
    .bind(firm)
    .bind(read_at)
    .bind(cause)
    .fetch_one(&mut *tx)
    .await?;
    // The help page promises that the nightly run tries refused changes again.
    let retried = requeue_parked(&mut tx, firm, Requeue::All, WORKER).await?;
    trace_planning(&mut tx).await?;
    let planned = plan_flush(&mut tx, firm, cause, settings).await?;
    sqlx::query("DELETE FROM reconcile_actual WHERE command_id = $1 AND firm = $2")
        .bind(cause)
        .bind(firm)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Applied {
        missing: missing.unsigned_abs(),
        extra: extra.unsigned_abs(),
        retried,
        planned,
    })
}

/// Logs how far a long phase has got, at most every [`PROGRESS_EVERY`].
struct Progress {
    phase: &'static str,
    total: usize,
    done: usize,
    last: Instant,
}

impl Progress {
    fn new(phase: &'static str, total: usize) -> Self {
        Self {
            phase,
            total,
            done: 0,
            last: Instant::now(),
        }
    }

    fn tick(&mut self) {
        self.done += 1;
        if self.last.elapsed() >= PROGRESS_EVERY || self.done == self.total {
            self.last = Instant::now();
            tracing::info!(
                phase = self.phase,
                firms.done = self.done,
                firms.total = self.total,
                "reconcile progress"
            );
        }
    }
}
