//! Delivering outbox rows to Altinn: the steps and lanes here; claiming and leases in `claim`,
//! the Altinn calls in `deliver`, what an outcome means in `verdict`, and recording outcomes in
//! `record`.
//!
//! # Guarantees
//! - Rows are claimed with `FOR UPDATE SKIP LOCKED` and a lease; a killed worker's rows are
//!   taken over once the lease runs out. A running step renews its lease, and checks it right
//!   before each call (after the wait for a place in the call limit), so a row is never sent
//!   by a holder whose lease ran out (`lease`).
//! - An outcome, the `applied_grants` change and the audit row commit in one transaction, and
//!   only while this dispatcher still holds the lease.
//! - A transient failure keeps the row, with its next attempt time persisted; a permanent one
//!   parks it with Altinn's code and an explanation in plain words.
//! - Changes to one grant key are delivered in the order they were planned, one at a time.
//! - Make before break: a revoke on a client waits while the client's project accountant (another
//!   employee) has a grant on it on its way, for at most `MAKE_BEFORE_BREAK_MAX_SECS`, so a
//!   transfer does not leave the client without its accountant, and a grant that keeps failing
//!   cannot keep a departed employee's access for ever.

mod claim;
mod deliver;
mod dispatcher;
mod in_flight;
mod lease;
mod locked;
mod record;
mod row;
mod setup_hold;
mod shared_hold;
mod verdict;

pub(super) use dispatcher::PACKAGE_URN;
pub use dispatcher::{Dispatcher, Step};
pub(super) use verdict::retry_delay;

use super::{FlushSettings, Result};
