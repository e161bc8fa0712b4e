//! Recording a step's outcomes: the rows, `applied_grants`, the audit and new agents, in one
//! statement, for the rows whose lease the step still holds.

use uuid::Uuid;

use super::Result;
use super::dispatcher::Dispatcher;
use super::locked::Locked;
use super::row::{Row, Verdict};
use crate::policy::Action;
use crate::telemetry::metrics;

impl Dispatcher {
    /// Records every outcome of a step in one statement, for the rows this dispatcher still
    /// holds: the row's new state, `applied_grants`, the audit, and the firm's pause lifted by
    /// a delivery. A row whose lease ran out and was taken over is left to its new holder.
    pub(super) async fn finish(&self, lease: &str, verdicts: &[(Row, Verdict)]) -> Result<()> {
        let outcomes = Outcomes::of(verdicts);
        let agents = std::mem::take(&mut *self.unsaved_agents.locked());
        if let Err(e) = self.record_outcomes(lease, &outcomes, &agents).await {
            // Saved with the next step's outcomes instead.
            self.unsaved_agents.locked().extend(agents);
            return Err(e.into());
        }
        count_deliveries(verdicts, &outcomes.outcomes);
        Ok(())
    }

    /// The statement [`Self::finish`] runs, with the agents added since the last one.
    // Long because it is one statement, so every outcome commits together and only while the
    // lease holds; its SQL is most of it.
    async fn record_outcomes(
        &self,
        lease: &str,
        o: &Outcomes,
        agents: &[(String, Uuid, Uuid)],
    ) -> sqlx::Result<()> {
        let agent_firms: Vec<&str> = agents.iter().map(|a| a.0.as_str()).collect();
        let agent_employees: Vec<Uuid> = agents.iter().map(|a| a.1).collect();
        let agent_parties: Vec<Uuid> = agents.iter().map(|a| a.2).collect();
        sqlx::query!(
            r#"WITH input AS (
                   SELECT * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[],
                                        $6::float8[]) AS i(id, outcome, detail, trace, wait)
               ), agents AS (
                   INSERT INTO altinn_agents (firm, employee_id, agent_party)
                   SELECT * FROM unnest($7::text[], $8::uuid[], $9::uuid[])
                   -- One order for every replica, so two steps adding the same people do not
                   -- deadlock.
                   ORDER BY 1, 2
                   ON CONFLICT (firm, employee_id) DO UPDATE SET agent_party = excluded.agent_party
               ), done AS (
                   UPDATE outbox o
                   SET status = CASE WHEN i.outcome = 'retry' THEN 'pending' ELSE i.outcome END,
                       lease_until = NULL,
                       finished_at = CASE WHEN i.outcome = 'retry' THEN NULL ELSE now() END,
                       last_error = CASE WHEN i.outcome = 'delivered' THEN NULL ELSE i.detail END,
                       explanation = CASE WHEN i.outcome = 'parked' THEN i.detail END,
                       next_attempt_at = CASE WHEN i.outcome = 'retry'
                                              THEN now() + make_interval(secs => i.wait)
                                              ELSE o.next_attempt_at END
                   FROM input i
                   WHERE o.id = i.id AND o.leased_by = $1 AND o.status = 'pending'
                   RETURNING o.id, o.firm, o.employee_id, o.client_org_number, o.package,
                             o.action, o.cause, i.outcome, i.detail, i.trace
               ), granted AS (
                   INSERT INTO applied_grants (firm, employee_id, client_org_number, package)
                   SELECT firm, employee_id, client_org_number, package FROM done
                   WHERE outcome = 'delivered' AND action = 'grant'
                   ON CONFLICT DO NOTHING
               ), revoked AS (
                   DELETE FROM applied_grants a USING done d
                   WHERE d.outcome = 'delivered' AND d.action = 'revoke' AND a.firm = d.firm
                     AND a.employee_id = d.employee_id
                     AND a.client_org_number = d.client_org_number AND a.package = d.package
               ), audited AS (
                   INSERT INTO audit (firm, employee_id, client_org_number, package, action,
                                      outcome, cause, outbox_id, detail, altinn_trace_id)
                   SELECT firm, employee_id, client_org_number, package, action, outcome, cause,
                          id, detail, trace
                   FROM done
               ), resumed AS (
                   UPDATE firms SET flush_paused_at = NULL, flush_paused_until = NULL,
                                    flush_pause_reason = NULL
                   WHERE flush_paused_at IS NOT NULL
                     AND org_number IN (SELECT firm FROM done WHERE outcome = 'delivered')
               )
               -- Delivered on commit: lets tests and tools wait for the flush without polling.
               SELECT pg_notify('altinn_sync_flushed', firm) FROM (SELECT DISTINCT firm FROM done) f"#,
            lease,
            &o.ids,
            &o.outcomes as &[&str],
            &o.details as &[Option<String>],
            &o.traces as &[Option<String>],
            &o.waits,
            &agent_firms as &[&str],
            &agent_employees,
            &agent_parties
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// A step's outcomes as columns, one entry per row, for `unnest`.
struct Outcomes {
    ids: Vec<i64>,
    /// `delivered`, `parked` or `retry`.
    outcomes: Vec<&'static str>,
    details: Vec<Option<String>>,
    traces: Vec<Option<String>>,
    /// Seconds until a retried row's next attempt.
    waits: Vec<f64>,
}

impl Outcomes {
    fn of(verdicts: &[(Row, Verdict)]) -> Self {
        let mut o = Self {
            ids: Vec::with_capacity(verdicts.len()),
            outcomes: Vec::with_capacity(verdicts.len()),
            details: Vec::with_capacity(verdicts.len()),
            traces: Vec::with_capacity(verdicts.len()),
            waits: Vec::with_capacity(verdicts.len()),
        };
        for (row, verdict) in verdicts {
            o.ids.push(row.id);
            let (outcome, detail, trace, wait) = match verdict {
                Verdict::Delivered(note) => ("delivered", note.clone(), None, 0.0),
                Verdict::Parked { explanation, trace } => {
                    ("parked", Some(explanation.clone()), trace.clone(), 0.0)
                }
                Verdict::Retry { error, wait, .. } => {
                    ("retry", Some(error.clone()), None, wait.as_secs_f64())
                }
            };
            o.outcomes.push(outcome);
            o.details.push(detail);
            o.traces.push(trace);
            o.waits.push(wait);
        }
        o
    }
}

/// Counts the recorded outcomes, one increment per label pair rather than per row; rows
/// another holder took over are counted by it, roughly.
fn count_deliveries(verdicts: &[(Row, Verdict)], outcomes: &[&str]) {
    let mut counts = [[0_u64; 3]; 2];
    for ((row, _), outcome) in verdicts.iter().zip(outcomes) {
        let action = usize::from(row.action == Action::Revoke);
        let outcome = match *outcome {
            "delivered" => 0,
            "parked" => 1,
            _ => 2,
        };
        counts[action][outcome] += 1;
    }
    for (action, by_outcome) in Action::ALL.into_iter().zip(counts) {
        for (outcome, n) in ["delivered", "parked", "retried"]
            .into_iter()
            .zip(by_outcome)
        {
            if n > 0 {
                metrics::deliveries(action, outcome, n);
            }
        }
    }
}
