//! Altinn's problem bodies (`AltinnProblemDetails`) and how simulator errors become answers.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Error;
use crate::altinn::error::LOOKUP_LOCKOUT_CODE;
use crate::altinn::wire::{OAuthError, ProblemDetails, ValidationError};

/// A W3C trace id, as Altinn's `Activity.Current.Id` gives.
fn trace_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("00-{id}-{}-00", &id[..16])
}

fn problem(status: StatusCode, code: &str, title: &str) -> ProblemDetails {
    ProblemDetails {
        problem_type: Some(format!("urn:altinn:error:{code}")),
        title: Some(title.to_owned()),
        status: Some(status.as_u16()),
        code: Some(code.to_owned()),
        trace_id: Some(trace_id()),
        status_description: status.canonical_reason().map(str::to_owned),
        ..ProblemDetails::default()
    }
}

/// One validation error at a JSON pointer (or `$QUERY/name`).
pub fn vld(code: &str, path: &str, title: &str) -> ValidationError {
    ValidationError {
        code: code.into(),
        title: Some(title.into()),
        paths: vec![path.into()],
        detail: None,
    }
}

/// 400 with Altinn's `STD-00000` wrapper around the validation errors.
pub fn validation(errors: Vec<ValidationError>) -> Error {
    let mut body = problem(
        StatusCode::BAD_REQUEST,
        "STD-00000",
        "One or more validation errors occurred.",
    );
    body.validation_errors = errors;
    Error::Problem(Box::new((StatusCode::BAD_REQUEST, body)))
}

/// 429 AM-00026: too many failed person lookups.
pub fn lookup_lockout() -> Error {
    let body = problem(
        StatusCode::TOO_MANY_REQUESTS,
        LOOKUP_LOCKOUT_CODE,
        "Too many failed person lookups.",
    );
    Error::Problem(Box::new((StatusCode::TOO_MANY_REQUESTS, body)))
}

/// 429 from the simulator's rate limit. Altinn documents no rate limit for access management,
/// so the body names none of its codes: the client must take it as plain throttling, never as
/// the lookup lock-out (AM-00026).
pub fn rate_limited(limit_per_s: u32, retry_after_secs: u64) -> Error {
    let status = StatusCode::TOO_MANY_REQUESTS;
    let body = ProblemDetails {
        title: Some("Too many requests.".into()),
        status: Some(status.as_u16()),
        detail: Some(format!(
            "More than {limit_per_s} requests per second; retry after {retry_after_secs} s."
        )),
        trace_id: Some(trace_id()),
        status_description: status.canonical_reason().map(str::to_owned),
        ..ProblemDetails::default()
    };
    Error::Problem(Box::new((status, body)))
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        const PROBLEM_JSON: &str = "application/problem+json";
        match self {
            Error::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
            )
                .into_response(),
            Error::Forbidden(_) => StatusCode::FORBIDDEN.into_response(),
            Error::Problem(boxed) => {
                let (status, body) = *boxed;
                (status, [(header::CONTENT_TYPE, PROBLEM_JSON)], Json(body)).into_response()
            }
            Error::OAuth { error, description } => {
                let body = OAuthError {
                    error: error.into(),
                    error_description: Some(description),
                };
                (StatusCode::BAD_REQUEST, Json(body)).into_response()
            }
            Error::BadRequest(text) => (StatusCode::BAD_REQUEST, text).into_response(),
            // Start-up errors; never produced while answering a request.
            err @ (Error::Bind { .. } | Error::ReadWorld { .. } | Error::ParseWorld { .. }) => {
                (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response()
            }
        }
    }
}
