//! Claiming due outbox rows fairly across firms, and the leases that keep them ours.

use super::Result;
use super::dispatcher::Dispatcher;
use super::lease::GroupLease;
use super::locked::Locked;
use super::row::Row;
use crate::altinn;
use crate::policy::Action;
use crate::telemetry::ErrorChain;

impl Dispatcher {
    /// Gives up the leases this dispatcher still holds, as it stops: the rows are due at once
    /// for the next holder instead of when the leases run out. Returns how many.
    pub async fn release_leases(&self) -> Result<u64> {
        let released = sqlx::query!(
            r#"UPDATE outbox SET lease_until = NULL
               WHERE status = 'pending' AND lease_until > now()
                 AND starts_with(leased_by, $1 || '/')"#,
            self.id
        )
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(released)
    }

    /// Rows to claim per step: enough to keep every permitted call busy.
    pub fn claim_size(&self) -> i64 {
        // Twice the calls that may be in flight now, so a lane always has work for the limit.
        i64::try_from(self.altinn.pace().current() * 2).unwrap_or(i64::MAX)
    }

    /// Whether the group's rows are still this step's, right before a call for them goes out
    /// (after the wait for a place in the call limit): if not, the group is marked lost and
    /// the error stops the call.
    pub(super) async fn check_lease(
        &self,
        lease: &GroupLease<'_>,
        rows: &[Row],
    ) -> altinn::Result<()> {
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        match lease.step.holds(&self.pool, &ids).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                lease.lose();
                Err(altinn::Error::Transient {
                    retry_after: None,
                    reason: "the lease ran out before the call".to_owned(),
                })
            }
            Err(e) => Err(altinn::Error::Transient {
                retry_after: None,
                reason: format!("database: {}", ErrorChain(&e)),
            }),
        }
    }

    /// Leases up to `limit` due rows, the oldest first but at most a few per firm, so every
    /// firm with work moves and one firm's backlog cannot starve the rest.
    // Long because it is one statement, so the rows are chosen and leased at once; its SQL is
    // most of it.
    pub(super) async fn claim(&self, limit: i64, lease: &str) -> Result<Vec<Row>> {
        let per_firm_rows = self.settings.flush_concurrency_per_firm.max(1) * 2;
        let per_firm = i64::try_from(per_firm_rows).unwrap_or(i64::MAX);
        // Firms other lanes already keep busy are left to them, so lanes spread over firms.
        let busy = self.busy_firms(per_firm_rows);
        // The firms whose oldest due row is oldest, then a few rows of each: one index probe
        // per firm, however long the backlog.
        let firms = (limit / per_firm + 1) * 2;
        let rows = sqlx::query_as!(
            Row,
            r#"UPDATE outbox SET lease_until = now() + make_interval(secs => $2),
                                 leased_by = $3, attempts = attempts + 1
               -- `= ANY(ARRAY(…))`, not `IN (…)`: the planner took `IN` for a hash join over a
               -- sequential scan of the whole outbox, twice per claim; an array of ids is
               -- looked up by the primary key however large the outbox grows.
               WHERE id = ANY(ARRAY(
                   SELECT id FROM outbox WHERE id = ANY(ARRAY(
                       SELECT c.id
                       FROM (SELECT f.org_number, d.next_attempt_at FROM firms f
                             CROSS JOIN LATERAL (
                                 SELECT o.next_attempt_at FROM outbox_claimable o
                                 WHERE o.firm = f.org_number
                                   AND NOT (o.revoke_waits
                                            AND o.created_at > now() - make_interval(secs => $7))
                                 AND ($8 OR o.action <> 'revoke')
                                 ORDER BY o.next_attempt_at, o.id
                                 LIMIT 1) d
                             WHERE (f.flush_paused_until IS NULL OR f.flush_paused_until <= now())
                               AND f.org_number <> ALL($6)
                             ORDER BY d.next_attempt_at
                             LIMIT $5) due
                       CROSS JOIN LATERAL (
                           SELECT o.id, o.next_attempt_at FROM outbox_claimable o
                           WHERE o.firm = due.org_number
                             AND NOT (o.revoke_waits
                                      AND o.created_at > now() - make_interval(secs => $7))
                             -- The kill switch (REVOKES_ENABLED=false) holds every revoke.
                             AND ($8 OR o.action <> 'revoke')
                           ORDER BY o.next_attempt_at, o.id
                           LIMIT $4) c
                       ORDER BY c.next_attempt_at, c.id
                       LIMIT $1))
                   -- Checked again on the locked row: a row another claim leased and
                   -- committed after this statement's snapshot is not taken twice.
                   AND status = 'pending' AND (lease_until IS NULL OR lease_until < now())
                   FOR UPDATE SKIP LOCKED))
               RETURNING id, firm, employee_id, client_org_number, package,
                         action AS "action: Action", attempts,
                         cause, traceparent"#,
            limit,
            self.settings.flush_lease_secs as f64,
            lease,
            per_firm,
            firms,
            &busy,
            self.settings.make_before_break_max_secs as f64,
            self.settings.revokes_enabled
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// The firms with at least `rows` rows in flight over all lanes.
    fn busy_firms(&self, rows: usize) -> Vec<String> {
        self.in_flight
            .locked()
            .iter()
            .filter(|(_, n)| **n >= rows)
            .map(|(firm, _)| firm.clone())
            .collect()
    }
}
