//! [`Ops`]: the queries and actions on one firm, as the CLI and the API call them.

use sqlx::PgPool;
use uuid::Uuid;

use super::lists::{Count, StagedList};
use super::pages::{self, Page, ParkedCursor, ParkedPage, PlanPage, StagedPage};
use super::{AuditPage, AuditQuery, Error, Mode, Result, Status, SyncSummary, audit, status};
use crate::state::{self, Explanation};
use crate::sync;

/// The operations, over one pool.
#[derive(Debug, Clone)]
pub struct Ops {
    pool: PgPool,
    mode: Mode,
}

impl Ops {
    pub fn new(pool: PgPool, mode: Mode) -> Self {
        Self { pool, mode }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Fails with [`Error::UnknownFirm`] for a firm no event has named.
    pub async fn known(&self, firm: &str) -> Result<()> {
        let known = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM firms WHERE org_number = $1) AS "known!""#,
            firm
        )
        .fetch_one(&self.pool)
        .await?;
        if known {
            Ok(())
        } else {
            Err(Error::UnknownFirm(firm.to_owned()))
        }
    }

    pub async fn status(&self, firm: &str) -> Result<Status> {
        self.known(firm).await?;
        status::status(&self.pool, firm, self.mode.flush.revokes_enabled).await
    }

    pub async fn sync_summary(&self, firm: &str, command_id: Uuid) -> Result<SyncSummary> {
        self.known(firm).await?;
        status::sync_summary(&self.pool, firm, command_id)
            .await?
            .ok_or_else(|| Error::UnknownSync {
                firm: firm.to_owned(),
                command_id,
            })
    }

    pub async fn explain(&self, firm: &str, employee: Uuid) -> Result<Explanation> {
        let how = state::ExplainMode {
            flush_on: self.mode.flush_on,
            revokes_enabled: self.mode.flush.revokes_enabled,
        };
        state::explain(&self.pool, firm, employee, how)
            .await?
            .ok_or_else(|| Error::UnknownFirm(firm.to_owned()))
    }

    pub async fn plan(&self, firm: &str) -> Result<sync::Preview> {
        self.known(firm).await?;
        Ok(sync::preview(&self.pool, firm, &self.mode.flush).await?)
    }

    /// A page of the dry run (the API's; the CLI prints it whole).
    pub async fn plan_page(&self, firm: &str, page: &Page<i64>) -> Result<PlanPage> {
        Ok(pages::plan_page(self.plan(firm).await?, page))
    }

    /// A page of the firm's parked changes, newest first.
    pub async fn parked_page(&self, firm: &str, page: &Page<ParkedCursor>) -> Result<ParkedPage> {
        self.known(firm).await?;
        pages::parked(&self.pool, firm, page).await
    }

    /// A page of the firm's staged revokes, oldest first.
    pub async fn staged_page(&self, firm: &str, page: &Page<i64>) -> Result<StagedPage> {
        self.known(firm).await?;
        pages::staged(&self.pool, firm, page).await
    }

    /// Re-queues the firm's parked changes (or one), with an audit row each naming `actor`.
    pub async fn retry(&self, firm: &str, id: Option<i64>, actor: &str) -> Result<Count> {
        self.known(firm).await?;
        let count = sync::retry(&self.pool, firm, id, actor).await?;
        Ok(Count { count })
    }

    pub async fn staged(&self, firm: &str) -> Result<StagedList> {
        self.known(firm).await?;
        Ok(StagedList {
            staged: sync::staged(&self.pool, firm).await?,
        })
    }

    pub async fn approve(&self, firm: &str, ids: Option<&[i64]>, actor: &str) -> Result<Count> {
        self.known(firm).await?;
        let count = sync::approve_staged(&self.pool, firm, ids, actor).await?;
        Ok(Count { count })
    }

    pub async fn reject(&self, firm: &str, ids: Option<&[i64]>, actor: &str) -> Result<Count> {
        self.known(firm).await?;
        let count = sync::reject_staged(&self.pool, firm, ids, actor).await?;
        Ok(Count { count })
    }

    pub async fn audit(&self, firm: &str, query: &AuditQuery) -> Result<AuditPage> {
        self.known(firm).await?;
        audit::page(&self.pool, firm, query).await
    }
}
