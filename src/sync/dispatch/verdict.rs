//! What a delivery's outcome means for its row and its firm: delivered, parked with Altinn's
//! explanation, or retried after a backoff; a setup error holds every delivery instead.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::FlushSettings;
use super::dispatcher::Dispatcher;
use super::locked::Locked;
use super::row::{GroupKey, Hold, Row, Verdict};
use super::setup_hold::SetupHold;
use crate::altinn::error::FORBIDDEN_REASON;
use crate::altinn::{self, Class};
use crate::retry::RetryPolicy;
use crate::telemetry::ErrorChain;

impl Dispatcher {
    /// Whether a setup error holds deliveries back now. Once the hold runs out, one step probes.
    pub(super) fn held_by_setup(&self) -> bool {
        self.setup_hold
            .locked()
            .as_ref()
            .is_some_and(|h| Instant::now() < h.until)
    }

    /// Holds every delivery after a setup error, saying once what is wrong; lifts the hold
    /// after a step that reached Altinn (after a 403 on every firm: that Altinn let through).
    pub(super) fn note_setup(&self, verdicts: &[(Row, Verdict)]) {
        let setup = verdicts.iter().find_map(|(_, v)| match v {
            Verdict::Retry {
                error,
                hold: Hold::Setup,
                ..
            } => Some(error.clone()),
            _ => None,
        });
        let let_through = verdicts
            .iter()
            .any(|(_, v)| matches!(v, Verdict::Delivered(_) | Verdict::Parked { .. }));
        let answered = verdicts.iter().any(|(_, v)| {
            matches!(
                v,
                Verdict::Retry {
                    hold: Hold::Row | Hold::Forbidden,
                    ..
                }
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
                    forbidden: reason == EVERY_FIRM_FORBIDDEN,
                    reason,
                    waits,
                    adopted: false,
                });
                crate::telemetry::metrics::set_setup_error(true);
            }
            (Some(reason), Some(h)) => {
                let wait = h.waits.next_wait();
                if reason == h.reason {
                    tracing::debug!(reason, retry_in = ?wait, "still held by a setup error");
                } else {
                    tracing::error!(reason, was = %h.reason, retry_in = ?wait,
                        "deliveries still held, now by another setup error");
                }
                h.until = Instant::now() + wait;
                h.forbidden = reason == EVERY_FIRM_FORBIDDEN;
                h.reason = reason;
                h.adopted = false;
            }
            // A 503 says nothing of a missing scope; only a change Altinn let through does.
            (None, Some(h)) if let_through || (answered && !h.forbidden) => {
                tracing::info!(was = %h.reason, "the setup error is resolved; deliveries resume");
                *hold = None;
                crate::telemetry::metrics::set_setup_error(false);
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
            action = %key.action, package = %row.package, class = ?e.class(), error = %ErrorChain(e),
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
                hold: Hold::Setup,
            },
            // The firm is paused, or every delivery held, once the step has seen the others.
            e @ altinn::Error::Forbidden { .. } => Verdict::Retry {
                error: e.to_string(),
                wait: retry_delay(&self.settings, e, row.attempts),
                hold: Hold::Forbidden,
            },
            e => {
                let wait = retry_delay(&self.settings, e, row.attempts);
                if e.class() == Class::FirmLevel {
                    self.pause_firm(key.firm, wait, &e.to_string()).await;
                }
                Verdict::Retry {
                    error: e.to_string(),
                    wait,
                    hold: Hold::Row,
                }
            }
        }
    }

    /// Tells one firm's 403 from a setup error, for the step's 403s (`Hold::Forbidden`), before
    /// anything is recorded: the firm's refusal pauses that firm; a 403 on every firm holds
    /// every delivery, parks nothing and pauses no firm.
    ///
    /// The rule: a setup error once Altinn refused at least two distinct firms with 403 and let
    /// no change through, for any firm, in between (in this step or since earlier ones). One
    /// firm's genuine refusal never makes it, however often it comes: it takes a second firm.
    /// Nor do refusals in a step where another firm's change went through. Two firms refused
    /// one after the other while no other firm has work look like a setup error too; then
    /// their rows wait for the probe instead of their firms' pauses, and the first probe that
    /// carries another firm's change lifts the hold and pauses the two alone. A single-firm
    /// worker pauses its firm, as before; the explanation names the scope to check.
    pub(super) async fn judge_forbidden(&self, verdicts: &mut [(Row, Verdict)]) {
        let refused: BTreeSet<&str> = verdicts
            .iter()
            .filter(|(_, v)| {
                matches!(
                    v,
                    Verdict::Retry {
                        hold: Hold::Forbidden,
                        ..
                    }
                )
            })
            .map(|(row, _)| row.firm.as_str())
            .collect();
        let let_through = verdicts
            .iter()
            .any(|(_, v)| matches!(v, Verdict::Delivered(_) | Verdict::Parked { .. }));
        let every_firm = {
            let mut streak = self.forbidden.locked();
            if let_through {
                streak.clear();
                false
            } else {
                streak.extend(refused.iter().map(|f| (*f).to_owned()));
                streak.len() >= 2
            }
        };
        let refused: Vec<String> = refused.into_iter().map(str::to_owned).collect();
        for (_, verdict) in verdicts.iter_mut() {
            if let Verdict::Retry { error, wait, hold } = verdict
                && *hold == Hold::Forbidden
            {
                if every_firm {
                    *error = EVERY_FIRM_FORBIDDEN.to_owned();
                    *wait = Duration::from_secs(1);
                    *hold = Hold::Setup;
                } else {
                    *hold = Hold::Row;
                }
            }
        }
        if every_firm {
            return;
        }
        for firm in &refused {
            let pause = verdicts.iter().find_map(|(row, v)| match v {
                Verdict::Retry { error, wait, .. } if row.firm == *firm => Some((error, *wait)),
                _ => None,
            });
            if let Some((reason, wait)) = pause {
                self.pause_firm(firm, wait, reason).await;
            }
        }
    }

    /// When a 403 on every firm holds the deliveries, before each probe: lifts the pauses that
    /// the first of those 403s gave their firms (before a second firm showed it was every
    /// firm's), and makes those firms' refused rows due, so a probe tries them and they go out
    /// as soon as the scope is granted. Best effort: the next probe does it again.
    pub(super) async fn unpause_forbidden(&self) {
        let forbidden = self
            .setup_hold
            .locked()
            .as_ref()
            .is_some_and(|h| h.forbidden);
        if !forbidden {
            return;
        }
        let firms: Vec<String> = self.forbidden.locked().iter().cloned().collect();
        let reason = altinn::Error::Forbidden {
            reason: FORBIDDEN_REASON.to_owned(),
        }
        .to_string();
        let unpaused = sqlx::query!(
            r#"WITH unpaused AS (
                   UPDATE firms SET flush_paused_at = NULL, flush_paused_until = NULL,
                                    flush_pause_reason = NULL
                   WHERE org_number = ANY($1) AND flush_pause_reason = $2
               )
               UPDATE outbox SET next_attempt_at = now()
               WHERE firm = ANY($1) AND status = 'pending' AND last_error = $2
                 AND next_attempt_at > now()"#,
            &firms,
            reason
        )
        .execute(&self.pool)
        .await;
        if let Err(e) = unpaused {
            tracing::warn!(error = %ErrorChain(&e), "could not lift the pauses a 403 on every firm gave");
        }
    }

    /// Pauses the firm's flush; best effort, as the row's own backoff already holds it back.
    pub(super) async fn pause_firm(&self, firm: &str, wait: Duration, reason: &str) {
        let paused = sqlx::query!(
            r#"UPDATE firms SET flush_paused_at = coalesce(flush_paused_at, now()),
                                flush_paused_until = now() + make_interval(secs => $2),
                                flush_pause_reason = $3
               WHERE org_number = $1"#,
            firm,
            wait.as_secs_f64(),
            reason
        )
        .execute(&self.pool)
        .await;
        match paused {
            Ok(_) => tracing::warn!(
                firm,
                pause.secs = wait.as_secs(),
                reason,
                "firm's flush paused: Altinn refuses its system user; other firms go on"
            ),
            Err(e) => {
                tracing::warn!(firm, error = %ErrorChain(&e), "could not record the firm's pause")
            }
        }
    }
}

/// The setup error a 403 on every firm is.
const EVERY_FIRM_FORBIDDEN: &str = "Altinn answered 403 for every firm (at least two in a row, \
     and no change let through): the worker itself lacks a right, most likely a scope. Check \
     that the Maskinporten client (MASKINPORTEN_CLIENT_ID) was granted \
     altinn:clientdelegations.read and altinn:clientdelegations.write (by Altinn support) and \
     altinn:accessmanagement/authorizedparties, that MASKINPORTEN_SCOPES asks for all three, and \
     that the system in Altinn's system register, and so each firm's system user, has \
     urn:altinn:accesspackage:klientadministrator";

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
