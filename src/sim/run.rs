//! `altinn-sync altinn-sim --listen ADDR`: the simulator as its own process.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use super::Error;
use super::capacity::Capacity;
use super::faults::Faults;
use super::server::serve;
use super::simulator::Simulator;
use super::world::World;

#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Address to listen on; Maskinporten is at http://ADDR/ and Altinn at http://ADDR.
    #[arg(long, env = "ALTINN_SIM_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// A world to load at start (the body of `PUT /_sim/world`).
    #[arg(long, env = "ALTINN_SIM_WORLD")]
    pub world: Option<PathBuf>,
    /// Share of requests answered 503 (0.0 to 1.0).
    #[arg(long, env = "ALTINN_SIM_SERVER_ERROR_SHARE", default_value_t = 0.0)]
    pub server_error_share: f64,
    /// Share of requests answered 429 with Retry-After.
    #[arg(
        long,
        env = "ALTINN_SIM_TOO_MANY_REQUESTS_SHARE",
        default_value_t = 0.0
    )]
    pub too_many_requests_share: f64,
    /// The Retry-After of those 429 answers, in seconds.
    #[arg(long, env = "ALTINN_SIM_RETRY_AFTER_SECS", default_value_t = 1)]
    pub retry_after_secs: u64,
    /// Latency added to every request (not to one the rate limit turns away).
    #[arg(long, env = "ALTINN_SIM_LATENCY_MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Requests per second across the access-management endpoints; beyond it, 429 with
    /// Retry-After. 0: unlimited. Maskinporten, the token exchange and /_sim are not limited.
    #[arg(long, env = "ALTINN_SIM_RATE_LIMIT", default_value_t = 0)]
    pub rate_limit: u32,
    /// Share of requests that hang for --hang-ms before being answered.
    #[arg(long, env = "ALTINN_SIM_HANG_SHARE", default_value_t = 0.0)]
    pub hang_share: f64,
    #[arg(long, env = "ALTINN_SIM_HANG_MS", default_value_t = 30_000)]
    pub hang_ms: u64,
    /// Share of requests whose connection is closed without an answer.
    #[arg(long, env = "ALTINN_SIM_DROP_SHARE", default_value_t = 0.0)]
    pub drop_share: f64,
    /// Serve lists in pages of this many entries, linked by `links.next` (0: one page).
    #[arg(long, env = "ALTINN_SIM_PAGE_SIZE", default_value_t = 0)]
    pub page_size: usize,
    /// Answer 403 on every endpoint that needs this scope, for every firm, as Altinn does when
    /// the Maskinporten client was not granted it.
    #[arg(long, env = "ALTINN_SIM_MISSING_SCOPE")]
    pub missing_scope: Option<String>,
}

impl SimArgs {
    pub fn faults(&self) -> Faults {
        Faults {
            server_error_share: self.server_error_share,
            too_many_requests_share: self.too_many_requests_share,
            retry_after_secs: self.retry_after_secs,
            latency_ms: self.latency_ms,
            hang_share: self.hang_share,
            hang_ms: self.hang_ms,
            drop_share: self.drop_share,
            page_size: self.page_size,
            missing_scope: self.missing_scope.clone(),
        }
    }

    pub fn capacity(&self) -> Capacity {
        Capacity {
            rate_limit_per_s: self.rate_limit,
            latency_ms: self.latency_ms,
        }
    }
}

/// Loads the world file if given, then serves until `shutdown`.
pub async fn run(args: &SimArgs, shutdown: CancellationToken) -> Result<(), Error> {
    let sim = Simulator::new();
    if let Some(path) = &args.world {
        let text = std::fs::read(path).map_err(|source| Error::ReadWorld {
            path: path.clone(),
            source,
        })?;
        let world: World = serde_json::from_slice(&text).map_err(|source| Error::ParseWorld {
            path: path.clone(),
            source,
        })?;
        sim.load(world).await;
    }
    sim.set_faults(args.faults()).await;
    sim.set_capacity(args.capacity()).await;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: args.listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(args.listen);
    tracing::info!(%addr, "Altinn simulator listening");
    serve(listener, sim, shutdown).await;
    Ok(())
}
