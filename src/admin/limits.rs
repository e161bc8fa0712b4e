//! The /v1 API's own limits: its database connections, how long a query may run, and how
//! many calls one token may have in progress.

/// The /v1 API's own limits, apart from the listener's.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiSettings {
    /// PostgreSQL connections the /v1 API may hold, apart from the worker's own
    /// (`DATABASE_MAX_CONNECTIONS`), so API calls cannot take those of ingest and the flush.
    #[arg(long, env = "ADMIN_DATABASE_MAX_CONNECTIONS", default_value_t = DEFAULT_API_CONNECTIONS,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub admin_database_max_connections: u32,
    /// Milliseconds one /v1 API query may run (`statement_timeout`) before PostgreSQL cuts it
    /// off and the API answers 503; a lock is waited for at most a fifth of it.
    #[arg(long, env = "ADMIN_STATEMENT_TIMEOUT_MS", default_value_t = DEFAULT_STATEMENT_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub admin_statement_timeout_ms: u64,
    /// Calls one token may have in progress at once; more wait their turn, up to 5 s, then
    /// get 429. Keeps one token's flood from taking every connection of the API.
    #[arg(long, env = "ADMIN_CALLS_PER_TOKEN", default_value_t = DEFAULT_CALLS_PER_TOKEN,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub admin_calls_per_token: u32,
    /// Syncs one token may request a minute (`POST …/sync`), in a burst or spread out; more
    /// are answered 429 with `Retry-After`.
    #[arg(long, env = "ADMIN_SYNCS_PER_MINUTE", default_value_t = DEFAULT_SYNCS_PER_MINUTE,
          value_parser = clap::value_parser!(u32).range(1..=6000))]
    pub admin_syncs_per_minute: u32,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            admin_database_max_connections: DEFAULT_API_CONNECTIONS,
            admin_statement_timeout_ms: DEFAULT_STATEMENT_TIMEOUT_MS,
            admin_calls_per_token: DEFAULT_CALLS_PER_TOKEN,
            admin_syncs_per_minute: DEFAULT_SYNCS_PER_MINUTE,
        }
    }
}

pub const DEFAULT_API_CONNECTIONS: u32 = 4;
pub const DEFAULT_STATEMENT_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_CALLS_PER_TOKEN: u32 = 2;
pub const DEFAULT_SYNCS_PER_MINUTE: u32 = 6;
