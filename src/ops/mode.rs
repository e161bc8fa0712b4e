//! The worker's mode, recorded by each running worker so a CLI elsewhere reports the same.

use sqlx::PgPool;

use super::Result;
use crate::sync::FlushSettings;

/// The worker's mode, which `explain` and `status` report on.
#[derive(Debug, Clone)]
pub struct Mode {
    /// The worker flushes to Altinn (the Altinn settings are configured).
    pub flush_on: bool,
    /// The guard's thresholds and the kill switch.
    pub flush: FlushSettings,
}

/// How long a worker's recorded mode counts as current: a few gauge refreshes.
const MODE_FRESH_SECS: f64 = 60.0;

impl Mode {
    /// Records this worker's mode (with its gauges), so the CLI can read it.
    pub async fn record(&self, pool: &PgPool, worker: &str) -> Result<()> {
        sqlx::query!(
            r#"INSERT INTO worker_modes (worker, flush_on, revokes_enabled) VALUES ($1, $2, $3)
               ON CONFLICT (worker) DO UPDATE
               SET flush_on = excluded.flush_on, revokes_enabled = excluded.revokes_enabled,
                   seen_at = now()"#,
            worker,
            self.flush_on,
            self.flush.revokes_enabled
        )
        .execute(pool)
        .await?;
        Ok(())
    }

    /// Forgets a stopping worker's mode, and any other long gone.
    pub async fn forget(pool: &PgPool, worker: &str) -> Result<()> {
        sqlx::query!(
            r#"DELETE FROM worker_modes WHERE worker = $1 OR seen_at < now() - interval '1 day'"#,
            worker
        )
        .execute(pool)
        .await?;
        Ok(())
    }

    /// The running workers' mode when any has recorded one lately (one flushing is enough;
    /// revokes go out if one worker sends them, as it claims them), else this process's own
    /// settings.
    pub async fn observed(mut self, pool: &PgPool) -> Result<Self> {
        let seen = sqlx::query!(
            r#"SELECT bool_or(flush_on) AS "flush_on?",
                      bool_or(revokes_enabled) AS "revokes_enabled?"
               FROM worker_modes
               WHERE seen_at > now() - make_interval(secs => $1)"#,
            MODE_FRESH_SECS
        )
        .fetch_one(pool)
        .await?;
        if let (Some(flush_on), Some(revokes_enabled)) = (seen.flush_on, seen.revokes_enabled) {
            self.flush_on = flush_on;
            self.flush.revokes_enabled = revokes_enabled;
        }
        Ok(self)
    }
}
