//! The `/v1` API: what AdminFlow's settings page and support call. Every route needs a bearer
//! token from `ADMIN_TOKENS_FILE`; the checks run in a fixed order (401, 400, 403, 404), so a
//! caller without a token learns nothing about firms, and one with a token of another firm
//! learns nothing about this one.
//!
//! The handlers only check input and call [`crate::ops`]; the OpenAPI document is generated
//! from them and committed as `schemas/admin-api.openapi.json`, and `tests/api/run.sh` checks
//! a running `dev` against it with schemathesis.

mod changes;
mod context;
mod doc;
mod input;
mod reads;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

pub use context::Api;
pub use doc::openapi_json;

use super::problem::Problem;

/// Bodies are a few bytes of JSON; anything larger is refused before it is read.
const BODY_LIMIT: usize = 16 * 1024;
/// A request, body included, must arrive and be answered within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The most of a framework's plain-text refusal that is read to make it a problem.
const REFUSAL_LIMIT: usize = 4 * 1024;

pub fn routes(api: Api) -> Router {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/v1/firms/{org}/status", get(reads::status))
        .route(
            "/v1/firms/{org}/syncs/{command_id}",
            get(reads::sync_summary),
        )
        .route(
            "/v1/firms/{org}/employees/{employee_id}/explain",
            get(reads::explain),
        )
        .route("/v1/firms/{org}/plan", get(reads::plan))
        .route("/v1/firms/{org}/sync", post(changes::sync))
        .route("/v1/firms/{org}/parked", get(reads::parked))
        .route("/v1/firms/{org}/parked/retry", post(changes::retry))
        .route("/v1/firms/{org}/staged", get(reads::staged))
        .route("/v1/firms/{org}/staged/approve", post(changes::approve))
        .route("/v1/firms/{org}/staged/reject", post(changes::reject))
        .route("/v1/firms/{org}/audit", get(reads::audit))
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

/// The API promises problem+json for every error, but some refusals come from the framework in
/// plain text or empty: the body limit's 413, the timeout's 408, a 405 for a method a route
/// lacks, and axum's own 400 for a path it cannot decode. Those become problems here.
async fn as_problem(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes() == b"application/problem+json");
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let detail = match status {
        StatusCode::PAYLOAD_TOO_LARGE => format!("the body is larger than {BODY_LIMIT} bytes"),
        StatusCode::REQUEST_TIMEOUT => format!(
            "the request was not completed within {} s",
            REQUEST_TIMEOUT.as_secs()
        ),
        StatusCode::METHOD_NOT_ALLOWED => method_not_allowed(allow.as_ref()),
        _ => refusal_text(response.into_body()).await,
    };
    let mut problem = Problem::of_status(status, detail).into_response();
    if let Some(allow) = allow {
        problem.headers_mut().insert(header::ALLOW, allow);
    }
    problem
}

fn method_not_allowed(allow: Option<&HeaderValue>) -> String {
    match allow.and_then(|a| a.to_str().ok()) {
        Some(methods) => format!("this route takes {methods} only; see /openapi.json"),
        None => "this route does not take that method; see /openapi.json".to_owned(),
    }
}

/// The framework's own words (Problem redacts any long digit run they quote).
async fn refusal_text(body: Body) -> String {
    let text = axum::body::to_bytes(body, REFUSAL_LIMIT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    if text.is_empty() {
        "the request was refused".to_owned()
    } else {
        text
    }
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
