//! The flush to Altinn: commands become outbox rows, and a dispatcher delivers them.
//!
//! ```text
//! commands (SyncNow) ──▶ plan: desired_grants − applied_grants ──▶ outbox
//! outbox ──claim (SKIP LOCKED, lease)──▶ Altinn ──▶ outcome + applied_grants + audit
//! ```
//!
//! `SyncNow` (with `after_sequence`) plans a firm's delta; `NightlyReconcile` first reads what
//! Altinn actually holds, so drift made by hand joins the delta. The dispatcher delivers grants
//! and revokes with retries, parking and make-before-break ordering, with bounded concurrency
//! overall and per firm. Removing idle agents is an opt-in policy (`idle`).
//!
//! Guard rails: the mass-revoke guard stages a plan's revokes for approval when they would
//! remove much of a firm's access (`guard`); the kill switch `REVOKES_ENABLED=false` holds
//! every revoke; the reconcile adopts agents given access by hand who are known employees; the
//! opt-in automatic sync records a `SyncNow` after a firm's desired grants change (`auto`).

mod auto;
mod commands;
mod dispatch;
mod guard;
mod idle;
mod outbox;
mod parked;
mod parties;
mod plan;
mod preview;
mod reconcile;
mod run;
mod settings;

pub use auto::{REQUESTED_BY as AUTO_SYNC_REQUESTED_BY, auto_sync};
pub use commands::{handle_commands, handle_reconciles};
pub use dispatch::{Dispatcher, Step};
pub use guard::{
    StagedRevoke, Tripped, approve_staged, guard_trips, held_revokes, reject_staged, staged,
};
pub use outbox::{OutboxCounts, outbox_counts};
pub use parked::{Parked, PausedFirm, parked, paused, retry};
pub use plan::{Planned, plan_flush};
pub use preview::{Change, Preview, preview};
pub use reconcile::{LeftAlone, Reconciled, Report, reconcile};
pub use run::run;
pub use settings::{
    DEFAULT_REVOKE_GUARD_MIN, DEFAULT_REVOKE_GUARD_SHARE, DEFAULT_REVOKE_GUARD_SPREAD,
    FlushSettings,
};

use crate::retry::Retryable;
use crate::state;

/// What stops a plan, a flush or a reconcile. Altinn's answers are not here: the dispatcher
/// turns each into the verdict on its row, and the reconcile into its report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database failure")]
    Database(#[from] state::Error),
    /// A dry run found the firm being planned by a sync: it does not queue behind it.
    #[error("firm {0} is being planned by a sync right now; try again in a moment")]
    FirmBusy(String),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e.into())
    }
}

impl Retryable for Error {
    fn is_retryable(&self) -> bool {
        match self {
            Self::Database(e) => e.is_retryable(),
            Self::FirmBusy(_) => true,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
