//! What a delivery's outcome means for its row and its firm: delivered, parked with Altinn's
//! explanation, or retried after a backoff; a setup error holds every delivery instead.

use std::time::{Duration, Instant};

use super::{Dispatcher, FlushSettings, GroupKey, Locked, Row, Verdict};
use crate::altinn::{self, Class};
use crate::retry::{RetryPolicy, Waits};

impl Dispatcher {
    /// Whether a setup error holds deliveries back now. Once the hold runs out, one step probes.
    pub(super) fn held_by_setup(&self) -> bool {
        self.setup_hold
            .locked()
            .as_ref()
            .is_some_and(|h| Instant::now() < h.until)
    }

    /// Holds every delivery after a setup error, saying once what is wrong; lifts the hold
    /// after a step that reached Altinn.
    pub(super) fn note_setup(&self, verdicts: &[(Row, Verdict)]) {
        let setup = verdicts.iter().find_map(|(_, v)| match v {
            Verdict::Retry {
                error, setup: true, ..
            } => Some(error.clone()),
            _ => None,
        });
        let reached = verdicts.iter().any(|(_, v)| {
            matches!(
                v,
                Verdict::Delivered(_)
                    | Verdict::Parked { .. }
                    | Verdict::Retry { setup: false, .. }
            )
        });
        let mut hold = self.setup_hold.locked();
        match (setup, hold.as_mut()) {
            (Some(reason), None) => {
                let mut waits = self.setup_retry().waits();
                let wait = waits.next_wait();
                tracing::error!(reason, retry_in = ?wait,
                    "deliveries held: Maskinporten or Altinn refuses the worker itself, for \
                     every firm; fix the setting named, and they resume by themselves");
                *hold = Some(SetupHold {
                    until: Instant::now() + wait,
                    reason,
                    waits,
                });
                crate::admin::metrics::set_setup_error(true);
            }
            (Some(reason), Some(h)) => {
                let wait = h.waits.next_wait();
                tracing::debug!(reason, retry_in = ?wait, "still held by a setup error");
                h.until = Instant::now() + wait;
                h.reason = reason;
            }
            (None, Some(h)) if reached => {
                tracing::info!(was = %h.reason, "the setup error is resolved; deliveries resume");
                *hold = None;
                crate::admin::metrics::set_setup_error(false);
            }
            (None, _) => {}
        }
    }

    /// Probes after a setup error: soon at first, then at most every `FLUSH_RETRY_MAX_SECS`.
    pub(super) fn setup_retry(&self) -> RetryPolicy {
        RetryPolicy::new(
            Duration::from_secs(1),
            Duration::from_secs(self.settings.flush_retry_max_secs.max(1)),
        )
    }

    /// One outcome for every row of a group.
    pub(super) async fn verdicts(
        &self,
        key: &GroupKey<'_>,
        rows: Vec<Row>,
        outcome: &altinn::Result<Option<String>>,
    ) -> Vec<(Row, Verdict)> {
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let verdict = self.verdict(key, &row, outcome).await;
            out.push((row, verdict));
        }
        out
    }

    pub(super) async fn verdict(
        &self,
        key: &GroupKey<'_>,
        row: &Row,
        outcome: &altinn::Result<Option<String>>,
    ) -> Verdict {
        match outcome {
            Ok(note) => Verdict::Delivered(note.clone()),
            Err(e) => self.verdict_for(key, row, e).await,
        }
    }

    /// What a failure means for the row, and for its firm: a firm-level refusal pauses the
    /// firm's flush, a lock-out stops person lookups for the hour.
    pub(super) async fn verdict_for(
        &self,
        key: &GroupKey<'_>,
        row: &Row,
        e: &altinn::Error,
    ) -> Verdict {
        tracing::warn!(
            firm = %key.firm, client = %key.client, employee.id = %key.employee,
            action = %key.action, package = %row.package, class = ?e.class(), error = %e,
            "Altinn change not delivered"
        );
        match e {
            // Altinn's code leads, so support can look it up and `explain` can show it apart.
            altinn::Error::Permanent(r) => Verdict::Parked {
                explanation: match &r.code {
                    Some(code) => format!("{code}: {}", r.explanation),
                    None => r.explanation.clone(),
                },
                trace: r.trace_id.clone(),
            },
            e if e.class() == Class::Permanent => Verdict::Parked {
                explanation: e.to_string(),
                trace: None,
            },
            e if e.class() == Class::Setup => Verdict::Retry {
                error: e.to_string(),
                wait: Duration::from_secs(1),
                setup: true,
            },
            e => {
                let wait = retry_delay(&self.settings, e, row.attempts);
                if e.class() == Class::FirmLevel {
                    self.pause_firm(key.firm, wait, &e.to_string()).await;
                }
                Verdict::Retry {
                    error: e.to_string(),
                    wait,
                    setup: false,
                }
            }
        }
    }

    /// Pauses the firm's flush; best effort, as the row's own backoff already holds it back.
    pub(super) async fn pause_firm(&self, firm: &str, wait: Duration, reason: &str) {
        let paused = sqlx::query(
            r#"UPDATE firms SET flush_paused_at = coalesce(flush_paused_at, now()),
                                flush_paused_until = now() + make_interval(secs => $2),
                                flush_pause_reason = $3
               WHERE org_number = $1"#,
        )
        .bind(firm)
        .bind(wait.as_secs_f64())
        .bind(reason)
        .execute(&self.pool)
        .await;
        match paused {
            Ok(_) => tracing::warn!(
                firm,
                pause.secs = wait.as_secs(),
                reason,
                "firm's flush paused: Altinn refuses its system user; other firms go on"
            ),
            Err(e) => tracing::warn!(firm, error = %e, "could not record the firm's pause"),
        }
    }
}

pub(super) struct SetupHold {
    until: Instant,
    reason: String,
    waits: Waits,
}

/// Exponential backoff with jitter for the `attempts`th failure, or what Altinn asked for, at
/// most `FLUSH_RETRY_MAX_SECS`; Altinn's person-lookup lock-out keeps its hour.
pub(in crate::sync) fn retry_delay(
    settings: &FlushSettings,
    e: &altinn::Error,
    attempts: i32,
) -> Duration {
    let max = Duration::from_secs(settings.flush_retry_max_secs);
    let mut wait = RetryPolicy::new(Duration::from_millis(settings.flush_retry_initial_ms), max)
        .with_jitter(0.3)
        .after_attempts(attempts.try_into().unwrap_or(0));
    // A paused firm (403, system user not approved) waits long: a person must act first.
    if e.class() == Class::FirmLevel {
        wait = wait.max(Duration::from_secs(900));
    }
    if let altinn::Error::LockedOut { retry_after } = e {
        return (*retry_after).max(wait);
    }
    // An answer from Altinn must not hold a change back for days, nor overflow a timestamp.
    e.retry_after()
        .map_or(wait, |asked| asked.min(max).max(wait))
}
