//! What applying a batch did with each event.

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// New events recorded as processed (whether or not they changed a fact).
    pub applied: usize,
    /// Events already processed, in this batch or before.
    pub duplicates: usize,
    /// Indices into the input of events refused as sequence regressions.
    pub regressed: Vec<usize>,
    /// Indices into the input of events refused because their firm is on hold after an
    /// earlier regression.
    pub held: Vec<usize>,
}
