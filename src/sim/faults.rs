//! The faults a test can inject and what the journal keeps of each request; the middleware that
//! acts on them is in `middleware.rs`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// What `PUT /_sim/faults` sets. Shares are probabilities per request, 0.0 to 1.0.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Faults {
    /// Share of requests answered 503.
    pub server_error_share: f64,
    /// Share of requests answered 429 with `Retry-After: retryAfterSecs`.
    pub too_many_requests_share: f64,
    pub retry_after_secs: u64,
    /// Added to every request (but not to one the rate limit turns away); also set by
    /// `PUT /_sim/capacity`.
    pub latency_ms: u64,
    /// Share of requests whose answer is held back `hangMs` (past a client's timeout): the
    /// request is carried out, as when Altinn is slow to answer, so a client that gave up and
    /// tries again finds it done.
    pub hang_share: f64,
    pub hang_ms: u64,
    /// Share of requests whose connection is closed without an answer.
    pub drop_share: f64,
    /// Lists come in pages of this many entries, each linking the next in `links.next` (Altinn
    /// sends one page today, but its wrapper has the link). 0: one page.
    pub page_size: usize,
    /// Altinn acts as if the Maskinporten client had not been granted this scope: every
    /// endpoint that needs it answers 403, for every firm (a setup error, not one firm's).
    pub missing_scope: Option<String>,
}

/// Put into each request by [`super::serve`] so a fault can close the connection.
#[derive(Clone)]
pub struct DropConnection(pub Arc<Notify>);

/// One request to the Altinn and Maskinporten routes, for conformance and fault tests. Requests
/// an injected fault answered instead of the routes are journaled too, marked with `fault`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalEntry {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    /// 0 when the connection was closed without an answer.
    pub status: u16,
    pub request_body: Option<serde_json::Value>,
    pub response_body: Option<serde_json::Value>,
    /// When the request arrived, before any injected delay.
    pub received_at: chrono::DateTime<chrono::Utc>,
    /// When the answer was ready; an injected hang holds it back for `hangMs` after this.
    pub at: chrono::DateTime<chrono::Utc>,
    /// The injected fault: `"503"`, `"429"`, `"drop"`, or `"hang"` (carried out, answered late);
    /// or `"rate-limit"` for a 429 from the rate limit of `PUT /_sim/capacity`.
    pub fault: Option<String>,
    /// The W3C `traceparent` header the request came with, for the tracing tests.
    #[serde(default)]
    pub traceparent: Option<String>,
}
