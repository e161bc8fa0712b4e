//! Where the broker is, and how ingest reads from it.

use std::time::Duration;

use super::Topology;
use crate::contract::Rules;
use crate::retry::RetryPolicy;

/// `run`'s queue and exchange prefix unless told otherwise.
pub const DEFAULT_TOPOLOGY_PREFIX: &str = "altinn-sync";
/// AdminFlow's event exchange.
pub const DEFAULT_EVENTS_EXCHANGE: &str = "adminflow.events";

/// Where the broker is.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerSettings {
    /// RabbitMQ URL.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    pub amqp_url: String,
}

/// Ingest settings; every flag is also an environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestSettings {
    /// Prefix of every queue and exchange the worker owns.
    #[arg(long, env = "TOPOLOGY_PREFIX", default_value = DEFAULT_TOPOLOGY_PREFIX)]
    pub topology_prefix: String,
    /// AdminFlow's event exchange (topic, durable).
    #[arg(long, env = "EVENTS_EXCHANGE", default_value = DEFAULT_EVENTS_EXCHANGE)]
    pub events_exchange: String,
    /// Redeliveries after which the broker dead-letters a message.
    #[arg(long, env = "DELIVERY_LIMIT", default_value_t = 20)]
    pub delivery_limit: i64,
    /// Unacked deliveries the broker may send ahead of the worker (per queue).
    #[arg(long, env = "PREFETCH", default_value_t = 8000)]
    pub prefetch: u16,
    /// Most deliveries committed in one PostgreSQL transaction.
    #[arg(long, env = "BATCH_SIZE", default_value_t = 2000)]
    pub batch_size: usize,
    /// Concurrent PostgreSQL transactions per batch, each over its own share of the firms.
    /// About one per core PostgreSQL may use.
    #[arg(
        long = "ingest-parallelism",
        env = "INGEST_PARALLELISM",
        default_value_t = 2
    )]
    pub parallelism: usize,
    /// How long a batch waits for more deliveries once it has one, in milliseconds.
    #[arg(long, env = "BATCH_LINGER_MS", default_value_t = 20)]
    pub batch_linger_ms: u64,
    /// Accept synthetic test identity numbers (month + 80). Test environments only.
    #[arg(long, env = "ALLOW_SYNTHETIC_NIN", default_value_t = false)]
    pub allow_synthetic_nin: bool,
    /// An event this many sequence numbers below its firm's high-water mark is dead-lettered as
    /// a sequence regression (AdminFlow restored from backup?).
    #[arg(long, env = "SEQUENCE_REGRESSION_THRESHOLD", default_value_t = 10_000)]
    pub sequence_regression_threshold: i64,
    /// How long to hold a batch while PostgreSQL is down before requeuing it, in seconds.
    /// Keep it below the broker's consumer ack timeout (30 minutes by default).
    #[arg(long, env = "DB_OUTAGE_HOLD_SECS", default_value_t = 300)]
    pub db_outage_hold_secs: u64,
    /// Longest wait between reconnect or retry attempts, in seconds.
    #[arg(long, env = "RETRY_MAX_INTERVAL_SECS", default_value_t = 30)]
    pub retry_max_interval_secs: u64,
}

impl IngestSettings {
    pub fn topology(&self) -> Topology {
        Topology::new(
            &self.topology_prefix,
            &self.events_exchange,
            self.delivery_limit,
        )
    }

    pub fn rules(&self) -> Rules {
        Rules {
            allow_synthetic_nin: self.allow_synthetic_nin,
            ..Rules::default()
        }
    }

    pub(super) fn batch_linger(&self) -> Duration {
        Duration::from_millis(self.batch_linger_ms)
    }

    pub(super) fn db_outage_hold(&self) -> Duration {
        Duration::from_secs(self.db_outage_hold_secs)
    }

    /// For reconnects and database outages.
    pub(super) fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max: Duration::from_secs(self.retry_max_interval_secs),
            ..RetryPolicy::DEFAULT
        }
    }
}
