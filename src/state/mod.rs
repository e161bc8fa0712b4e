//! The desired-state store in PostgreSQL: facts guarded by sequence, and the grants they imply.
//!
//! SQL lives next to its caller in the submodules; migrations are in `schemas/migrations/`.

mod apply;
mod commands;
mod database;
mod dead_letters;
mod desired;
mod explain;
mod maintenance;

pub use apply::{ApplyOptions, ApplyOutcome, apply_events};
pub use commands::{record_commands, record_traced_commands};
pub use database::{DEFAULT_DATABASE_URL, DbSettings, connect, migrate};
pub use dead_letters::{
    DeadLetter, DeadLetterRow, DeadLetters, list_dead_letters, record_dead_letter,
};
pub use desired::{
    DesiredGrant, DesiredGrants, Realigned, Rebuild, align_role_mapping, desired_grants,
};
pub use explain::{ClientFacts, ExplainMode, Explanation, PackageFacts, PackageState, explain};
pub use maintenance::{OnHealthy, PruneOutcome, Resequenced, Retention, prune, resequence};

use crate::retry::Retryable;
/// Database failures, sorted by what the caller should do about them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database cannot be reached or is shutting down: wait, then try the same work again.
    #[error("the database is unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// Serialisation failure or deadlock: retry the transaction at once.
    #[error("the transaction conflicted with another one")]
    Conflict(#[source] sqlx::Error),
    /// The database rejected the data itself (a constraint, a value out of range): the input is
    /// at fault, not the database.
    #[error("the database refused the data")]
    Refused(#[source] sqlx::Error),
    /// Anything else, such as a missing table: retrying will not help.
    #[error("database error")]
    Fatal(#[source] sqlx::Error),
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Retryable for Error {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Conflict(_))
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &e {
            E::Io(_)
            | E::Tls(_)
            | E::Protocol(_)
            | E::PoolTimedOut
            | E::PoolClosed
            | E::WorkerCrashed => Self::Unavailable(e),
            E::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                match code.get(..2).unwrap_or_default() {
                    // 25006: a read-only standby after a failover; 55P03: lock not available.
                    _ if code == "25006" || code == "55P03" => Self::Unavailable(e),
                    "08" | "53" | "57" | "58" => Self::Unavailable(e),
                    "40" => Self::Conflict(e),
                    "22" | "23" | "54" => Self::Refused(e),
                    _ => Self::Fatal(e),
                }
            }
            _ => Self::Fatal(e),
        }
    }
}
