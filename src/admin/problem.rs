//! Errors as `application/problem+json` (RFC 9457), with a title and a detail a person can act
//! on. Every failure of the API is one of these; none is a 500. A detail never carries a run of
//! ten or more digits: it may quote the caller's input, and that could be an identity number.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::telemetry::{ErrorChain, redact_digit_runs};
use crate::{ops, state};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Seconds to wait before trying again (`Retry-After`), for a 429.
    #[serde(skip)]
    #[schema(ignore)]
    pub retry_after: Option<u64>,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
}

impl Problem {
    pub fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Self {
        Self {
            retry_after: None,
            kind: "about:blank",
            title,
            status: status.as_u16(),
            detail: redact_digit_runs(&detail.into()),
        }
    }

    /// A problem titled with the status's own reason phrase.
    pub fn of_status(status: StatusCode, detail: impl Into<String>) -> Self {
        Self::new(status, status.canonical_reason().unwrap_or("Error"), detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", detail)
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Bad request", detail)
    }

    pub fn forbidden(firm: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("this token may not act for firm {firm}"),
        )
    }

    /// 429, with `Retry-After` of `wait` (rounded up to a second).
    pub fn too_many(detail: impl Into<String>, wait: std::time::Duration) -> Self {
        let mut problem = Self::new(StatusCode::TOO_MANY_REQUESTS, "Too many requests", detail);
        problem.retry_after = Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0));
        problem
    }

    pub fn read_only() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "this token is read-only: it may not change anything (ask for a token without `read`)",
        )
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service unavailable",
            detail,
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after;
        let mut response = (status, Json(self)).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<ops::Error> for Problem {
    fn from(e: ops::Error) -> Self {
        match &e {
            ops::Error::Busy(_) => Self::new(StatusCode::CONFLICT, "Conflict", e.to_string()),
            ops::Error::UnknownFirm(_) | ops::Error::UnknownSync { .. } => {
                Self::new(StatusCode::NOT_FOUND, "Not found", e.to_string())
            }
            ops::Error::Database(db) => {
                tracing::warn!(error = %ErrorChain(&e),
                    "admin API: PostgreSQL failed");
                Self::unavailable(database_detail(db))
            }
            ops::Error::Publish(_) => {
                tracing::warn!(error = %ErrorChain(&e),
                    "admin API: RabbitMQ failed");
                Self::unavailable("RabbitMQ is unavailable; the sync was not requested")
            }
        }
    }
}

/// What a caller can do about a database failure: a busy API, a query cut off, or an outage.
fn database_detail(e: &state::Error) -> &'static str {
    let state::Error::Unavailable(e) = e else {
        return "PostgreSQL is unavailable; try again shortly";
    };
    let code = match e {
        sqlx::Error::PoolTimedOut => {
            return "every PostgreSQL connection of the admin API is busy \
                    (ADMIN_DATABASE_MAX_CONNECTIONS); try again shortly";
        }
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    };
    match code.as_deref() {
        // query_canceled: the API's statement_timeout cut the query off.
        Some("57014") => {
            "the query took longer than the admin API allows (ADMIN_STATEMENT_TIMEOUT_MS) and \
             was cut off; try again, or narrow it with limit"
        }
        Some("55P03") => "the firm's rows are locked by the worker right now; try again shortly",
        _ => "PostgreSQL is unavailable; try again shortly",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detail_never_quotes_a_long_digit_run() {
        let p = Problem::bad_request(r#"the body is not valid: {"id":"15038512345"} at line 1"#);
        assert_eq!(
            p.detail,
            r#"the body is not valid: {"id":"<redacted>"} at line 1"#
        );
        let p = Problem::bad_request("\"912345611\" is not an organisation number");
        assert!(
            p.detail.contains("912345611"),
            "nine digits stay: {}",
            p.detail
        );
        let p = Problem::bad_request("x 123456789012345678901234567890");
        assert_eq!(p.detail, "x <redacted>");
    }
}
