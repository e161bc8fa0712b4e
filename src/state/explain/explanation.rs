//! The whole explanation of one employee, gathered from its facts.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::facts::{self, ClientFacts, FlushPause, Identity, Roles};
use super::package::{self, ExplainMode};
use super::verdict::verdict;
use crate::state::Result;

/// One employee's facts and what they imply. Holds no identity number.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Explanation {
    pub firm: String,
    pub employee_id: Uuid,
    /// The answer in one line of plain words.
    pub verdict: String,
    /// Whether the firm is held after a sequence regression (its events are not applied).
    pub firm_held_since: Option<DateTime<Utc>>,
    /// Whether Altinn refused the firm's system user and its flush is paused.
    pub flush_pause: Option<FlushPause>,
    /// Until when Altinn locks the firm out of person lookups (429 AM-00026).
    pub agent_lookups_locked_until: Option<DateTime<Utc>>,
    pub identity: Option<Identity>,
    pub roles: Option<Roles>,
    pub clients: Vec<ClientFacts>,
    /// Dead-lettered messages for the firm, which may include this employee's.
    pub firm_dead_letters: i64,
}

/// Gathers the explanation; `None` when the firm has never been seen.
pub async fn explain(
    pool: &PgPool,
    firm: &str,
    employee: Uuid,
    mode: ExplainMode,
) -> Result<Option<Explanation>> {
    let Some(state) = facts::firm(pool, firm).await? else {
        return Ok(None);
    };
    let identity = facts::identity(pool, firm, employee).await?;
    let roles = facts::roles(pool, firm, employee).await?;
    let mut clients = facts::clients(pool, firm, employee).await?;
    for (client, package) in package::packages(pool, firm, employee, mode).await? {
        if let Some(c) = clients.iter_mut().find(|c| c.client_org_number == client) {
            c.packages.push(package);
        }
    }
    let firm_dead_letters = facts::dead_letters(pool, firm).await?;
    let verdict = verdict(
        state.held_since.is_some(),
        state.flush_pause.as_ref(),
        roles.as_ref(),
        &clients,
    );
    Ok(Some(Explanation {
        firm: firm.to_owned(),
        employee_id: employee,
        verdict,
        firm_held_since: state.held_since,
        flush_pause: state.flush_pause,
        agent_lookups_locked_until: state.agent_lookups_locked_until,
        identity,
        roles,
        clients,
        firm_dead_letters,
    }))
}
