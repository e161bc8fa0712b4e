//! Applying a batch of events to the facts, in one transaction, with sequence guards.
//!
//! # Guarantees
//! - A fact changes only when an event's sequence is newer than the one that last changed it, so
//!   duplicates, late and reordered events are harmless, and the order of events inside a batch
//!   does not matter: each fact keeps the newest value.
//! - Batches that touch the same firm are serialised by a row lock on `firms`, so the incremental
//!   refresh of `desired_grants` always sees every committed fact it depends on.
//! - `desired_grants` changes in the same transaction as the facts.
//!
//! `batch` runs the steps; `guard` decides which events may change facts (duplicates, firms on
//! hold, sequence regressions); `facts` keeps the newest value of each fact in the batch, and
//! `upsert` writes them.

mod batch;
mod facts;
mod guard;
mod outcome;
mod upsert;

pub use batch::apply_events;
pub use guard::ApplyOptions;
pub use outcome::ApplyOutcome;
