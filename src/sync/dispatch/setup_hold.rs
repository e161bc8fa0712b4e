//! A hold on every delivery while the worker itself is refused (a setup error).

use std::time::Instant;

use crate::retry::Waits;

/// Why every delivery waits, until when, and how the probes back off.
pub(super) struct SetupHold {
    pub(super) until: Instant,
    pub(super) reason: String,
    pub(super) waits: Waits,
    /// Held by a 403 on every firm: only a change Altinn lets through lifts it.
    pub(super) forbidden: bool,
    /// Another replica met the error and recorded it (`shared_hold`); this one follows it.
    pub(super) adopted: bool,
}
