//! The nightly reconcile: read what Altinn actually holds, count the drift, and let the normal
//! flush repair it.
//!
//! Two phases, each timed and reported: first every firm's actual state is read from Altinn
//! (firms side by side, within the flush's concurrency limits) into `reconcile_actual`, one firm
//! at a time in memory; then, firm by firm, the drift is counted, Altinn's state becomes
//! `applied_grants`, and the delta is planned into the outbox as for a sync-now, while this
//! worker's deliveries wait. Memory stays bounded by the firms being read at once, however many
//! grants there are.
//!
//! # Guarantees
//! - Only packages in the role mapping, on the firm's agents this worker manages, are compared
//!   and repaired. Packages outside the mapping are never touched.
//! - Adoption (midPoint calls it correlation): an agent given access by hand whose
//!   `personIdentifier` is a known employee of the firm is adopted, and their mapped packages
//!   are managed like those of the agents this worker added itself. Persons AdminFlow does not
//!   know are left alone and reported by party id and name, never by identity number.
//! - Every firm's plan goes through the mass-revoke guard, the first reconcile of a firm too.
//! - A key a dispatcher is delivering, or delivered after the firm was read, keeps its
//!   `applied_grants` state: the read may predate the delivery.
//! - Parked changes are tried again, as the help page promises.
//! - An agent Altinn no longer has is forgotten, so the next grant makes the person an agent
//!   again instead of failing.

mod apply;
mod read;
mod report;
mod run;

pub use report::{LeftAlone, Reconciled, Report};
pub use run::reconcile;
