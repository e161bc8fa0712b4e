//! What a reconcile found and did, as it is logged and reported.

use std::time::Duration;

use uuid::Uuid;

use crate::sync::plan::Planned;

/// Persons left alone named in a reconcile's outcome; the rest are counted.
const LEFT_ALONE_LISTED: usize = 20;

/// What one reconcile found and planned, summed over its firms.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    pub firms: u64,
    /// Desired but missing in Altinn.
    pub missing: u64,
    /// In Altinn but not desired.
    pub extra: u64,
    /// Mapped packages on agents this worker does not know.
    pub unknown: u64,
    /// Agents given access by hand who are known employees, now managed by this worker.
    pub adopted: u64,
    /// Parked changes put back in the queue.
    pub retried: u64,
    pub planned: Planned,
    /// Firms left because a newer reading of them was applied while this one was read.
    pub stale: u64,
}

/// An agent holding mapped packages whom AdminFlow does not know: left alone.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeftAlone {
    pub firm: String,
    /// The person's party in Altinn.
    pub party: Uuid,
    /// The name Altinn shows.
    pub name: Option<String>,
    /// Mapped packages they hold.
    pub packages: u64,
}

/// One reconcile's outcome, with how long each phase took.
#[derive(Debug)]
pub struct Report {
    pub reconciled: Reconciled,
    /// Firms whose state could not be read from Altinn, with why; they are left as they were.
    pub unread: Vec<(String, String)>,
    /// Persons AdminFlow does not know who hold mapped packages, left alone.
    pub left_alone: Vec<LeftAlone>,
    pub read: Duration,
    pub apply: Duration,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.reconciled;
        write!(
            f,
            "reconciled {} firms: {} missing and {} extra grants drifted, {} packages on unknown \
             persons left alone, {} parked changes retried; planned {} grants and {} revokes; \
             read Altinn in {:.1} s, delta and outbox in {:.1} s",
            r.firms,
            r.missing,
            r.extra,
            r.unknown,
            r.retried,
            r.planned.grants,
            r.planned.revokes,
            self.read.as_secs_f64(),
            self.apply.as_secs_f64()
        )?;
        if r.adopted > 0 {
            write!(
                f,
                "; adopted {} agents given access by hand who are known employees",
                r.adopted
            )?;
        }
        if r.planned.staged > 0 {
            write!(
                f,
                "; {} revokes staged by the mass-revoke guard, waiting for approval",
                r.planned.staged
            )?;
        }
        if r.stale > 0 {
            write!(
                f,
                "; {} firms left to a newer reconcile that read them later",
                r.stale
            )?;
        }
        if !self.unread.is_empty() {
            let names: Vec<&str> = self.unread.iter().map(|(f, _)| f.as_str()).collect();
            write!(f, "; not read: {}", names.join(", "))?;
        }
        if !self.left_alone.is_empty() {
            self.fmt_left_alone(f)?;
        }
        Ok(())
    }
}

impl Report {
    /// The first [`LEFT_ALONE_LISTED`] persons left alone by party and name, the rest counted.
    fn fmt_left_alone(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let listed: Vec<String> = self
            .left_alone
            .iter()
            .take(LEFT_ALONE_LISTED)
            .map(|p| {
                format!(
                    "party {} ({}) for firm {}",
                    p.party,
                    p.name.as_deref().unwrap_or("no name"),
                    p.firm
                )
            })
            .collect();
        write!(
            f,
            "; persons AdminFlow does not know, left alone: {}",
            listed.join(", ")
        )?;
        if let Some(more) = self.left_alone.len().checked_sub(LEFT_ALONE_LISTED)
            && more > 0
        {
            write!(f, " and {more} more")?;
        }
        Ok(())
    }
}
