//! The routes that only read: status, a sync's outcome, explain, the dry run, the parked and
//! staged lists, and the audit. Their error answers are added to the document by `doc`.

use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::Response;

use super::context::{Api, Authenticated, reply};
use super::input::{AuditParams, PageParams, ParkedParams, firm_of, query_of, uuid_of};
use crate::admin::problem::Problem;
use crate::ops;

#[utoipa::path(get, path = "/v1/firms/{org}/status", tag = "firms",
    responses((status = 200, body = ops::Status, description = "The firm's counts and last runs")))]
pub async fn status(
    Authenticated(caller, ..): Authenticated,
    State(api): State<Api>,
    Path(org): Path<String>,
) -> Result<Response, Problem> {
    let firm = firm_of(&caller, &org)?;
    Ok(reply(api.ops()?.status(&firm).await))
}

#[utoipa::path(get, path = "/v1/firms/{org}/syncs/{command_id}", tag = "syncs",
    params(("command_id" = Uuid, Path, description = "From POST sync")),
    responses((status = 200, body = ops::SyncSummary, description = "The sync and what became of its changes")))]
pub async fn sync_summary(
    Authenticated(caller, ..): Authenticated,
    State(api): State<Api>,
    Path((org, command_id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let command_id = uuid_of("command id", &command_id)?;
    let firm = firm_of(&caller, &org)?;
    Ok(reply(api.ops()?.sync_summary(&firm, command_id).await))
}

#[utoipa::path(get, path = "/v1/firms/{org}/employees/{employee_id}/explain", tag = "support",
    params(("employee_id" = Uuid, Path, description = "AdminFlow's employee id")),
    responses((status = 200, body = crate::state::Explanation, description = "Why the employee has or lacks access")))]
pub async fn explain(
    Authenticated(caller, ..): Authenticated,
    State(api): State<Api>,
    Path((org, employee)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let employee = uuid_of("employee id", &employee)?;
    let firm = firm_of(&caller, &org)?;
    Ok(reply(api.ops()?.explain(&firm, employee).await))
}

#[utoipa::path(get, path = "/v1/firms/{org}/plan", tag = "syncs", params(PageParams),
    responses((status = 200, body = ops::PlanPage, description = "A page of a dry run; changes nothing"),
        (status = 409, body = Problem, content_type = "application/problem+json",
         description = "A sync is planning the firm right now; try again in a moment")))]
pub async fn plan(
    Authenticated(caller, ..): Authenticated,
    State(api): State<Api>,
    Path(org): Path<String>,
    uri: Uri,
) -> Result<Response, Problem> {
    let page = query_of::<PageParams>(&uri)?.checked()?;
    let firm = firm_of(&caller, &org)?;
    Ok(reply(api.ops()?.plan_page(&firm, &page).await))
}

#[utoipa::path(get, path = "/v1/firms/{org}/parked", tag = "changes", params(ParkedParams),
    responses((status = 200, body = ops::ParkedPage, description = "Refused changes, newest first, and a paused flush")))]
pub async fn parked(
    Authenticated(caller, ..): Authenticated,
    State(api): State<Api>,
    Path(org): Path<String>,
    uri: Uri,
) -> Result<Response, Problem> {
    let page = query_of::<ParkedParams>(&uri)?.checked()?;
    let firm = firm_of(&caller, &org)?;
    Ok(reply(api.ops()?.parked_page(&firm, &page).await))
}

#[utoipa::path(get, path = "/v1/firms/{org}/staged", tag = "changes", params(PageParams),
    responses((status = 200, body = ops::StagedPage, description = "Revokes held by the mass-revoke guard, oldest first")))]
pub async fn staged(
    Authenticated(caller, ..): Authenticated,
    State(api): State<Api>,
    Path(org): Path<String>,
    uri: Uri,
) -> Result<Response, Problem> {
    let page = query_of::<PageParams>(&uri)?.checked()?;
    let firm = firm_of(&caller, &org)?;
    Ok(reply(api.ops()?.staged_page(&firm, &page).await))
}

#[utoipa::path(get, path = "/v1/firms/{org}/audit", tag = "support", params(AuditParams),
    responses((status = 200, body = ops::AuditPage, description = "The audit, newest first")))]
pub async fn audit(
    Authenticated(caller, ..): Authenticated,
    State(api): State<Api>,
    Path(org): Path<String>,
    uri: Uri,
) -> Result<Response, Problem> {
    let query = query_of::<AuditParams>(&uri)?.checked()?;
    let firm = firm_of(&caller, &org)?;
    Ok(reply(api.ops()?.audit(&firm, &query).await))
}
