//! Connecting, creating the database when it is missing, and migrating.

use std::time::Duration;

use sqlx::migrate::MigrateDatabase;
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use super::Result;

/// Where `run` keeps its state unless told otherwise.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/altinn_sync";

/// Connection settings; every flag is also an environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct DbSettings {
    /// PostgreSQL URL. The database is created if it does not exist.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = DEFAULT_DATABASE_URL,
        hide_env_values = true
    )]
    pub database_url: String,
    /// Most connections the worker opens.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 8)]
    pub database_max_connections: u32,
}

/// Opens a pool, creating the database first if needed.
pub async fn connect(settings: &DbSettings) -> Result<PgPool> {
    let url = &settings.database_url;
    if !Postgres::database_exists(url).await? {
        tracing::info!("creating the database, which did not exist");
        if let Err(e) = Postgres::create_database(url).await {
            // Another replica may have created it in the meantime.
            if !Postgres::database_exists(url).await? {
                return Err(e.into());
            }
        }
    }
    let options = PgConnectOptions::from_str(url)?;
    let pool = PgPoolOptions::new()
        .max_connections(settings.database_max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await?;
    Ok(pool)
}

pub async fn migrate(pool: &PgPool) -> Result<()> {
    sqlx::migrate!("./schemas/migrations").run(pool).await?;
    Ok(())
}
