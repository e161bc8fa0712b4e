//! The admin listener: the one HTTP server of the process. Health and metrics for the
//! orchestrator and Prometheus, without a token; the `/v1` API for AdminFlow's settings page
//! and support, with one.
//!
//! It binds before anything else starts, so a taken port stops the process at once, and it
//! answers `/healthz` while the worker waits out a database or broker outage.

pub mod api;
mod health;
mod problem;
mod scrape;
pub mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use health::{Half, Health};
pub use tokens::Tokens;

#[derive(Debug, Clone, clap::Args)]
pub struct AdminSettings {
    /// Where the admin HTTP server listens: /healthz, /readyz, /metrics and the /v1 API.
    /// Port 0 picks a free port; the bound address is logged.
    #[arg(long, env = "ADMIN_LISTEN", default_value = "127.0.0.1:8080")]
    pub admin_listen: SocketAddr,
    /// The admin API's tokens, one per line: `NAME SHA256_HEX SCOPE` (see `admin-token`).
    /// Without it every /v1 route answers 401.
    #[arg(long, env = "ADMIN_TOKENS_FILE")]
    pub admin_tokens_file: Option<PathBuf>,
}

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

/// A bound admin listener, not yet serving.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Server {
    /// Binds `addr`; failing here ends the process with a non-zero status.
    pub async fn bind(addr: SocketAddr) -> Result<Self, Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;
        tracing::info!(admin_listen = %addr, "admin listener bound: /healthz /readyz /metrics /v1");
        Ok(Self { listener, addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `app` until `shutdown`.
    pub async fn serve(self, app: Router, shutdown: CancellationToken) -> Result<(), Error> {
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(Error::Serve)
    }
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
