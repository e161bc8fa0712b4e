//! The middleware in front of the Altinn and Maskinporten routes: the rate limit, injected
//! faults and the request journal.

use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::capacity::retry_after_secs;
use super::faults::{DropConnection, JournalEntry};
use super::problem::rate_limited;
use super::simulator::Simulator;

/// The rate limit, in front of everything else: a request over it is answered 429 at once,
/// without the latency or any other fault, as a throttling gateway would.
pub async fn limit(State(sim): State<Simulator>, request: Request, next: Next) -> Response {
    let read = request.method() == axum::http::Method::GET;
    let Err(wait) = sim.inner.limiter.admit(read) else {
        return next.run(request).await;
    };
    let received_at = chrono::Utc::now();
    journal_fault(&sim, &request, received_at, 429, "rate-limit");
    let secs = retry_after_secs(wait);
    let mut response = rate_limited(sim.inner.limiter.rate(), secs).into_response();
    let value = HeaderValue::from(secs);
    response.headers_mut().insert(header::RETRY_AFTER, value);
    response
}

/// Put into each request by [`inject`] for [`record`].
#[derive(Clone, Copy)]
struct Arrival {
    at: chrono::DateTime<chrono::Utc>,
    hang: bool,
}

pub async fn inject(State(sim): State<Simulator>, mut request: Request, next: Next) -> Response {
    let received_at = chrono::Utc::now();
    let faults = sim.inner.state.lock().await.faults.clone();
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    if request.uri().path().ends_with("/agents/accesspackages")
        && request.method() != axum::http::Method::GET
    {
        wait_at_gate(&sim).await;
    }
    // One draw per fault, so shares are independent of each other.
    let hit = |share: f64| share > 0.0 && rand::random::<f64>() < share;
    let hang = hit(faults.hang_share);
    if hit(faults.drop_share)
        && let Some(DropConnection(notify)) = request.extensions().get::<DropConnection>()
    {
        journal_fault(&sim, &request, received_at, 0, "drop");
        notify.notify_one();
        // The connection task drops this future along with the socket.
        std::future::pending::<()>().await;
    }
    if hit(faults.server_error_share) {
        journal_fault(&sim, &request, received_at, 503, "503");
        return (StatusCode::SERVICE_UNAVAILABLE, "injected fault").into_response();
    }
    if hit(faults.too_many_requests_share) {
        journal_fault(&sim, &request, received_at, 429, "429");
        let mut response = (StatusCode::TOO_MANY_REQUESTS, "injected fault").into_response();
        let value = HeaderValue::from(faults.retry_after_secs);
        response.headers_mut().insert(header::RETRY_AFTER, value);
        return response;
    }
    request.extensions_mut().insert(Arrival {
        at: received_at,
        hang,
    });
    let response = next.run(request).await;
    if hang {
        tokio::time::sleep(Duration::from_millis(faults.hang_ms)).await;
    }
    response
}

/// Holds a delegation change while the test's gate is closed (see `Simulator::close_gate`).
async fn wait_at_gate(sim: &Simulator) {
    let mut closed = sim.inner.gate_closed.subscribe();
    if !*closed.borrow_and_update() {
        return;
    }
    sim.inner.held_at_gate.send_modify(|n| *n += 1);
    let _ = closed.wait_for(|closed| !*closed).await;
    sim.inner
        .held_at_gate
        .send_modify(|n| *n = n.saturating_sub(1));
}

fn traceparent(headers: &axum::http::HeaderMap) -> Option<String> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    Some(value.to_owned())
}

fn query_pairs(uri: &axum::http::Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Journals a request an injected fault answered (or dropped) instead of the routes.
fn journal_fault(
    sim: &Simulator,
    request: &Request,
    received_at: chrono::DateTime<chrono::Utc>,
    status: u16,
    fault: &str,
) {
    let Some(journal) = sim.inner.journal.as_ref() else {
        return;
    };
    let entry = JournalEntry {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
        query: query_pairs(request.uri()),
        status,
        request_body: None,
        response_body: None,
        received_at,
        at: chrono::Utc::now(),
        fault: Some(fault.to_owned()),
        traceparent: traceparent(request.headers()),
    };
    journal
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(entry);
}

/// Records request and answer bodies when the simulator was built with a journal.
pub async fn record(State(sim): State<Simulator>, request: Request, next: Next) -> Response {
    let Some(journal) = sim.inner.journal.as_ref() else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, usize::MAX).await.unwrap_or_default();
    let request_body = serde_json::from_slice(&bytes).ok();
    let query = query_pairs(&parts.uri);
    let arrival = parts.extensions.get::<Arrival>().copied();
    let (method, path) = (parts.method.to_string(), parts.uri.path().to_owned());
    let traceparent = traceparent(&parts.headers);
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, usize::MAX).await.unwrap_or_default();
    let entry = JournalEntry {
        method,
        path,
        query,
        status: parts.status.as_u16(),
        request_body,
        response_body: serde_json::from_slice(&bytes).ok(),
        received_at: arrival.map_or_else(chrono::Utc::now, |a| a.at),
        at: chrono::Utc::now(),
        fault: arrival.filter(|a| a.hang).map(|_| "hang".to_owned()),
        traceparent,
    };
    journal
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(entry);
    Response::from_parts(parts, Body::from(bytes))
}
