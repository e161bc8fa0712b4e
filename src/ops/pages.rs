//! The API's bounded lists: parked changes, staged revokes and the dry run a page at a time,
//! so one call never reads or sends a firm's whole backlog.

use chrono::DateTime;
use serde::Serialize;
use sqlx::PgPool;

use super::Result;
use crate::sync;

/// Entries a page holds without `limit`.
pub const PAGE_DEFAULT: i64 = 100;
/// The most entries one page holds.
pub const PAGE_MAX: i64 = 1000;

/// Which page: at most `limit` entries, from a cursor the previous page gave.
#[derive(Debug, Clone, Default)]
pub struct Page<C> {
    pub limit: Option<i64>,
    pub cursor: Option<C>,
}

impl<C> Page<C> {
    fn size(&self) -> i64 {
        self.limit.unwrap_or(PAGE_DEFAULT).clamp(1, PAGE_MAX)
    }
}

/// Where a page of parked changes ends: the last one's parked time and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParkedCursor {
    pub parked_at_micros: i64,
    pub id: i64,
}

impl ParkedCursor {
    /// `MICROS.ID`, as `next_before` gives it.
    pub fn parse(raw: &str) -> Option<Self> {
        let (micros, id) = raw.split_once('.')?;
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(micros) || !digits(id) {
            return None;
        }
        Some(Self {
            parked_at_micros: micros.parse().ok()?,
            id: id.parse().ok()?,
        })
    }
}

impl std::fmt::Display for ParkedCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.parked_at_micros, self.id)
    }
}

/// A page of the firm's parked changes, newest first, and whether its flush is paused.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ParkedPage {
    pub paused_firms: Vec<sync::PausedFirm>,
    pub parked_changes: Vec<sync::Parked>,
    /// Pass as `before` for the next page; null on the last.
    pub next_before: Option<String>,
}

pub(super) async fn parked(
    pool: &PgPool,
    firm: &str,
    page: &Page<ParkedCursor>,
) -> Result<ParkedPage> {
    let size = page.size();
    let before = page
        .cursor
        .and_then(|c| Some((DateTime::from_timestamp_micros(c.parked_at_micros)?, c.id)));
    let mut rows = sqlx::query_as!(
        sync::Parked,
        r#"SELECT id, firm, employee_id, client_org_number, package, action, explanation,
                  attempts, finished_at AS parked_at
           FROM outbox
           WHERE firm = $1 AND status = 'parked'
             AND ($2::timestamptz IS NULL OR (finished_at, id) < ($2, $3))
           ORDER BY finished_at DESC, id DESC LIMIT $4"#,
        firm,
        before.map(|b| b.0),
        before.map_or(0, |b| b.1),
        size + 1
    )
    .fetch_all(pool)
    .await?;
    let more = cut(&mut rows, size);
    let next_before = more
        .then(|| rows.last())
        .flatten()
        .and_then(|r| {
            Some(ParkedCursor {
                parked_at_micros: r.parked_at?.timestamp_micros(),
                id: r.id,
            })
        })
        .map(|c| c.to_string());
    Ok(ParkedPage {
        paused_firms: sync::paused(pool, Some(firm)).await?,
        parked_changes: rows,
        next_before,
    })
}

/// A page of the firm's staged revokes, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StagedPage {
    pub staged: Vec<sync::StagedRevoke>,
    /// Pass as `after` for the next page; null on the last.
    pub next_after: Option<i64>,
}

pub(super) async fn staged(pool: &PgPool, firm: &str, page: &Page<i64>) -> Result<StagedPage> {
    let size = page.size();
    let mut staged = sqlx::query_as!(
        sync::StagedRevoke,
        r#"SELECT id, employee_id, client_org_number, package, staged_at, cause FROM outbox
           WHERE firm = $1 AND status = 'staged' AND id > $2
           ORDER BY id LIMIT $3"#,
        firm,
        page.cursor.unwrap_or(0),
        size + 1
    )
    .fetch_all(pool)
    .await?;
    let more = cut(&mut staged, size);
    let next_after = more.then(|| staged.last().map(|s| s.id)).flatten();
    Ok(StagedPage { staged, next_after })
}

/// How many changes of each kind the whole dry run holds.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct PlanTotals {
    pub grants: u64,
    pub revokes: u64,
    pub staged_revokes: u64,
}

/// A page of a dry run: its changes in the order grants, revokes, staged revokes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PlanPage {
    pub grants: Vec<sync::Change>,
    pub revokes: Vec<sync::Change>,
    pub staged_revokes: Vec<sync::Change>,
    /// The whole dry run's counts, of every page.
    pub totals: PlanTotals,
    /// Pass as `after` for the next page (the changes read so far); null on the last.
    pub next_after: Option<i64>,
}

/// Pages a dry run: the plan is made whole each time (it is rolled back), the answer is not.
pub(super) fn plan_page(preview: sync::Preview, page: &Page<i64>) -> PlanPage {
    let count = |v: &Vec<sync::Change>| u64::try_from(v.len()).unwrap_or(u64::MAX);
    let totals = PlanTotals {
        grants: count(&preview.grants),
        revokes: count(&preview.revokes),
        staged_revokes: count(&preview.staged_revokes),
    };
    let size = usize::try_from(page.size()).unwrap_or(usize::MAX);
    let (grants_len, revokes_len) = (preview.grants.len(), preview.revokes.len());
    let start = page
        .cursor
        .map_or(0, |a| usize::try_from(a).unwrap_or(usize::MAX));
    let all = grants_len + revokes_len + preview.staged_revokes.len();
    let end = start.saturating_add(size).min(all);
    let window = |changes: Vec<sync::Change>, offset: usize| -> Vec<sync::Change> {
        let from = start.saturating_sub(offset).min(changes.len());
        let to = end.saturating_sub(offset).min(changes.len());
        changes
            .into_iter()
            .skip(from)
            .take(to.saturating_sub(from))
            .collect()
    };
    let next_after = (end < all).then(|| i64::try_from(end).unwrap_or(i64::MAX));
    PlanPage {
        grants: window(preview.grants, 0),
        revokes: window(preview.revokes, grants_len),
        staged_revokes: window(preview.staged_revokes, grants_len + revokes_len),
        totals,
        next_after,
    }
}

/// Keeps the first `size` rows of `size + 1` read; says whether there were more.
fn cut<T>(rows: &mut Vec<T>, size: i64) -> bool {
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    let more = rows.len() > size;
    rows.truncate(size);
    more
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn changes(n: usize) -> Vec<sync::Change> {
        (0..n)
            .map(|i| sync::Change {
                employee_id: uuid::Uuid::nil(),
                client_org_number: format!("{i}"),
                package: "p".to_owned(),
            })
            .collect()
    }

    #[test]
    fn a_plan_is_paged_across_its_kinds_in_order() {
        let preview = || sync::Preview {
            grants: changes(3),
            revokes: changes(2),
            staged_revokes: changes(2),
        };
        let page = |limit, after| {
            plan_page(
                preview(),
                &Page {
                    limit: Some(limit),
                    cursor: after,
                },
            )
        };
        let first = page(4, None);
        assert_eq!(
            (
                first.grants.len(),
                first.revokes.len(),
                first.staged_revokes.len()
            ),
            (3, 1, 0)
        );
        assert_eq!(first.next_after, Some(4));
        assert_eq!(first.totals.staged_revokes, 2);
        let second = page(4, Some(4));
        assert_eq!(
            (
                second.grants.len(),
                second.revokes.len(),
                second.staged_revokes.len()
            ),
            (0, 1, 2)
        );
        assert_eq!(second.revokes[0].client_org_number, "1");
        assert_eq!(second.next_after, None);
        assert!(page(4, Some(99)).grants.is_empty());
    }

    #[test]
    fn a_parked_cursor_is_two_digit_runs() {
        let c = ParkedCursor {
            parked_at_micros: 1_765_152_000_123_456,
            id: 42,
        };
        assert_eq!(ParkedCursor::parse(&c.to_string()), Some(c));
        for bad in [
            "",
            ".",
            "1.",
            ".1",
            "1.2.3",
            "-1.2",
            "a.1",
            "99999999999999999999.1",
        ] {
            assert_eq!(ParkedCursor::parse(bad), None, "{bad}");
        }
    }
}
