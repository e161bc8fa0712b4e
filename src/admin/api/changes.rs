//! The routes that change something: request a sync, retry parked changes, approve or reject
//! staged revokes. Each acts as the token's name (`requested_by`, the audit's `actor`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::context::{Api, Authenticated, reply};
use super::input::{Selection, body_of, writable_firm_of};
use crate::admin::problem::Problem;
use crate::admin::tokens::Caller;
use crate::ops;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// Plan only once the firm's events up to this sequence are applied (waits up to 30 s).
    #[schema(minimum = 0)]
    pub after_sequence: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SyncAccepted {
    /// Poll GET /v1/firms/{org}/syncs/{command_id}.
    pub command_id: Uuid,
}

// `Option<…>` as a body is one that may be left out; utoipa writes it as nullable, and `doc`
// turns that into an optional body that is never `null`, which is what `body_of` takes.
#[utoipa::path(post, path = "/v1/firms/{org}/sync", tag = "syncs",
    request_body(content = Option<SyncRequest>, description = "May be left out: the same as `{}`"),
    responses((status = 202, body = SyncAccepted, description = "The broker confirmed the SyncNow")))]
pub async fn sync(
    Authenticated(caller, ..): Authenticated,
    State(api): State<Api>,
    Path(org): Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    let request: Option<SyncRequest> = body_of(&body)?;
    let after_sequence = request.and_then(|r| r.after_sequence);
    if after_sequence.is_some_and(|s| s < 0) {
        return Err(Problem::bad_request("after_sequence must not be negative"));
    }
    let firm = writable_firm_of(&caller, &org)?;
    api.ops()?.known(&firm).await?;
    api.sync_allowed(&caller)?;
    let command_id = api
        .publisher
        .request_sync(&firm, after_sequence, &caller.name)
        .await?;
    tracing::info!(firm, command.id = %command_id, requested_by = caller.name, "sync requested through the admin API");
    Ok((StatusCode::ACCEPTED, Json(SyncAccepted { command_id })).into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// Only this parked change (an id from GET parked); every one without.
    pub id: Option<i64>,
}

#[utoipa::path(post, path = "/v1/firms/{org}/parked/retry", tag = "changes",
    request_body(content = Option<RetryRequest>, description = "May be left out: re-queues every parked change"),
    responses((status = 200, body = ops::Count, description = "How many were re-queued")))]
pub async fn retry(
    Authenticated(caller, ..): Authenticated,
    State(api): State<Api>,
    Path(org): Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    let request: Option<RetryRequest> = body_of(&body)?;
    let firm = writable_firm_of(&caller, &org)?;
    let id = request.and_then(|r| r.id);
    Ok(reply(api.ops()?.retry(&firm, id, &caller.name).await))
}

/// Which staged revokes: `{"ids": [...]}` (ids from GET staged), or `{"all": true}`.
pub struct SelectionBody;

impl utoipa::PartialSchema for SelectionBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let schema = serde_json::json!({
            "description": "Exactly one of: the ids of the staged revokes (from GET staged), or \
                            `all: true` for every one. There is no default: without either, \
                            nothing is decided (400).",
            "oneOf": [
                {"type": "object", "required": ["ids"], "additionalProperties": false,
                 "properties": {"ids": {"type": "array",
                                        "items": {"type": "integer", "format": "int64"}}}},
                {"type": "object", "required": ["all"], "additionalProperties": false,
                 "properties": {"all": {"type": "boolean", "enum": [true]}}}
            ]
        });
        #[expect(
            clippy::expect_used,
            reason = "a literal; the committed document's test runs it"
        )]
        serde_json::from_value(schema).expect("the selection's schema is an OpenAPI schema")
    }
}

impl utoipa::ToSchema for SelectionBody {
    fn name() -> std::borrow::Cow<'static, str> {
        "Selection".into()
    }
}

#[utoipa::path(post, path = "/v1/firms/{org}/staged/approve", tag = "changes",
    request_body(content = SelectionBody),
    responses((status = 200, body = ops::Count, description = "How many were released to Altinn")))]
pub async fn approve(
    Authenticated(caller, ..): Authenticated,
    State(api): State<Api>,
    Path(org): Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    decide(&caller, &api, &org, &body, Decision::Approve).await
}

#[utoipa::path(post, path = "/v1/firms/{org}/staged/reject", tag = "changes",
    request_body(content = SelectionBody),
    responses((status = 200, body = ops::Count, description = "How many were dropped")))]
pub async fn reject(
    Authenticated(caller, ..): Authenticated,
    State(api): State<Api>,
    Path(org): Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    decide(&caller, &api, &org, &body, Decision::Reject).await
}

enum Decision {
    Approve,
    Reject,
}

/// Approve or reject the staged revokes the body selects, as `caller`.
async fn decide(
    caller: &Caller,
    api: &Api,
    org: &str,
    body: &[u8],
    decision: Decision,
) -> Result<Response, Problem> {
    let verb = match decision {
        Decision::Approve => "approved",
        Decision::Reject => "rejected",
    };
    let selection = Selection::of(body, verb)?;
    let firm = writable_firm_of(caller, org)?;
    let ops = api.ops()?;
    let decided = match decision {
        Decision::Approve => ops.approve(&firm, selection.ids(), &caller.name).await,
        Decision::Reject => ops.reject(&firm, selection.ids(), &caller.name).await,
    };
    Ok(reply(decided))
}
