//! The admin listener: the one HTTP server of the process. Health and metrics for the
//! orchestrator and Prometheus, without a token; the `/v1` API for AdminFlow's settings page
//! and support, with one.
//!
//! It binds before anything else starts, so a taken port stops the process at once, and it
//! answers `/healthz` while the worker waits out a database or broker outage.

pub mod api;
mod health;
pub(crate) mod limits;
mod listener;
mod pool;
mod problem;
mod scrape;
mod slots;
pub mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;

pub use health::{Half, Health};
pub use limits::{
    ApiSettings, DEFAULT_API_CONNECTIONS, DEFAULT_CALLS_PER_TOKEN, DEFAULT_STATEMENT_TIMEOUT_MS,
};
pub use listener::Server;
pub use pool::api_pool;
pub use slots::{OVERFLOW, OVERFLOW_HEADER_READ_TIMEOUT};
pub use tokens::Tokens;

#[derive(Debug, Clone, clap::Args)]
pub struct AdminSettings {
    /// Where the admin HTTP server listens: /healthz, /readyz, /metrics and the /v1 API.
    /// Port 0 picks a free port; the bound address is logged.
    #[arg(long, env = "ADMIN_LISTEN", default_value = "127.0.0.1:8080")]
    pub admin_listen: SocketAddr,
    /// The admin API's tokens, one per line: `NAME SHA256_HEX SCOPE` (see `admin-token`).
    /// Without it every /v1 route answers 401.
    /// Read at start only: after changing the file, restart the worker.
    #[arg(long, env = "ADMIN_TOKENS_FILE")]
    pub admin_tokens_file: Option<PathBuf>,
    /// Seconds a client has to send a request's headers, and that a kept-alive connection may
    /// sit idle between requests, before the admin listener closes it.
    #[arg(long, env = "ADMIN_HEADER_READ_TIMEOUT_SECS", default_value_t = DEFAULT_HEADER_READ_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub admin_header_read_timeout_secs: u64,
    /// Open connections the admin listener serves with keep-alive. Beyond it 16 more are
    /// served one request each, a newcomer pushing out the oldest that has sent nothing, so
    /// the probes still answer.
    #[arg(long, env = "ADMIN_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub admin_max_connections: u32,
    #[command(flatten)]
    pub api: ApiSettings,
}

pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 10;
pub const DEFAULT_MAX_CONNECTIONS: u32 = 512;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot listen on {addr} for the admin API, health and metrics (is the port taken? set ADMIN_LISTEN)"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the admin server failed")]
    Serve(#[source] std::io::Error),
    #[error(transparent)]
    Tokens(#[from] tokens::Error),
}

/// `altinn-sync healthcheck`: asks a running worker's `/healthz`; an error unless it is 200.
pub async fn healthcheck(listen: SocketAddr) -> anyhow::Result<()> {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()?;
    let answer = client.get(format!("http://{addr}/healthz")).send().await?;
    let status = answer.status();
    let body = answer.text().await.unwrap_or_default();
    anyhow::ensure!(status.is_success(), "unhealthy: {status} {body}");
    println!("healthy: {body}");
    Ok(())
}

/// Health, metrics and the API on one router.
pub fn router(health: Arc<Health>, api: Option<api::Api>) -> Router {
    let app = health::routes(health.clone()).merge(scrape::routes(health));
    match api {
        Some(api) => app.merge(api::routes(api)),
        None => app,
    }
}
