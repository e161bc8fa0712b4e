//! Removing idle agents: an opt-in policy (`REMOVE_IDLE_AGENTS`), off by default.
//!
//! An employee this worker made the firm's agent, with no desired or applied grant and no
//! change on its way, is removed as agent with `cascade=false` sent explicitly. Altinn then
//! refuses while the person still holds packages this worker does not manage, and the person
//! is left alone, with the reason kept for support.

use std::time::Duration;

use sqlx::PgConnection;
use uuid::Uuid;

use super::Result;
use super::dispatch::{Dispatcher, retry_delay};
use crate::altinn::{self, Class};
use crate::telemetry::ErrorChain;

/// How long a person Altinn would not remove is left alone before asking again.
const KEPT_FOR: Duration = Duration::from_secs(24 * 3600);
/// Agents taken per round; the rest follow in the next.
const BATCH: i64 = 100;

impl Dispatcher {
    /// Removes idle agents, when the policy is on and the kill switch lets revokes out.
    /// Returns how many were removed.
    pub async fn remove_idle_agents(&self) -> Result<usize> {
        if !self.settings().remove_idle_agents || !self.settings().revokes_enabled {
            return Ok(0);
        }
        // Claimed by pushing the next attempt ahead, so replicas do not both remove one person.
        let idle = sqlx::query!(
            r#"UPDATE altinn_agents SET removal_due_at = now() + make_interval(secs => $2),
                                        removal_attempts = removal_attempts + 1
               WHERE (firm, employee_id) IN (
                   SELECT a.firm, a.employee_id FROM altinn_agents a
                   JOIN firms f ON f.org_number = a.firm
                   WHERE (a.removal_due_at IS NULL OR a.removal_due_at <= now())
                     AND (f.flush_paused_until IS NULL OR f.flush_paused_until <= now())
                     AND NOT EXISTS (SELECT 1 FROM desired_grants d
                                     WHERE d.firm = a.firm AND d.employee_id = a.employee_id)
                     AND NOT EXISTS (SELECT 1 FROM applied_grants g
                                     WHERE g.firm = a.firm AND g.employee_id = a.employee_id)
                     AND NOT EXISTS (SELECT 1 FROM outbox o
                                     WHERE o.firm = a.firm AND o.employee_id = a.employee_id
                                       AND o.status IN ('pending', 'parked'))
                   LIMIT $1
                   FOR UPDATE OF a SKIP LOCKED)
               RETURNING firm, employee_id, agent_party, removal_attempts"#,
            BATCH,
            self.settings().flush_lease_secs as f64
        )
        .fetch_all(self.pool())
        .await?;
        let mut removed = 0;
        for agent in idle {
            let outcome = match self.firm(&agent.firm).await {
                Ok(party) => {
                    self.altinn()
                        .remove_agent(&party, agent.agent_party, false)
                        .await
                }
                Err(e) => Err(e),
            };
            removed += usize::from(outcome.is_ok());
            self.record_removal(
                &agent.firm,
                agent.employee_id,
                agent.removal_attempts,
                outcome,
            )
            .await?;
        }
        Ok(removed)
    }

    /// Records what became of one removal: the agent forgotten, or its next attempt put off;
    /// an audit row either way.
    async fn record_removal(
        &self,
        firm: &str,
        employee: Uuid,
        attempts: i32,
        outcome: altinn::Result<()>,
    ) -> Result<()> {
        let (audit, detail, wait) = self.removal_verdict(&outcome, attempts);
        let mut tx = self.pool().begin().await?;
        if outcome.is_ok() {
            sqlx::query!(
                "DELETE FROM altinn_agents WHERE firm = $1 AND employee_id = $2",
                firm,
                employee
            )
            .execute(&mut *tx)
            .await?;
            self.forget_agent(firm, employee);
        } else {
            sqlx::query!(
                r#"UPDATE altinn_agents
                   SET removal_due_at = now() + make_interval(secs => $3),
                       kept_reason = CASE WHEN $4 = 'kept' THEN $5 END
                   WHERE firm = $1 AND employee_id = $2"#,
                firm,
                employee,
                wait.unwrap_or_default().as_secs_f64(),
                audit,
                detail.as_deref()
            )
            .execute(&mut *tx)
            .await?;
        }
        audit_removal(&mut tx, firm, employee, audit, detail.as_deref()).await?;
        tx.commit().await?;
        match outcome {
            Ok(()) => tracing::info!(firm, employee.id = %employee, "idle agent removed"),
            Err(e) => {
                tracing::warn!(firm, employee.id = %employee, outcome = audit, error = %ErrorChain(&e),
                "idle agent not removed")
            }
        }
        Ok(())
    }

    /// The audit's outcome of a removal, its detail, and how long until the next attempt: a
    /// person Altinn would not remove is kept for a while, a failure retried with backoff.
    fn removal_verdict(
        &self,
        outcome: &altinn::Result<()>,
        attempts: i32,
    ) -> (&'static str, Option<String>, Option<Duration>) {
        match outcome {
            Ok(()) => ("delivered", None, None),
            Err(altinn::Error::Permanent(r)) => {
                ("kept", Some(r.explanation.clone()), Some(KEPT_FOR))
            }
            Err(e) if e.class() == Class::Permanent => {
                ("kept", Some(e.to_string()), Some(KEPT_FOR))
            }
            Err(e) => (
                "retry",
                Some(e.to_string()),
                Some(retry_delay(self.settings(), e, attempts)),
            ),
        }
    }
}

/// The audit row of a removal, and a wake-up for whoever follows the firm's flush.
async fn audit_removal(
    conn: &mut PgConnection,
    firm: &str,
    employee: Uuid,
    audit: &str,
    detail: Option<&str>,
) -> Result<()> {
    sqlx::query!(
        r#"INSERT INTO audit (firm, employee_id, action, outcome, detail)
           VALUES ($1, $2, 'remove-agent', $3, $4)"#,
        firm,
        employee,
        audit,
        detail
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!("SELECT pg_notify('altinn_sync_flushed', $1)", firm)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
