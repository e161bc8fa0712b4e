//! The setup hold shared by the replicas (`setup_holds`): the one that meets a setup error
//! records it with its next probe time; the others hold too, until a second after that probe,
//! so one replica probes; a change Altinn lets through, on any replica, lifts it on all.
//! Best effort: a replica that cannot read or write it goes by its own experience.

use std::time::{Duration, Instant};

use super::dispatcher::Dispatcher;
use super::locked::Locked;
use super::row::{Row, Verdict};
use super::setup_hold::SetupHold;
use crate::telemetry::ErrorChain;

/// How long a replica that adopted another's hold waits past that replica's probe.
const AFTER_ITS_PROBE: Duration = Duration::from_secs(1);

impl Dispatcher {
    /// Notes a step's outcomes ([`Self::note_setup`]) and shares the result: a hold met (or
    /// still met) by this replica is recorded for the others, one this step lifted is removed.
    pub(super) async fn note_and_share_setup(&self, verdicts: &[(Row, Verdict)]) {
        let was_held = self.setup_hold.locked().is_some();
        self.note_setup(verdicts);
        self.share_setup_hold(was_held).await;
    }

    /// Records this dispatcher's hold for the others, or removes it once this step lifted the
    /// hold (`was_held`: held before the step).
    async fn share_setup_hold(&self, was_held: bool) {
        let hold = self.setup_hold.locked().as_ref().map(|h| {
            let left = h.until.saturating_duration_since(Instant::now());
            (h.reason.clone(), h.forbidden, left)
        });
        let shared = match hold {
            Some((reason, forbidden, left)) => sqlx::query!(
                r#"INSERT INTO setup_holds (reason, forbidden, until, recorded_by)
                   VALUES ($1, $2, now() + make_interval(secs => $3), $4)
                   ON CONFLICT (held) DO UPDATE
                   SET reason = excluded.reason, forbidden = excluded.forbidden,
                       until = excluded.until, recorded_by = excluded.recorded_by"#,
                reason,
                forbidden,
                left.as_secs_f64(),
                self.id
            )
            .execute(&self.pool)
            .await
            .map(drop),
            None if was_held => sqlx::query!("DELETE FROM setup_holds")
                .execute(&self.pool)
                .await
                .map(drop),
            None => Ok(()),
        };
        if let Err(e) = shared {
            tracing::warn!(error = %ErrorChain(&e), "the setup hold was not shared with the other replicas");
        }
    }

    /// Before a step: holds while another replica's setup hold stands (until a second after its
    /// probe), and resumes when the hold this one adopted was lifted.
    pub(super) async fn follow_setup_hold(&self) {
        let row = sqlx::query!(
            r#"SELECT reason, forbidden, recorded_by,
                      greatest(extract(epoch FROM until - now()), 0)::float8 AS "left!"
               FROM setup_holds"#
        )
        .fetch_optional(&self.pool)
        .await;
        let row = match row {
            Ok(row) => row.filter(|r| r.recorded_by != self.id),
            Err(e) => {
                tracing::debug!(error = %ErrorChain(&e), "the shared setup hold was not read");
                return;
            }
        };
        let mut hold = self.setup_hold.locked();
        match (row, hold.as_mut()) {
            (Some(r), None) => {
                let until = Instant::now() + Duration::from_secs_f64(r.left) + AFTER_ITS_PROBE;
                tracing::error!(
                    reason = r.reason,
                    "deliveries held: another replica found that Maskinporten or Altinn refuses \
                     the worker itself; they resume when it is fixed"
                );
                *hold = Some(SetupHold {
                    until,
                    reason: r.reason,
                    waits: self.setup_retry().waits(),
                    forbidden: r.forbidden,
                    adopted: true,
                });
                crate::telemetry::metrics::set_setup_error(true);
            }
            // Its probe is due or under way; once it is late past our wait, this one probes.
            (Some(r), Some(h)) if h.adopted && r.left > 0.0 => {
                h.until = Instant::now() + Duration::from_secs_f64(r.left) + AFTER_ITS_PROBE;
                h.reason = r.reason;
                h.forbidden = r.forbidden;
            }
            (None, Some(h)) if h.adopted => {
                tracing::info!(was = %h.reason, "the setup error is resolved; deliveries resume");
                *hold = None;
                crate::telemetry::metrics::set_setup_error(false);
            }
            _ => {}
        }
    }
}
