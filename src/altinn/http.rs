//! The one way every call to Altinn and Maskinporten goes out: an HTTP client span, the W3C
//! `traceparent` of that span sent along, and the request metrics.
//!
//! Metrics (`endpoint` is a route template from [`super::paths::ENDPOINTS`], never an id):
//! - `altinn_sync_altinn_requests_total{endpoint, status}`: `status` is the HTTP status, or
//!   `timeout`, or `error` when the connection failed otherwise.
//! - `altinn_sync_altinn_request_duration_seconds{endpoint}`, to the end of the answer's body.

use std::time::Instant;

use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, StatusCode};
use tracing::Instrument;
use tracing::field::Empty;

use super::error::{Error, Result};
use super::paths::Endpoint;
use crate::telemetry;

/// An answer, read to its end.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Sends `request` to `endpoint` in a client span (a child of the current one) and reads the
/// answer; `firm` names the firm the call acts for, when there is one. A transport failure
/// comes back as [`Error::transport`]; an answer of any status is the caller's to classify.
pub async fn send(
    endpoint: Endpoint,
    firm: Option<&str>,
    request: RequestBuilder,
) -> Result<Answer> {
    let span = tracing::info_span!(
        "altinn.request",
        otel.name = %format_args!("{} {}", endpoint.method, endpoint.route),
        otel.kind = "client",
        otel.status_code = Empty,
        http.request.method = endpoint.method,
        url.template = endpoint.route,
        endpoint = endpoint.label,
        firm,
        http.response.status_code = Empty,
        error.type = Empty,
    );
    let request = telemetry::inject_http(&span, request);
    let started = Instant::now();
    let answer = async {
        let response = request.send().await?;
        let (status, headers) = (response.status(), response.headers().clone());
        let body = response.bytes().await?.to_vec();
        Ok::<_, reqwest::Error>(Answer {
            status,
            headers,
            body,
        })
    }
    .instrument(span.clone())
    .await;
    let status = match &answer {
        Ok(a) => {
            span.record("http.response.status_code", i64::from(a.status.as_u16()));
            if a.status.is_client_error() || a.status.is_server_error() {
                span.record("otel.status_code", "ERROR");
                span.record("error.type", a.status.as_str());
            }
            a.status.as_str().to_owned()
        }
        Err(e) => {
            let kind = if e.is_timeout() { "timeout" } else { "error" };
            span.record("otel.status_code", "ERROR");
            span.record("error.type", kind);
            kind.to_owned()
        }
    };
    crate::telemetry::metrics::altinn_request(endpoint.label, status, started.elapsed());
    answer.map_err(Error::transport)
}
