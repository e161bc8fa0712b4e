//! The /v1 API's own PostgreSQL pool: a few connections apart from the worker's, each with a
//! `statement_timeout` and a `lock_timeout`, so a flood of API calls queues here instead of
//! taking the connections ingest and the flush need, and a slow query is cut off.

use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::limits::ApiSettings;

/// How long an API call waits for one of the API's connections before it answers 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// A lazy pool on `database_url` (the worker has already connected, created and migrated it).
pub fn api_pool(database_url: &str, settings: &ApiSettings) -> Result<PgPool, sqlx::Error> {
    let statement_ms = settings.admin_statement_timeout_ms;
    let lock_ms = (statement_ms / 5).max(50);
    let options = PgConnectOptions::from_str(database_url)?
        .application_name("altinn-sync-admin-api")
        .options([
            ("statement_timeout", statement_ms.to_string()),
            ("lock_timeout", lock_ms.to_string()),
            // An API call never leaves a transaction open; if one did, it is cut off too.
            (
                "idle_in_transaction_session_timeout",
                statement_ms.to_string(),
            ),
        ]);
    Ok(PgPoolOptions::new()
        .max_connections(settings.admin_database_max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(options))
}
