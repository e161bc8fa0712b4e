//! `/healthz` (is the process still doing its job?) and `/readyz` (can it do it right now?).
//!
//! Liveness stays 200 while the worker waits out a database or broker outage: restarting it
//! would not bring either back. It turns 503 only once ingest or the flush has stopped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use sqlx::PgPool;

use crate::ingest;

/// How long `/readyz` waits for PostgreSQL before calling it down; below a probe's timeout.
const DATABASE_PROBE: Duration = Duration::from_secs(2);
/// How long one answer of PostgreSQL to `/readyz` is reused, so a flood of probes costs the
/// database one query a second.
const DATABASE_PROBE_CACHE: Duration = Duration::from_secs(1);

/// What the probes read. The worker fills it in as it starts and stops.
#[derive(Debug, Default)]
pub struct Health {
    pool: OnceLock<PgPool>,
    /// The /v1 API's own pool (see `admin::api_pool`).
    api_pool: OnceLock<PgPool>,
    /// The last database probe: when, and whether it answered.
    probed: Mutex<Option<(Instant, bool)>>,
    /// Ingest's counters; `consumers_attached` says whether the broker is up for us.
    pub ingest: ingest::Metrics,
    ingest_stopped: AtomicBool,
    flush_stopped: AtomicBool,
}

/// A half of the worker, for [`Health::stopped`].
#[derive(Debug, Clone, Copy)]
pub enum Half {
    Ingest,
    Flush,
}

#[derive(Debug, Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// What is down: `postgres`, `broker`.
    pub down: Vec<&'static str>,
}

impl Health {
    /// The pool, once the worker has connected; the probes and the API use it.
    pub fn set_pool(&self, pool: PgPool) {
        let _ = self.pool.set(pool);
    }

    pub fn pool(&self) -> Option<&PgPool> {
        self.pool.get()
    }

    /// The API's pool, once the worker has connected; separate from the worker's.
    pub fn set_api_pool(&self, pool: PgPool) {
        let _ = self.api_pool.set(pool);
    }

    pub fn api_pool(&self) -> Option<&PgPool> {
        self.api_pool.get()
    }

    pub fn stopped(&self, half: Half) {
        match half {
            Half::Ingest => self.ingest_stopped.store(true, Ordering::SeqCst),
            Half::Flush => self.flush_stopped.store(true, Ordering::SeqCst),
        }
    }

    fn halves_stopped(&self) -> Vec<&'static str> {
        let mut stopped = Vec::new();
        if self.ingest_stopped.load(Ordering::SeqCst) {
            stopped.push("ingest");
        }
        if self.flush_stopped.load(Ordering::SeqCst) {
            stopped.push("flush");
        }
        stopped
    }

    /// Asks PostgreSQL and looks at the consumers; also sets `altinn_sync_ready`.
    pub async fn readiness(&self) -> Readiness {
        let mut down = Vec::new();
        if !self.database_answers().await {
            down.push("postgres");
        }
        if !self.ingest.consumers_attached.load(Ordering::SeqCst) {
            down.push("broker");
        }
        let ready = down.is_empty();
        crate::telemetry::metrics::set_ready(ready);
        Readiness { ready, down }
    }

    /// PostgreSQL's answer of the last second, or a new one.
    async fn database_answers(&self) -> bool {
        if self.pool().is_none() {
            return false;
        }
        let fresh = |probed: &Option<(Instant, bool)>| {
            probed.filter(|(at, _)| at.elapsed() < DATABASE_PROBE_CACHE)
        };
        if let Some((_, up)) = fresh(&self.probed.lock().unwrap_or_else(|p| p.into_inner())) {
            return up;
        }
        let up = self.probe_database().await;
        *self.probed.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), up));
        up
    }

    async fn probe_database(&self) -> bool {
        // An owned pool: a borrowed one makes callers' futures not provably `Send`.
        let Some(pool) = self.pool().cloned() else {
            return false;
        };
        let probe = async move {
            sqlx::query_scalar!(r#"SELECT 1 AS "one!""#)
                .fetch_one(&pool)
                .await
        };
        matches!(tokio::time::timeout(DATABASE_PROBE, probe).await, Ok(Ok(1)))
    }
}

pub fn routes(health: Arc<Health>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health)
}

#[derive(Debug, Serialize)]
struct Liveness {
    status: &'static str,
    stopped: Vec<&'static str>,
}

async fn healthz(State(health): State<Arc<Health>>) -> Response {
    let stopped = health.halves_stopped();
    let status = if stopped.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Liveness {
        status: if stopped.is_empty() { "ok" } else { "stopped" },
        stopped,
    };
    (status, Json(body)).into_response()
}

async fn readyz(State(health): State<Arc<Health>>) -> Response {
    let readiness = health.readiness().await;
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(readiness)).into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt as _;

    use super::{Half, Health, routes};

    async fn get(health: &Arc<Health>, path: &str) -> (StatusCode, serde_json::Value) {
        let answer = routes(health.clone())
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = answer.status();
        let body = axum::body::to_bytes(answer.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn liveness_turns_503_once_a_half_has_stopped() {
        let health = Arc::new(Health::default());
        // Not connected yet, as while waiting out an outage: alive, not ready.
        assert_eq!(get(&health, "/healthz").await.0, StatusCode::OK);
        let (status, ready) = get(&health, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ready["down"], serde_json::json!(["postgres", "broker"]));

        health.stopped(Half::Flush);
        let (status, live) = get(&health, "/healthz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(live["stopped"], serde_json::json!(["flush"]));
    }
}
