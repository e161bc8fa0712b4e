//! Housekeeping: pruning old processed ids and tombstones, and accepting a restored AdminFlow.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};

use super::Result;

/// How long what is done is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Processed event ids, removal tombstones, finished outbox rows, handled commands, dead
    /// letters and sequence regressions.
    pub days: Duration,
    /// The audit: the record of who got access when, kept longer.
    pub audit: Duration,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct PruneOutcome {
    pub processed_events: u64,
    pub tombstones: u64,
    pub outbox_rows: u64,
    pub commands: u64,
    pub dead_letters: u64,
    pub sequence_regressions: u64,
    pub audit_rows: u64,
}

impl std::fmt::Display for PruneOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pruned {} processed event ids, {} tombstones, {} finished outbox rows, {} handled \
             commands, {} dead letters, {} sequence regressions and {} audit rows",
            self.processed_events,
            self.tombstones,
            self.outbox_rows,
            self.commands,
            self.dead_letters,
            self.sequence_regressions,
            self.audit_rows
        )
    }
}

/// Deletes what is done and older than its retention: processed event ids, removal
/// tombstones, delivered and superseded outbox rows, handled commands, dead letters, sequence
/// regressions, and audit rows. Parked changes stay until they are resolved.
///
/// After this, a duplicate or late event older than the retention period is applied as new;
/// keep the retention longer than any redelivery or replay you expect.
pub async fn prune(pool: &PgPool, retention: &Retention) -> Result<PruneOutcome> {
    let secs = retention.days.as_secs_f64();
    Ok(PruneOutcome {
        processed_events: sqlx::query!(
            "DELETE FROM processed_events WHERE processed_at < now() - make_interval(secs => $1)",
            secs
        )
        .execute(pool)
        .await?
        .rows_affected(),
        tombstones: sqlx::query!(
            "DELETE FROM assignments WHERE NOT active AND updated_at < now() - make_interval(secs => $1)",
            secs
        )
        .execute(pool)
        .await?
        .rows_affected(),
        outbox_rows: sqlx::query!(
            r#"DELETE FROM outbox WHERE status IN ('delivered', 'superseded')
                 AND finished_at < now() - make_interval(secs => $1)"#,
            secs
        )
        .execute(pool)
        .await?
        .rows_affected(),
        commands: sqlx::query!(
            "DELETE FROM commands WHERE handled_at < now() - make_interval(secs => $1)",
            secs
        )
        .execute(pool)
        .await?
        .rows_affected(),
        dead_letters: sqlx::query!(
            "DELETE FROM dead_letters WHERE received_at < now() - make_interval(secs => $1)",
            secs
        )
        .execute(pool)
        .await?
        .rows_affected(),
        sequence_regressions: sqlx::query!(
            "DELETE FROM sequence_regressions WHERE detected_at < now() - make_interval(secs => $1)",
            secs
        )
        .execute(pool)
        .await?
        .rows_affected(),
        audit_rows: sqlx::query!(
            "DELETE FROM audit WHERE at < now() - make_interval(secs => $1)",
            retention.audit.as_secs_f64()
        )
        .execute(pool)
        .await?
        .rows_affected(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resequenced {
    Done {
        old_high_water: i64,
    },
    /// The firm is not on hold and [`OnHealthy::Refuse`] was given: nothing changed.
    NotHeld,
}

impl std::fmt::Display for Resequenced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Done { old_high_water } => write!(
                f,
                "high-water mark {old_high_water} cleared and hold lifted; the next event for \
                 each fact wins. Replay the firm's dead letters in order."
            ),
            Self::NotHeld => write!(f, "not on hold; nothing changed"),
        }
    }
}

/// What [`resequence`] does with a firm that is not on hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnHealthy {
    Refuse,
    /// `resequence --force`.
    Reset,
}

/// Accepts a firm's new sequence lineage after AdminFlow was restored from a backup: every fact
/// of the firm may be overwritten by the next event that touches it, and the hold is lifted.
/// Only for a firm on hold, unless [`OnHealthy::Reset`]: on a healthy firm it would let stale
/// events win. `None` for an unknown firm.
pub async fn resequence(
    pool: &PgPool,
    firm: &str,
    on_healthy: OnHealthy,
) -> Result<Option<Resequenced>> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query!(
        r#"SELECT high_water_sequence, held_since IS NOT NULL AS "held!"
           FROM firms WHERE org_number = $1 FOR UPDATE"#,
        firm
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let (old, held) = (row.high_water_sequence, row.held);
    if !held && on_healthy == OnHealthy::Refuse {
        return Ok(Some(Resequenced::NotHeld));
    }
    forget_sequences(&mut tx, firm).await?;
    sqlx::query!(
        "UPDATE firms SET high_water_sequence = -1, held_since = NULL, updated_at = now() \
         WHERE org_number = $1",
        firm
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(Resequenced::Done {
        old_high_water: old,
    }))
}

/// Lets the next event for each of the firm's facts win, whatever its sequence.
async fn forget_sequences(conn: &mut PgConnection, firm: &str) -> Result<()> {
    sqlx::query!(
        "UPDATE employee_identities SET sequence = -1 WHERE firm = $1",
        firm
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE employee_roles SET sequence = -1 WHERE firm = $1",
        firm
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!("UPDATE assignments SET sequence = -1 WHERE firm = $1", firm)
        .execute(&mut *conn)
        .await?;
    sqlx::query!("UPDATE clients SET sequence = -1 WHERE firm = $1", firm)
        .execute(&mut *conn)
        .await?;
    sqlx::query!(
        "UPDATE project_accountants SET sequence = -1 WHERE firm = $1",
        firm
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}
