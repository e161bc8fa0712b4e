//! From RabbitMQ to PostgreSQL: topology, the consumer loops and their reconnect loop.

mod batch;
mod consumer;
mod dead_letter;
mod topology;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use batch::Stream;
pub use topology::Topology;

use crate::contract::Rules;
use crate::retry::{RetryPolicy, Waits};
use consumer::QueueWorker;
use dead_letter::DeadLetterPublisher;

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

    fn batch_linger(&self) -> Duration {
        Duration::from_millis(self.batch_linger_ms)
    }

    fn db_outage_hold(&self) -> Duration {
        Duration::from_secs(self.db_outage_hold_secs)
    }

    /// For reconnects and database outages.
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max: Duration::from_secs(self.retry_max_interval_secs),
            ..RetryPolicy::DEFAULT
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The broker connection or channel failed: reconnect.
    #[error("RabbitMQ failed")]
    Broker(#[from] lapin::Error),
    #[error("the consumer was cancelled by the broker")]
    ConsumerEnded,
    #[error(
        "the dead-letter exchange has no queue bound; the dead-lettered message was not stored"
    )]
    DeadLetterUnroutable,
    #[error("the broker did not confirm a dead-lettered message")]
    DeadLetterNotConfirmed,
    /// The broker has a queue or exchange of ours with other properties: fix the topology.
    #[error(
        "the RabbitMQ topology does not match; delete or fix the queue or exchange the broker names"
    )]
    TopologyMismatch(#[source] lapin::Error),
    /// A database error that retrying will not fix.
    #[error("database failure")]
    Database(#[source] crate::state::Error),
}

impl Error {
    fn is_retryable(&self) -> bool {
        !matches!(self, Self::TopologyMismatch(_) | Self::Database(_))
    }
}

/// The worker's own counters, per stream; logged as progress and at shutdown.
#[derive(Debug, Default)]
pub struct Metrics {
    pub events: Counters,
    pub commands: Counters,
    /// Both consumers are attached to a live connection (readiness).
    pub consumers_attached: AtomicBool,
}

#[derive(Debug, Default)]
pub struct Counters {
    pub acked: AtomicU64,
    pub applied: AtomicU64,
    pub duplicates: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub batches: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self) -> [u64; 5] {
        [
            self.acked.load(Ordering::Relaxed),
            self.applied.load(Ordering::Relaxed),
            self.duplicates.load(Ordering::Relaxed),
            self.dead_lettered.load(Ordering::Relaxed),
            self.batches.load(Ordering::Relaxed),
        ]
    }
}

/// Consumes both queues until `shutdown`, reconnecting with backoff whenever RabbitMQ fails.
///
/// # Errors
/// Only what reconnecting cannot fix: a topology that conflicts with the broker's, or a fatal
/// database error.
pub async fn run(
    amqp_url: &str,
    settings: &IngestSettings,
    pool: PgPool,
    metrics: &Metrics,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let topology = settings.topology();
    let mut waits = settings.retry_policy().waits();
    'reconnect: loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let result = connect_and_consume(
            amqp_url, settings, &topology, &pool, metrics, &shutdown, &mut waits,
        )
        .await;
        match result {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() => {
                let wait = waits.next_wait();
                tracing::warn!(
                    error = %e, cause = ?std::error::Error::source(&e).map(ToString::to_string),
                    retry_in = ?wait, "RabbitMQ connection lost; reconnecting"
                );
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(wait) => continue 'reconnect,
                }
            }
            Err(e) => return Err(e),
        }
    }
}

async fn connect_and_consume(
    amqp_url: &str,
    settings: &IngestSettings,
    topology: &Topology,
    pool: &PgPool,
    metrics: &Metrics,
    shutdown: &CancellationToken,
    waits: &mut Waits,
) -> Result<(), Error> {
    // Connecting can hang on a half-open socket, so shutdown may interrupt it. Once consuming,
    // the queue loops watch the token themselves and finish the batch in hand.
    let conn = tokio::select! {
        conn = connect(amqp_url) => conn?,
        () = shutdown.cancelled() => return Ok(()),
    };
    let declare = conn.create_channel().await?;
    topology
        .declare(&declare)
        .await
        .map_err(|e| match e.kind() {
            lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 406 => {
                Error::TopologyMismatch(e)
            }
            _ => Error::Broker(e),
        })?;
    let _ = declare.close(200, "declared".into()).await;
    tracing::info!(
        events_queue = %topology.events_queue, commands_queue = %topology.commands_queue,
        "connected to RabbitMQ; topology declared"
    );
    waits.reset();

    let conn_ref = &conn;
    let worker = |stream, queue: String| async move {
        Ok::<_, Error>(QueueWorker {
            stream,
            channel: conn_ref.create_channel().await?,
            dead_letters: DeadLetterPublisher::open(
                conn_ref,
                &topology.dead_letter_exchange,
                &queue,
            )
            .await?,
            queue,
            pool: pool.clone(),
            settings,
            metrics,
        })
    };
    let events = worker(Stream::Events, topology.events_queue.clone()).await?;
    let commands = worker(Stream::Commands, topology.commands_queue.clone()).await?;
    // If one loop fails, the other is dropped; closing the connection then requeues whatever
    // either had in hand. Transactions in flight roll back when dropped.
    metrics.consumers_attached.store(true, Ordering::SeqCst);
    let result = tokio::try_join!(events.run(shutdown.clone()), commands.run(shutdown.clone()));
    metrics.consumers_attached.store(false, Ordering::SeqCst);
    let _ = conn.close(200, "worker stopping".into()).await;
    result.map(|_| ())
}

/// Opens a connection on lapin's default runtime, tokio.
///
/// lapin 4 can recover connections and channels itself; that stays off and the loop in [`run`]
/// reconnects instead. A delivery tag is only valid on the channel that delivered it: after a
/// recovery the batch in hand would ack (`multiple`) tags of the new channel, acknowledging
/// messages whose effect was never committed. Starting over on a fresh connection, with the
/// broker requeuing everything unacked, cannot do that.
pub async fn connect(amqp_url: &str) -> Result<Connection, lapin::Error> {
    let props = ConnectionProperties::default().with_connection_name("altinn-sync".into());
    Connection::connect(amqp_url, props).await
}
