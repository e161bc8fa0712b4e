//! A step's lease on the rows it claimed: kept alive while the step runs, and checked right
//! before each call goes out, so a row never goes to Altinn from two holders.
//!
//! The lease protects against a dead worker, not a slow one: while the step runs, its rows are
//! renewed every third of the lease. A call may still wait for a place in the call limit
//! longer than the lease should the renewals fail (the database away); so before each call
//! the rows are checked, and renewed if the last renewal is a third of the lease old.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::Mutex;

use super::Result;
use crate::telemetry::ErrorChain;

/// The lease of one step (one claim) on its rows.
pub(super) struct StepLease {
    /// The claim's name in `outbox.leased_by`.
    pub(super) name: String,
    ids: Vec<i64>,
    length: Duration,
    held: Mutex<Held>,
}

/// What the last renewal found.
struct Held {
    /// When it was sent: the rows it renewed are held for a lease from then, at least.
    renewed_at: Instant,
    /// The step's rows another holder has now.
    lost: HashSet<i64>,
}

impl StepLease {
    pub(super) fn new(name: String, ids: Vec<i64>, length: Duration, claimed_at: Instant) -> Self {
        Self {
            name,
            ids,
            length,
            held: Mutex::new(Held {
                renewed_at: claimed_at,
                lost: HashSet::new(),
            }),
        }
    }

    /// Whether every one of `ids` is still this step's. Within a third of the lease after the
    /// last renewal they certainly are (a lease only passes on once it has run out), so a fast
    /// step costs no statement; later, the step's rows are renewed first.
    pub(super) async fn holds(&self, pool: &PgPool, ids: &[i64]) -> Result<bool> {
        let mut held = self.held.lock().await;
        if held.renewed_at.elapsed() >= self.length / 3 {
            self.renew(pool, &mut held).await?;
        }
        let holds = ids.iter().all(|id| !held.lost.contains(id));
        if !holds {
            tracing::warn!(
                lease = %self.name,
                rows = ids.len(),
                "lease ran out before the Altinn call; leaving the rows to their new holder"
            );
        }
        Ok(holds)
    }

    /// Runs `work` (the step's calls) while renewing the lease: the rows stay the step's
    /// however long the calls wait.
    pub(super) async fn kept_during<F: std::future::Future>(
        &self,
        pool: &PgPool,
        work: F,
    ) -> F::Output {
        tokio::select! {
            out = work => out,
            never = self.keep(pool) => match never {},
        }
    }

    /// Renews the lease every third of it, for as long as the step runs (this never ends: the
    /// step drops it). A failed renewal is tried again at the next; the check before each call
    /// still holds.
    async fn keep(&self, pool: &PgPool) -> std::convert::Infallible {
        let mut next = self.held.lock().await.renewed_at + self.length / 3;
        loop {
            tokio::time::sleep_until(next.into()).await;
            let mut held = self.held.lock().await;
            // A check before a call may have renewed it meanwhile.
            if held.renewed_at.elapsed() < self.length / 3 {
                next = held.renewed_at + self.length / 3;
                continue;
            }
            next = match self.renew(pool, &mut held).await {
                Ok(()) => held.renewed_at + self.length / 3,
                Err(e) => {
                    tracing::warn!(lease = %self.name, error = %ErrorChain(&e),
                        "could not renew the step's lease; trying again");
                    Instant::now() + self.length / 3
                }
            };
        }
    }

    /// One statement for every row the step still holds; the others are lost to it.
    async fn renew(&self, pool: &PgPool, held: &mut Held) -> Result<()> {
        let at = Instant::now();
        let renewed = sqlx::query_scalar!(
            r#"UPDATE outbox SET lease_until = now() + make_interval(secs => $3)
               WHERE id = ANY($1) AND leased_by = $2 AND status = 'pending'
               RETURNING id"#,
            &self.ids,
            self.name,
            self.length.as_secs_f64()
        )
        .fetch_all(pool)
        .await?;
        let renewed: HashSet<i64> = renewed.into_iter().collect();
        held.lost = self
            .ids
            .iter()
            .copied()
            .filter(|id| !renewed.contains(id))
            .collect();
        held.renewed_at = at;
        Ok(())
    }
}

/// A group's share of the step's lease.
pub(super) struct GroupLease<'a> {
    pub(super) step: &'a StepLease,
    /// Set once the group's rows were found to be another holder's: nothing of it is recorded.
    lost: AtomicBool,
}

impl<'a> GroupLease<'a> {
    pub(super) fn new(step: &'a StepLease) -> Self {
        Self {
            step,
            lost: AtomicBool::new(false),
        }
    }

    pub(super) fn lose(&self) {
        self.lost.store(true, Ordering::Relaxed);
    }

    pub(super) fn lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }
}
