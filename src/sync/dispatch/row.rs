//! The rows a step delivers, the people it delivers to, and what becomes of each row.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use uuid::Uuid;

use super::lease::GroupLease;
use crate::altinn::wire::PersonInput;
use crate::policy::Action;

/// The Altinn call a group of rows shares, and the lease it goes out under.
pub(super) struct GroupKey<'a> {
    pub(super) firm: &'a str,
    pub(super) client: &'a str,
    pub(super) employee: Uuid,
    pub(super) action: Action,
    pub(super) lease: &'a GroupLease<'a>,
}

#[derive(Debug)]
pub(super) struct Row {
    pub(super) id: i64,
    pub(super) firm: String,
    pub(super) employee_id: Uuid,
    pub(super) client_org_number: String,
    pub(super) package: String,
    pub(super) action: Action,
    pub(super) attempts: i32,
    /// The command that planned the change, and its trace, which the delivery joins.
    pub(super) cause: Uuid,
    pub(super) traceparent: Option<String>,
}

/// What becomes of one delivered row.
#[derive(Debug)]
pub(super) enum Verdict {
    /// With a note for the audit when there was nothing left to do.
    Delivered(Option<String>),
    Parked {
        explanation: String,
        trace: Option<String>,
    },
    Retry {
        error: String,
        wait: Duration,
        hold: Hold,
    },
}

/// What a retried row waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hold {
    /// Its own backoff (and its firm's pause, where the firm is paused).
    Row,
    /// Altinn answered 403: one firm's refusal, or a setup error if every firm gets it; the
    /// step tells which (see [`Dispatcher::judge_forbidden`]) before anything is recorded.
    Forbidden,
    /// A setup error: the row waits for the hold, not for its own backoff.
    Setup,
}

/// Held while one person is made an agent.
pub(super) type PersonLock = Arc<Mutex<()>>;

/// What the dispatcher knows of an employee it delivers to.
pub(super) enum Person {
    /// The firm's agent already; the identity, if known, makes them one again should another
    /// replica have removed them.
    Agent {
        party: Uuid,
        identity: Option<PersonInput>,
    },
    /// Not yet the firm's agent; the identity to add them with (never logged).
    ToAdd(PersonInput),
    /// AdminFlow has sent no identity.
    Unknown,
}

/// By (firm, employee).
pub(super) type People = HashMap<(String, Uuid), Person>;
