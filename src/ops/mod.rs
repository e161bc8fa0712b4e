//! Operations: the queries and actions behind the CLI's `status`, `explain`, `plan`, `parked`,
//! `retry`, `staged`, `approve`, `reject`, `audit` and `sync`, and the admin API's routes.
//!
//! Each returns a typed, serialisable value: the CLI prints it (its `Display`), the API
//! serves it as JSON. Nothing here is written twice.

mod audit;
mod commands;
mod firm;
mod gauges;
mod lists;
mod mode;
mod pages;
mod progress;
mod status;

use uuid::Uuid;

use crate::retry::Retryable;
use crate::state;

pub use audit::{AuditEntry, AuditPage, AuditQuery};
pub use commands::{CommandPublisher, request_reconcile, request_sync};
pub use firm::Ops;
pub use gauges::refresh_gauges;
pub use lists::{Count, ParkedList, StagedList, parked_list, render_plan};
pub use mode::Mode;
pub use pages::{
    PAGE_DEFAULT, PAGE_MAX, Page, ParkedCursor, ParkedPage, PlanPage, PlanTotals, StagedPage,
};
pub use progress::FlushProgress;
pub use status::{Hold, Pause, Status, SyncSummary};

/// The most audit entries one page holds.
pub const AUDIT_PAGE_MAX: i64 = 500;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("firm {0} is not known: no event for it has been applied")]
    UnknownFirm(String),
    #[error("no sync {command_id} for firm {firm}")]
    UnknownSync { firm: String, command_id: Uuid },
    #[error("database failure")]
    Database(#[from] state::Error),
    #[error("could not publish the command to RabbitMQ")]
    Publish(#[from] crate::publish::Error),
    #[error("{0}")]
    Busy(String),
}

impl From<crate::sync::Error> for Error {
    fn from(e: crate::sync::Error) -> Self {
        match e {
            crate::sync::Error::Database(e) => Self::Database(e),
            e @ crate::sync::Error::FirmBusy(_) => Self::Busy(e.to_string()),
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e.into())
    }
}

impl Retryable for Error {
    /// PostgreSQL or RabbitMQ is down or refusing: worth a retry later (HTTP 503).
    fn is_retryable(&self) -> bool {
        match self {
            Self::Database(e) => e.is_retryable(),
            Self::Publish(_) => true,
            Self::Busy(_) => true,
            Self::UnknownFirm(_) | Self::UnknownSync { .. } => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
