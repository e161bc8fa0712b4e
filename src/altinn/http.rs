//! The one way every call to Altinn and Maskinporten goes out: an HTTP client span, the W3C
//! `traceparent` of that span sent along, and the request metrics.
//!
//! Metrics (`endpoint` is a route template from [`ENDPOINTS`], never an id):
//! - `altinn_sync_altinn_requests_total{endpoint, status}`: `status` is the HTTP status, or
//!   `timeout`, or `error` when the connection failed otherwise.
//! - `altinn_sync_altinn_request_duration_seconds{endpoint}`, to the end of the answer's body.

use std::time::Instant;

use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, StatusCode};
use tracing::Instrument;
use tracing::field::Empty;

use super::client::{AGENT_PACKAGES_PATH, AGENTS_PATH, AUTHORIZED_PARTIES_PATH, CLIENTS_PATH};
use super::error::{Error, Result};
use super::maskinporten::EXCHANGE_PATH;
use crate::telemetry;

/// One route, as spans and metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// The `endpoint` label.
    pub label: &'static str,
    pub method: &'static str,
    /// The path template (`url.template`): query parameters carry the ids.
    pub route: &'static str,
}

impl Endpoint {
    pub fn http_method(&self) -> reqwest::Method {
        match self.method {
            "POST" => reqwest::Method::POST,
            "DELETE" => reqwest::Method::DELETE,
            _ => reqwest::Method::GET,
        }
    }
}

/// `POST {MASKINPORTEN_URL}token`.
pub const MASKINPORTEN_TOKEN: Endpoint = Endpoint {
    label: "maskinporten_token",
    method: "POST",
    route: "/token",
};
pub const TOKEN_EXCHANGE: Endpoint = Endpoint {
    label: "token_exchange",
    method: "GET",
    route: EXCHANGE_PATH,
};
pub const AUTHORIZED_PARTIES: Endpoint = Endpoint {
    label: "authorizedparties",
    method: "GET",
    route: AUTHORIZED_PARTIES_PATH,
};
pub const CLIENTS: Endpoint = Endpoint {
    label: "clients",
    method: "GET",
    route: CLIENTS_PATH,
};
pub const AGENTS: Endpoint = Endpoint {
    label: "agents",
    method: "GET",
    route: AGENTS_PATH,
};
pub const AGENTS_POST: Endpoint = Endpoint {
    label: "agents_post",
    method: "POST",
    route: AGENTS_PATH,
};
pub const AGENTS_DELETE: Endpoint = Endpoint {
    label: "agents_delete",
    method: "DELETE",
    route: AGENTS_PATH,
};
pub const DELEGATIONS: Endpoint = Endpoint {
    label: "delegations",
    method: "GET",
    route: AGENT_PACKAGES_PATH,
};
pub const DELEGATIONS_POST: Endpoint = Endpoint {
    label: "delegations_post",
    method: "POST",
    route: AGENT_PACKAGES_PATH,
};
pub const DELEGATIONS_DELETE: Endpoint = Endpoint {
    label: "delegations_delete",
    method: "DELETE",
    route: AGENT_PACKAGES_PATH,
};

/// Every value of the `endpoint` label, so the metrics can be exported at 0 from the start.
pub const ENDPOINTS: &[&str] = &[
    MASKINPORTEN_TOKEN.label,
    TOKEN_EXCHANGE.label,
    AUTHORIZED_PARTIES.label,
    CLIENTS.label,
    AGENTS.label,
    AGENTS_POST.label,
    AGENTS_DELETE.label,
    DELEGATIONS.label,
    DELEGATIONS_POST.label,
    DELEGATIONS_DELETE.label,
];

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

#[cfg(test)]
mod tests {
    use super::ENDPOINTS;

    #[test]
    fn endpoint_labels_are_distinct_route_names() {
        let mut labels = ENDPOINTS.to_vec();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), ENDPOINTS.len());
        assert!(
            ENDPOINTS
                .iter()
                .all(|l| l.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        );
    }
}
