//! A firm's status, and one sync's outcome, as the settings page polls them.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::Result;
use super::lists::when;
use crate::sync;

/// A sync (or reconcile) command and what became of the changes it planned, now.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SyncSummary {
    pub command_id: Uuid,
    pub command_type: String,
    pub requested_by: Option<String>,
    pub received_at: DateTime<Utc>,
    /// When it was planned; null while it waits.
    pub handled_at: Option<DateTime<Utc>>,
    /// The changes it planned for this firm.
    pub planned: i64,
    pub delivered: i64,
    pub parked: i64,
    /// Still on their way (in flight or waiting), or staged by the guard.
    pub pending: i64,
    /// Delivered or parked per second over the last minute, while changes are on their way.
    pub per_s: Option<f64>,
    /// When the changes on their way should be done at that pace.
    pub estimated_finish: Option<DateTime<Utc>>,
}

/// A [`SyncSummary`] as read, with what its pace is computed from.
struct SummaryRow {
    command_id: Uuid,
    command_type: String,
    requested_by: Option<String>,
    received_at: DateTime<Utc>,
    handled_at: Option<DateTime<Utc>>,
    planned: i64,
    delivered: i64,
    parked: i64,
    pending: i64,
    recently_finished: i64,
    window_secs: f64,
}

/// Why the firm's flush is paused.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Pause {
    pub reason: String,
    /// The next try; a sync or a retry tries at once.
    pub until: Option<DateTime<Utc>>,
}

/// Why the firm's events are held.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Hold {
    pub since: DateTime<Utc>,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Status {
    pub firm: String,
    pub last_sync: Option<SyncSummary>,
    pub last_reconcile: Option<SyncSummary>,
    /// Changes waiting for Altinn, not in flight.
    pub pending: i64,
    /// Changes being delivered right now.
    pub in_flight: i64,
    pub parked: i64,
    /// Revokes the mass-revoke guard holds until approved.
    pub staged_revokes: i64,
    /// Revokes the kill switch (REVOKES_ENABLED=false) holds.
    pub held_revokes: i64,
    pub dead_letters: i64,
    pub paused: Option<Pause>,
    pub on_hold: Option<Hold>,
}

async fn summary(
    pool: &PgPool,
    firm: &str,
    id: Option<Uuid>,
    kind: Option<&str>,
) -> Result<Option<SyncSummary>> {
    let row = sqlx::query_as!(
        SummaryRow,
        r#"SELECT c.command_id, c.command_type, c.requested_by, c.received_at, c.handled_at,
                  count(o.id) AS "planned!",
                  count(o.id) FILTER (WHERE o.status = 'delivered') AS "delivered!",
                  count(o.id) FILTER (WHERE o.status = 'parked') AS "parked!",
                  count(o.id) FILTER (WHERE o.status IN ('pending', 'staged')) AS "pending!",
                  count(o.id) FILTER (WHERE o.status IN ('delivered', 'parked')
                                      AND o.finished_at > now() - interval '1 minute')
                    AS "recently_finished!",
                  least(60, extract(epoch FROM now() - coalesce(c.handled_at, now())))::float8
                    AS "window_secs!"
           FROM commands c
           LEFT JOIN outbox o ON o.cause = c.command_id AND o.firm = $1
           WHERE c.command_id = (
               SELECT command_id FROM commands
               WHERE (firm = $1 OR (firm IS NULL AND command_type = 'NightlyReconcile'))
                 AND ($2::uuid IS NULL OR command_id = $2)
                 AND ($3::text IS NULL OR command_type = $3)
               ORDER BY received_at DESC LIMIT 1)
           GROUP BY c.command_id"#,
        firm,
        id,
        kind
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(SummaryRow::with_pace))
}

impl SummaryRow {
    /// The pace of the last minute, and the finish it gives, while changes are on their way.
    fn with_pace(self) -> SyncSummary {
        let mut per_s = None;
        let mut estimated_finish = None;
        if self.pending > 0 && self.recently_finished > 0 && self.window_secs > 0.0 {
            #[allow(clippy::cast_precision_loss)] // counts far below 2^52
            let pace = self.recently_finished as f64 / self.window_secs;
            #[allow(clippy::cast_precision_loss)]
            let left = self.pending as f64 / pace;
            per_s = Some(pace);
            estimated_finish = std::time::Duration::try_from_secs_f64(left)
                .ok()
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .map(|d| Utc::now() + d);
        }
        SyncSummary {
            command_id: self.command_id,
            command_type: self.command_type,
            requested_by: self.requested_by,
            received_at: self.received_at,
            handled_at: self.handled_at,
            planned: self.planned,
            delivered: self.delivered,
            parked: self.parked,
            pending: self.pending,
            per_s,
            estimated_finish,
        }
    }
}

pub(super) async fn sync_summary(
    pool: &PgPool,
    firm: &str,
    command_id: Uuid,
) -> Result<Option<SyncSummary>> {
    summary(pool, firm, Some(command_id), None).await
}

struct FirmRow {
    dead_letters: i64,
    held_since: Option<DateTime<Utc>>,
    paused_at: Option<DateTime<Utc>>,
    paused_until: Option<DateTime<Utc>>,
    pause_reason: Option<String>,
}

pub(super) async fn status(pool: &PgPool, firm: &str, revokes_enabled: bool) -> Result<Status> {
    let counts = sync::outbox_counts(pool, Some(firm), revokes_enabled).await?;
    let c = sqlx::query_as!(
        FirmRow,
        r#"SELECT (SELECT count(*) FROM dead_letters WHERE firm = $1) AS "dead_letters!",
                  held_since, flush_paused_at AS paused_at, flush_paused_until AS paused_until,
                  flush_pause_reason AS pause_reason
           FROM firms WHERE org_number = $1"#,
        firm
    )
    .fetch_one(pool)
    .await?;
    Ok(Status {
        firm: firm.to_owned(),
        last_sync: summary(pool, firm, None, Some("SyncNow")).await?,
        last_reconcile: summary(pool, firm, None, Some("NightlyReconcile")).await?,
        pending: counts.pending,
        in_flight: counts.in_flight,
        parked: counts.parked,
        staged_revokes: counts.staged,
        held_revokes: counts.held,
        dead_letters: c.dead_letters,
        paused: c.paused_at.map(|_| Pause {
            reason: c
                .pause_reason
                .unwrap_or_else(|| "Altinn refused the firm's system user".to_owned()),
            until: c.paused_until,
        }),
        on_hold: c.held_since.map(|since| Hold {
            since,
            reason: "a sequence regression: AdminFlow's sequence numbers went back; events are \
                     dead-lettered until an operator runs `altinn-sync resequence`"
                .to_owned(),
        }),
    })
}

impl fmt::Display for SyncSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} by {} received {}, {}: {} planned, {} delivered, {} parked, {} on their way",
            self.command_type,
            self.command_id,
            self.requested_by.as_deref().unwrap_or("-"),
            when(&self.received_at),
            self.handled_at.as_ref().map_or_else(
                || "not planned yet".to_owned(),
                |t| format!("planned {}", when(t))
            ),
            self.planned,
            self.delivered,
            self.parked,
            self.pending
        )?;
        if let (Some(per_s), Some(finish)) = (self.per_s, &self.estimated_finish) {
            write!(f, " ({per_s:.0}/s, done about {})", when(finish))?;
        }
        Ok(())
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Firm {}", self.firm)?;
        let last = |s: &Option<SyncSummary>| {
            s.as_ref()
                .map_or_else(|| "none".to_owned(), ToString::to_string)
        };
        writeln!(f, "  last sync:      {}", last(&self.last_sync))?;
        writeln!(f, "  last reconcile: {}", last(&self.last_reconcile))?;
        writeln!(
            f,
            "  changes: {} waiting, {} in flight, {} parked, {} staged revokes, {} held revokes",
            self.pending, self.in_flight, self.parked, self.staged_revokes, self.held_revokes
        )?;
        writeln!(f, "  dead letters: {}", self.dead_letters)?;
        if let Some(p) = &self.paused {
            writeln!(
                f,
                "  PAUSED: {}; next try {}",
                p.reason,
                p.until.as_ref().map_or_else(|| "now".to_owned(), when)
            )?;
        }
        if let Some(h) = &self.on_hold {
            writeln!(f, "  ON HOLD since {}: {}", when(&h.since), h.reason)?;
        }
        Ok(())
    }
}
