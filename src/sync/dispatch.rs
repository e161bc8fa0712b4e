//! Delivering outbox rows to Altinn.
//!
//! # Guarantees
//! - Rows are claimed with `FOR UPDATE SKIP LOCKED` and a lease; a killed worker's rows are
//!   taken over once the lease runs out.
//! - An outcome, the `applied_grants` change and the audit row commit in one transaction, and
//!   only while this dispatcher still holds the lease.
//! - A transient failure keeps the row, with its next attempt time persisted; a permanent one
//!   parks it with Altinn's code and an explanation in plain words.
//! - Make before break: a revoke is not claimed while a grant on the same client is pending,
//!   so a project-accountant transfer never leaves the client without its accountant.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;
use sqlx::PgPool;
use std::sync::Arc;

use futures_util::StreamExt;
use tokio::sync::{Mutex, Semaphore};
use uuid::Uuid;

use super::{FlushSettings, Result};
use crate::altinn::wire::{DelegationBatch, PersonInput};
use crate::altinn::{self, AltinnClient, Class, Firm};

/// Altinn's prefix for access-package URNs.
pub(super) const PACKAGE_URN: &str = "urn:altinn:accesspackage:";

/// What one dispatch step did; the loop runs steps until `Idle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Processed(usize),
    Idle,
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
    cause: Uuid,
}

/// A client of the firm as Altinn knows it: its party and the role it gave the firm.
#[derive(Debug, Clone)]
struct AltinnClientParty {
    party: Uuid,
    role: String,
}

/// Per (firm, employee) locks around making the person an agent.
type AgentLocks = HashMap<(String, Uuid), Arc<Mutex<()>>>;

pub struct Dispatcher {
    pool: PgPool,
    altinn: AltinnClient,
    settings: FlushSettings,
    /// One lock per (firm, employee), held while making the person an agent, so two deliveries
    /// for one new employee do not both look the person up (failed lookups count towards
    /// Altinn's lock-out), while different employees go ahead in parallel.
    agent_locks: Mutex<AgentLocks>,
    id: String,
    /// Party lookups, per firm: they change rarely and cost a call each.
    firms: Mutex<HashMap<String, Firm>>,
    clients: Mutex<HashMap<String, HashMap<String, AltinnClientParty>>>,
}

impl Dispatcher {
    pub fn new(pool: PgPool, altinn: AltinnClient, settings: FlushSettings) -> Self {
        Self {
            pool,
            altinn,
            settings,
            agent_locks: Mutex::default(),
            id: format!("dispatcher-{}", Uuid::new_v4()),
            firms: Mutex::default(),
            clients: Mutex::default(),
        }
    }

    pub(super) fn altinn(&self) -> &AltinnClient {
        &self.altinn
    }

    /// Rows to claim per step: enough to keep every permitted call busy.
    pub fn claim_size(&self) -> i64 {
        (self.settings.flush_concurrency.max(1) * 8) as i64
    }

    /// Claims up to `limit` due rows and delivers them, one Altinn call per
    /// (firm, client, employee, action).
    pub async fn step(&self, limit: i64) -> Result<Step> {
        let rows: Vec<Row> = sqlx::query_as(
            r#"UPDATE outbox SET lease_until = now() + make_interval(secs => $2),
                                 leased_by = $3, attempts = attempts + 1
               WHERE id IN (SELECT id FROM outbox
                            WHERE status = 'pending' AND next_attempt_at <= now()
                              AND (lease_until IS NULL OR lease_until < now())
                              -- Make before break: a revoke waits while a grant on the same
                              -- client (a new project accountant's, say) has no final outcome.
                              AND NOT (action = 'revoke' AND EXISTS (
                                  SELECT 1 FROM outbox g
                                  WHERE g.firm = outbox.firm
                                    AND g.client_org_number = outbox.client_org_number
                                    AND g.action = 'grant' AND g.status = 'pending'))
                            ORDER BY next_attempt_at, id
                            LIMIT $1
                            FOR UPDATE SKIP LOCKED)
               RETURNING id, firm, employee_id, client_org_number, package, action, attempts,
                         cause"#,
        )
        .bind(limit)
        .bind(self.settings.flush_lease_secs as f64)
        .bind(&self.id)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Ok(Step::Idle);
        }
        let n = rows.len();
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
        // One Altinn call per group, up to the overall limit at once and the per-firm limit
        // for any one firm. Each group finishes in its own transaction.
        let per_firm: HashMap<String, Arc<Semaphore>> = groups
            .keys()
            .map(|k| {
                (
                    k.0.clone(),
                    Arc::new(Semaphore::new(
                        self.settings.flush_concurrency_per_firm.max(1),
                    )),
                )
            })
            .collect();
        let results: Vec<Result<()>> = futures_util::stream::iter(groups)
            .map(|((firm, client, employee, action), rows)| {
                let limit = per_firm[&firm].clone();
                async move {
                    let _permit = limit.acquire_owned().await.map_err(|_| closed())?;
                    self.deliver_group(&firm, &client, employee, &action, &rows)
                        .await
                }
            })
            .buffer_unordered(self.settings.flush_concurrency.max(1))
            .collect()
            .await;
        results.into_iter().collect::<Result<()>>()?;
        Ok(Step::Processed(n))
    }

    async fn deliver_group(
        &self,
        firm: &str,
        client: &str,
        employee: Uuid,
        action: &str,
        rows: &[Row],
    ) -> Result<()> {
        match self.deliver(firm, client, employee, action, rows).await {
            // A batch refused for one package: deliver the packages one by one.
            Err(e) if e.class() == Class::Permanent && rows.len() > 1 => {
                for row in rows {
                    let single = std::slice::from_ref(row);
                    let outcome = self.deliver(firm, client, employee, action, single).await;
                    self.finish(single, outcome).await?;
                }
                Ok(())
            }
            outcome => self.finish(rows, outcome).await,
        }
    }

    async fn deliver(
        &self,
        firm: &str,
        client_org: &str,
        employee: Uuid,
        action: &str,
        rows: &[Row],
    ) -> altinn::Result<()> {
        let firm = self.firm(firm).await?;
        let client = self.client(&firm, client_org).await?;
        let agent = self.agent(&firm, employee).await?;
        let packages = rows.iter().map(|r| format!("{PACKAGE_URN}{}", r.package));
        let batch = DelegationBatch::for_role(&client.role, packages);
        if action == "grant" {
            self.altinn
                .delegate(&firm, client.party, agent, &batch)
                .await?;
        } else {
            self.altinn
                .revoke(&firm, client.party, agent, &batch)
                .await?;
        }
        Ok(())
    }

    pub(super) async fn firm(&self, org: &str) -> altinn::Result<Firm> {
        if let Some(f) = self.firms.lock().await.get(org) {
            return Ok(f.clone());
        }
        let firm = self.altinn.firm_party(org).await?;
        self.firms.lock().await.insert(org.to_owned(), firm.clone());
        Ok(firm)
    }

    async fn client(&self, firm: &Firm, client_org: &str) -> altinn::Result<AltinnClientParty> {
        if let Some(c) = self
            .clients
            .lock()
            .await
            .get(&firm.org_number)
            .and_then(|m| m.get(client_org))
        {
            return Ok(c.clone());
        }
        let listed = self.altinn.clients(firm).await?;
        let by_org: HashMap<String, AltinnClientParty> = listed
            .into_iter()
            .filter_map(|c| {
                let org = c.client.organization_identifier.clone()?;
                let role = c.access.first()?.role.code.clone()?;
                Some((
                    org,
                    AltinnClientParty {
                        party: c.client.id,
                        role,
                    },
                ))
            })
            .collect();
        let found = by_org.get(client_org).cloned();
        self.clients
            .lock()
            .await
            .insert(firm.org_number.clone(), by_org);
        found.ok_or_else(|| not_a_client(client_org))
    }

    /// The employee's agent party, adding the person as agent the first time.
    async fn agent(&self, firm: &Firm, employee: Uuid) -> altinn::Result<Uuid> {
        let lock = self
            .agent_locks
            .lock()
            .await
            .entry((firm.org_number.clone(), employee))
            .or_default()
            .clone();
        let _one_per_person = lock.lock().await;
        let known: Option<Uuid> = sqlx::query_scalar(
            "SELECT agent_party FROM altinn_agents WHERE firm = $1 AND employee_id = $2",
        )
        .bind(&firm.org_number)
        .bind(employee)
        .fetch_optional(&self.pool)
        .await
        .map_err(database)?;
        if let Some(agent) = known {
            return Ok(agent);
        }
        let identity: Option<(String, String)> = sqlx::query_as(
            r#"SELECT national_identity_number, last_name FROM employee_identities
               WHERE firm = $1 AND employee_id = $2"#,
        )
        .bind(&firm.org_number)
        .bind(employee)
        .fetch_optional(&self.pool)
        .await
        .map_err(database)?;
        let Some((nin, last_name)) = identity else {
            return Err(permanent(
                "no identity is known for the employee; AdminFlow has sent none",
            ));
        };
        let person = PersonInput {
            person_identifier: nin,
            last_name,
        };
        let assignment = self.altinn.add_agent(firm, &person).await?;
        sqlx::query(
            r#"INSERT INTO altinn_agents (firm, employee_id, agent_party) VALUES ($1, $2, $3)
               ON CONFLICT (firm, employee_id) DO UPDATE SET agent_party = excluded.agent_party"#,
        )
        .bind(&firm.org_number)
        .bind(employee)
        .bind(assignment.to_id)
        .execute(&self.pool)
        .await
        .map_err(database)?;
        Ok(assignment.to_id)
    }

    /// Records the outcome of `rows` in one transaction, if this dispatcher still holds them.
    async fn finish(&self, rows: &[Row], outcome: altinn::Result<()>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for row in rows {
            let still_ours: bool = sqlx::query_scalar(
                "SELECT leased_by = $2 AND status = 'pending' FROM outbox WHERE id = $1 FOR UPDATE",
            )
            .bind(row.id)
            .bind(&self.id)
            .fetch_one(&mut *tx)
            .await?;
            if !still_ours {
                continue;
            }
            let (outcome_name, detail, trace) = match &outcome {
                Ok(()) => {
                    self.delivered(&mut tx, row).await?;
                    ("delivered", None, None)
                }
                Err(e) if e.class() == Class::Permanent => {
                    let (explanation, trace) = match e {
                        altinn::Error::Permanent(r) => (r.explanation.clone(), r.trace_id.clone()),
                        other => (other.to_string(), None),
                    };
                    sqlx::query(
                        r#"UPDATE outbox SET status = 'parked', explanation = $2, last_error = $2,
                                             lease_until = NULL, finished_at = now()
                           WHERE id = $1"#,
                    )
                    .bind(row.id)
                    .bind(&explanation)
                    .execute(&mut *tx)
                    .await?;
                    ("parked", Some(explanation), trace)
                }
                Err(e) => {
                    let wait = retry_delay(&self.settings, e, row.attempts);
                    sqlx::query(
                        r#"UPDATE outbox SET last_error = $2, lease_until = NULL,
                                             next_attempt_at = now() + make_interval(secs => $3)
                           WHERE id = $1"#,
                    )
                    .bind(row.id)
                    .bind(e.to_string())
                    .bind(wait.as_secs_f64())
                    .execute(&mut *tx)
                    .await?;
                    ("retry", Some(e.to_string()), None)
                }
            };
            sqlx::query(
                r#"INSERT INTO audit (firm, employee_id, client_org_number, package, action,
                                      outcome, cause, outbox_id, detail, altinn_trace_id)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"#,
            )
            .bind(&row.firm)
            .bind(row.employee_id)
            .bind(&row.client_org_number)
            .bind(&row.package)
            .bind(&row.action)
            .bind(outcome_name)
            .bind(row.cause)
            .bind(row.id)
            .bind(detail)
            .bind(trace)
            .execute(&mut *tx)
            .await?;
        }
        // Delivered on commit: lets tests and tools wait for the flush without polling.
        sqlx::query("SELECT pg_notify('altinn_sync_flushed', $1)")
            .bind(&rows[0].firm)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if let Err(e) = &outcome {
            tracing::warn!(
                firm = %rows[0].firm, client = %rows[0].client_org_number,
                employee.id = %rows[0].employee_id, action = %rows[0].action,
                class = ?e.class(), error = %e, "Altinn change not delivered"
            );
        }
        Ok(())
    }

    async fn delivered(&self, tx: &mut sqlx::PgConnection, row: &Row) -> Result<()> {
        sqlx::query(
            r#"UPDATE outbox SET status = 'delivered', lease_until = NULL, last_error = NULL,
                                 finished_at = now()
               WHERE id = $1"#,
        )
        .bind(row.id)
        .execute(&mut *tx)
        .await?;
        let sql = if row.action == "grant" {
            r#"INSERT INTO applied_grants (firm, employee_id, client_org_number, package)
               VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING"#
        } else {
            r#"DELETE FROM applied_grants
               WHERE firm = $1 AND employee_id = $2 AND client_org_number = $3 AND package = $4"#
        };
        sqlx::query(sql)
            .bind(&row.firm)
            .bind(row.employee_id)
            .bind(&row.client_org_number)
            .bind(&row.package)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

/// Exponential backoff with jitter for the `attempts`th failure, or what Altinn asked for.
fn retry_delay(settings: &FlushSettings, e: &altinn::Error, attempts: i32) -> Duration {
    let mut policy = ExponentialBackoff {
        initial_interval: Duration::from_millis(settings.flush_retry_initial_ms),
        max_interval: Duration::from_secs(settings.flush_retry_max_secs),
        randomization_factor: 0.3,
        multiplier: 2.0,
        max_elapsed_time: None,
        ..ExponentialBackoff::default()
    };
    let mut wait = Duration::from_secs(1);
    for _ in 0..attempts.max(1) {
        wait = policy.next_backoff().unwrap_or(policy.max_interval);
    }
    // A paused firm (403, system user not approved) waits long: a person must act first.
    if e.class() == Class::FirmLevel {
        wait = wait.max(Duration::from_secs(900));
    }
    e.retry_after().map_or(wait, |asked| asked.max(wait))
}

fn not_a_client(client_org: &str) -> altinn::Error {
    permanent(&format!(
        "{client_org} is not among the firm's clients in Altinn: the firm is not registered as \
         accountant for this client in the Register of Legal Entities"
    ))
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
