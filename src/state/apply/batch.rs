//! The steps of applying one batch, in the caller's transaction.

use sqlx::PgConnection;

use super::facts::Facts;
use super::guard::{self, ApplyOptions};
use super::outcome::ApplyOutcome;
use super::upsert;
use crate::contract::Event;
use crate::state::Result;
use crate::state::desired::refresh_desired;

/// Applies `events` inside the caller's transaction.
///
/// # Errors
/// [`crate::state::Error::Refused`] when PostgreSQL rejects the data; the caller splits the
/// batch to find the event at fault.
pub async fn apply_events(
    conn: &mut PgConnection,
    events: &[&Event],
    opts: &ApplyOptions,
) -> Result<ApplyOutcome> {
    let mut outcome = ApplyOutcome::default();
    if events.is_empty() {
        return Ok(outcome);
    }
    // Lock order for every writer: role_mapping, then firms. A mapping rebuild takes
    // role_mapping exclusively, so it waits for batches in flight rather than deadlocking.
    sqlx::query!("LOCK TABLE role_mapping IN ACCESS SHARE MODE")
        .execute(&mut *conn)
        .await?;
    let accepted = guard::admit(conn, events, opts, &mut outcome).await?;
    let mut facts = Facts::default();
    for e in &accepted {
        facts.add(e);
    }
    let keys = upsert::write(conn, facts).await?;
    refresh_desired(conn, keys).await?;
    let new = guard::record_processed(conn, &accepted).await?;
    outcome.applied = new;
    outcome.duplicates += accepted.len() - new;
    Ok(outcome)
}
