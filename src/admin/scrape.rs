//! `/metrics`: renders what the pipeline recorded into [`crate::telemetry::metrics`].

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::Health;
use crate::telemetry::metrics;

pub fn routes(health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(health)
}

async fn render(State(health): State<Arc<Health>>) -> impl IntoResponse {
    // `altinn_sync_ready` as `/readyz` would answer now: one `SELECT 1` per scrape.
    health.readiness().await;
    let handle = metrics::install();
    handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
}
