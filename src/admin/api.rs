//! The `/v1` API: what AdminFlow's settings page and support call. Every route needs a bearer
//! token from `ADMIN_TOKENS_FILE`; the checks run in a fixed order (401, 400, 403, 404), so a
//! caller without a token learns nothing about firms, and one with a token of another firm
//! learns nothing about this one.
//!
//! The handlers only check input and call [`crate::ops`]; the OpenAPI document is generated
//! from them and committed as `schemas/admin-api.openapi.json`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;
use uuid::Uuid;

use super::problem::Problem;
use super::tokens::Caller;
use super::{Health, Tokens};
use crate::contract::OrgNumber;
use crate::ingest::{BrokerSettings, IngestSettings};
use crate::ops::{self, AuditQuery, Ops};

/// Bodies are a few bytes of JSON; anything larger is refused before it is read.
const BODY_LIMIT: usize = 16 * 1024;
/// A request, body included, must arrive and be answered within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// What the API needs: the pool (once connected), the tokens, the mode and the broker.
#[derive(Clone)]
pub struct Api {
    health: Arc<Health>,
    tokens: Arc<Tokens>,
    mode: ops::Mode,
    amqp_url: String,
    topology_prefix: String,
}

impl Api {
    /// `mode` is the worker's; requested syncs go to the broker and topology ingest reads.
    pub fn new(
        health: Arc<Health>,
        tokens: Tokens,
        mode: ops::Mode,
        broker: &BrokerSettings,
        ingest: &IngestSettings,
    ) -> Self {
        Self {
            health,
            tokens: Arc::new(tokens),
            mode,
            amqp_url: broker.amqp_url.clone(),
            topology_prefix: ingest.topology_prefix.clone(),
        }
    }

    fn ops(&self) -> Result<Ops, Problem> {
        let pool = self.health.pool().ok_or_else(|| {
            Problem::unavailable("the worker is still connecting to PostgreSQL; try again shortly")
        })?;
        Ok(Ops::new(pool.clone(), self.mode.clone()))
    }
}

pub fn routes(api: Api) -> Router {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/v1/firms/{org}/status", get(status))
        .route("/v1/firms/{org}/syncs/{command_id}", get(sync_summary))
        .route(
            "/v1/firms/{org}/employees/{employee_id}/explain",
            get(explain),
        )
        .route("/v1/firms/{org}/plan", get(plan))
        .route("/v1/firms/{org}/sync", post(sync))
        .route("/v1/firms/{org}/parked", get(parked))
        .route("/v1/firms/{org}/parked/retry", post(retry))
        .route("/v1/firms/{org}/staged", get(staged))
        .route("/v1/firms/{org}/staged/approve", post(approve))
        .route("/v1/firms/{org}/staged/reject", post(reject))
        .route("/v1/firms/{org}/audit", get(audit))
        .fallback(not_found)
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        // Outermost, so the limits' own refusals are problems too.
        .layer(axum::middleware::map_response(as_problem))
        .with_state(api)
}

/// The body limit's 413 and the timeout's 408 come from tower-http in plain text; the API
/// promises problem+json for every error.
async fn as_problem(response: Response) -> Response {
    let detail = match response.status() {
        StatusCode::PAYLOAD_TOO_LARGE => format!("the body is larger than {BODY_LIMIT} bytes"),
        StatusCode::REQUEST_TIMEOUT => format!(
            "the request was not completed within {} s",
            REQUEST_TIMEOUT.as_secs()
        ),
        _ => return response,
    };
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes() == b"application/problem+json");
    if is_problem {
        return response;
    }
    let title = if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        "Payload too large"
    } else {
        "Request timeout"
    };
    Problem::new(response.status(), title, detail).into_response()
}

/// The caller, from `Authorization: Bearer <token>`; the first check of every route.
pub struct Authenticated(Caller);

impl FromRequestParts<Api> for Authenticated {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Self, Problem> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| Problem::unauthorized("send Authorization: Bearer <token>"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Problem::unauthorized("the Authorization header is not `Bearer <token>`")
            })?;
        if api.tokens.is_empty() {
            return Err(Problem::unauthorized(
                "no admin tokens are configured on this worker (ADMIN_TOKENS_FILE)",
            ));
        }
        api.tokens
            .authenticate(token)
            .map(Self)
            .ok_or_else(|| Problem::unauthorized("the token is not valid"))
    }
}

/// Checks the organisation number (400), then the token's scope (403).
fn firm_of(caller: &Caller, org: &str) -> Result<String, Problem> {
    let org = OrgNumber::parse("org", org)
        .map_err(|e| Problem::bad_request(format!("{org:?} is not an organisation number: {e}")))?;
    if !caller.scope.allows(org.as_str()) {
        return Err(Problem::forbidden(org.as_str()));
    }
    Ok(org.to_string())
}

fn uuid_of(what: &str, raw: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(raw).map_err(|_| Problem::bad_request(format!("{what} {raw:?} is not a UUID")))
}

/// An optional JSON body: empty means none.
fn body_of<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<Option<T>, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| Problem::bad_request(format!("the body is not valid: {e}")))
}

fn reply<T: Serialize>(result: Result<T, ops::Error>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(e) => Problem::from(e).into_response(),
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "altinn-sync admin API",
        description = "What AdminFlow's settings page and support call: a firm's status, one \
                       sync's outcome, why an employee's access is missing, dry runs, parked and \
                       staged changes, and the audit. Every /v1 route needs a bearer token from \
                       ADMIN_TOKENS_FILE."
    ),
    paths(status, sync_summary, explain, plan, sync, parked, retry, staged, approve, reject, audit),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document, as committed in `schemas/admin-api.openapi.json`.
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json())
}

async fn not_found() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "Not found",
        "no such route; see /openapi.json",
    )
}

#[utoipa::path(get, path = "/v1/firms/{org}/status", tag = "firms",
    params(("org" = String, Path, description = "The firm's organisation number")),
    responses((status = 200, body = ops::Status), (status = "4XX", body = Problem), (status = 503, body = Problem)))]
async fn status(
    Authenticated(caller): Authenticated,
    State(api): State<Api>,
    Path(org): Path<String>,
) -> Result<Response, Problem> {
    let firm = firm_of(&caller, &org)?;
    Ok(reply(api.ops()?.status(&firm).await))
}

#[utoipa::path(get, path = "/v1/firms/{org}/syncs/{command_id}", tag = "syncs",
    params(("org" = String, Path), ("command_id" = Uuid, Path, description = "From POST sync")),
    responses((status = 200, body = ops::SyncSummary), (status = "4XX", body = Problem), (status = 503, body = Problem)))]
async fn sync_summary(
    Authenticated(caller): Authenticated,
    State(api): State<Api>,
    Path((org, command_id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let command_id = uuid_of("command id", &command_id)?;
    let firm = firm_of(&caller, &org)?;
    Ok(reply(api.ops()?.sync_summary(&firm, command_id).await))
}

#[utoipa::path(get, path = "/v1/firms/{org}/employees/{employee_id}/explain", tag = "support",
    params(("org" = String, Path), ("employee_id" = Uuid, Path, description = "AdminFlow's employee id")),
    responses((status = 200, body = crate::state::Explanation), (status = "4XX", body = Problem), (status = 503, body = Problem)))]
async fn explain(
    Authenticated(caller): Authenticated,
    State(api): State<Api>,
    Path((org, employee)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let employee = uuid_of("employee id", &employee)?;
    let firm = firm_of(&caller, &org)?;
    Ok(reply(api.ops()?.explain(&firm, employee).await))
}

#[utoipa::path(get, path = "/v1/firms/{org}/plan", tag = "syncs",
    params(("org" = String, Path)),
    responses((status = 200, body = crate::sync::Preview, description = "A dry run; changes nothing"), (status = "4XX", body = Problem), (status = 503, body = Problem)))]
async fn plan(
    Authenticated(caller): Authenticated,
    State(api): State<Api>,
    Path(org): Path<String>,
) -> Result<Response, Problem> {
    let firm = firm_of(&caller, &org)?;
    Ok(reply(api.ops()?.plan(&firm).await))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// Plan only once the firm's events up to this sequence are applied (waits up to 30 s).
    pub after_sequence: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SyncAccepted {
    /// Poll GET /v1/firms/{org}/syncs/{command_id}.
    pub command_id: Uuid,
}

#[utoipa::path(post, path = "/v1/firms/{org}/sync", tag = "syncs",
    params(("org" = String, Path)), request_body(content = Option<SyncRequest>),
    responses((status = 202, body = SyncAccepted, description = "The broker confirmed the SyncNow"), (status = "4XX", body = Problem), (status = 503, body = Problem)))]
async fn sync(
    Authenticated(caller): Authenticated,
    State(api): State<Api>,
    Path(org): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let request: Option<SyncRequest> = body_of(&body)?;
    let after_sequence = request.and_then(|r| r.after_sequence);
    if after_sequence.is_some_and(|s| s < 0) {
        return Err(Problem::bad_request("after_sequence must not be negative"));
    }
    let firm = firm_of(&caller, &org)?;
    api.ops()?.known(&firm).await?;
    let command_id = ops::request_sync(
        &api.amqp_url,
        &api.topology_prefix,
        &firm,
        after_sequence,
        &caller.name,
    )
    .await?;
    tracing::info!(firm, command.id = %command_id, requested_by = caller.name, "sync requested through the admin API");
    Ok((StatusCode::ACCEPTED, Json(SyncAccepted { command_id })).into_response())
}

#[utoipa::path(get, path = "/v1/firms/{org}/parked", tag = "changes",
    params(("org" = String, Path)),
    responses((status = 200, body = ops::ParkedList), (status = "4XX", body = Problem), (status = 503, body = Problem)))]
async fn parked(
    Authenticated(caller): Authenticated,
    State(api): State<Api>,
    Path(org): Path<String>,
) -> Result<Response, Problem> {
    let firm = firm_of(&caller, &org)?;
    Ok(reply(api.ops()?.parked(&firm).await))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// Only this parked change (an id from GET parked).
    pub id: Option<i64>,
}

#[utoipa::path(post, path = "/v1/firms/{org}/parked/retry", tag = "changes",
    params(("org" = String, Path)), request_body(content = Option<RetryRequest>),
    responses((status = 200, body = ops::Count), (status = "4XX", body = Problem), (status = 503, body = Problem)))]
async fn retry(
    Authenticated(caller): Authenticated,
    State(api): State<Api>,
    Path(org): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let request: Option<RetryRequest> = body_of(&body)?;
    let firm = firm_of(&caller, &org)?;
    let id = request.and_then(|r| r.id);
    Ok(reply(api.ops()?.retry(&firm, id, &caller.name).await))
}

#[utoipa::path(get, path = "/v1/firms/{org}/staged", tag = "changes",
    params(("org" = String, Path)),
    responses((status = 200, body = ops::StagedList), (status = "4XX", body = Problem), (status = 503, body = Problem)))]
async fn staged(
    Authenticated(caller): Authenticated,
    State(api): State<Api>,
    Path(org): Path<String>,
) -> Result<Response, Problem> {
    let firm = firm_of(&caller, &org)?;
    Ok(reply(api.ops()?.staged(&firm).await))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdsRequest {
    /// Only these staged revokes (ids from GET staged); all without.
    pub ids: Option<Vec<i64>>,
}

#[utoipa::path(post, path = "/v1/firms/{org}/staged/approve", tag = "changes",
    params(("org" = String, Path)), request_body(content = Option<IdsRequest>),
    responses((status = 200, body = ops::Count), (status = "4XX", body = Problem), (status = 503, body = Problem)))]
async fn approve(
    Authenticated(caller): Authenticated,
    State(api): State<Api>,
    Path(org): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    decide(&caller, &api, &org, &body, Decision::Approve).await
}

#[utoipa::path(post, path = "/v1/firms/{org}/staged/reject", tag = "changes",
    params(("org" = String, Path)), request_body(content = Option<IdsRequest>),
    responses((status = 200, body = ops::Count), (status = "4XX", body = Problem), (status = 503, body = Problem)))]
async fn reject(
    Authenticated(caller): Authenticated,
    State(api): State<Api>,
    Path(org): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    decide(&caller, &api, &org, &body, Decision::Reject).await
}

enum Decision {
    Approve,
    Reject,
}

/// Approve or reject the staged revokes the body names (all without one), as `caller`.
async fn decide(
    caller: &Caller,
    api: &Api,
    org: &str,
    body: &[u8],
    decision: Decision,
) -> Result<Response, Problem> {
    let request: Option<IdsRequest> = body_of(body)?;
    let firm = firm_of(caller, org)?;
    let ids = request.and_then(|r| r.ids);
    let ops = api.ops()?;
    let decided = match decision {
        Decision::Approve => ops.approve(&firm, ids.as_deref(), &caller.name).await,
        Decision::Reject => ops.reject(&firm, ids.as_deref(), &caller.name).await,
    };
    Ok(reply(decided))
}

#[utoipa::path(get, path = "/v1/firms/{org}/audit", tag = "support",
    params(("org" = String, Path), AuditQuery),
    responses((status = 200, body = ops::AuditPage), (status = "4XX", body = Problem), (status = 503, body = Problem)))]
async fn audit(
    Authenticated(caller): Authenticated,
    State(api): State<Api>,
    Path(org): Path<String>,
    uri: Uri,
) -> Result<Response, Problem> {
    let Query(query) = Query::<AuditQuery>::try_from_uri(&uri)
        .map_err(|e| Problem::bad_request(format!("bad query: {}", e.body_text())))?;
    if let Some(client) = &query.client {
        OrgNumber::parse("client", client).map_err(|e| {
            Problem::bad_request(format!(
                "client {client:?} is not an organisation number: {e}"
            ))
        })?;
    }
    if query
        .limit
        .is_some_and(|l| !(1..=ops::AUDIT_PAGE_MAX).contains(&l))
    {
        return Err(Problem::bad_request(format!(
            "limit must be between 1 and {}",
            ops::AUDIT_PAGE_MAX
        )));
    }
    let firm = firm_of(&caller, &org)?;
    Ok(reply(api.ops()?.audit(&firm, &query).await))
}
