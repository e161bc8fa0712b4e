//! `altinn-sync run`: migrate, align the role mapping, then ingest until shutdown, with
//! housekeeping and progress reports alongside.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::time::{MissedTickBehavior, interval};
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminSettings, Health};
use crate::altinn::{self, AltinnClient, AltinnSettings};
use crate::ingest::{self, BrokerSettings, IngestSettings, Metrics};
use crate::ops;
use crate::policy::{DEFAULT_ROLE_MAPPING, RoleMapping};
use crate::retry::{RetryPolicy, Retryable};
use crate::state::{self, DbSettings};
use crate::sync::{self, Dispatcher, FlushSettings};
use crate::telemetry::ErrorChain;
use crate::telemetry::metrics;

#[derive(Debug, Clone, clap::Args)]
pub struct WorkerSettings {
    #[command(flatten)]
    pub db: DbSettings,
    #[command(flatten)]
    pub broker: BrokerSettings,
    #[command(flatten)]
    pub ingest: IngestSettings,
    #[command(flatten)]
    pub housekeeping: Housekeeping,
    #[command(flatten)]
    pub altinn: AltinnSettings,
    #[command(flatten)]
    pub flush: FlushSettings,
    #[command(flatten)]
    pub admin: AdminSettings,
}

impl WorkerSettings {
    /// What a worker with these settings does, as `explain` and `status` report it.
    pub fn mode(&self) -> ops::Mode {
        ops::Mode {
            flush_on: self.altinn.is_configured(),
            flush: self.flush.clone(),
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct Housekeeping {
    /// AdminFlow role → Altinn access package, as `Role=package,...`. A change rebuilds the
    /// desired grants at start-up.
    #[arg(long, env = "ROLE_MAPPING", default_value = DEFAULT_ROLE_MAPPING)]
    pub role_mapping: RoleMapping,
    /// Days to keep processed event ids, removal tombstones, delivered and superseded outbox
    /// rows, handled commands, dead letters and sequence regressions.
    #[arg(long, env = "RETENTION_DAYS", default_value_t = 30)]
    pub retention_days: u64,
    /// Days to keep the audit, the record of who got access when.
    #[arg(long, env = "AUDIT_RETENTION_DAYS", default_value_t = 400)]
    pub audit_retention_days: u64,
    /// Seconds between progress reports in the log.
    #[arg(long, env = "PROGRESS_INTERVAL_SECS", default_value_t = 10)]
    pub progress_interval_secs: u64,
    /// Seconds the worker may take to stop after SIGTERM: the batch and the deliveries in hand
    /// are finished within it, or abandoned (and their leases released). Below Kubernetes'
    /// default grace period of 30 s.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 25)]
    pub shutdown_grace_secs: u64,
}

impl Housekeeping {
    pub fn retention(&self) -> state::Retention {
        state::Retention {
            days: Duration::from_secs(self.retention_days.saturating_mul(24 * 3600)),
            audit: Duration::from_secs(self.audit_retention_days.saturating_mul(24 * 3600)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database failure at start-up")]
    Database(#[from] state::Error),
    #[error("ingest stopped")]
    Ingest(#[from] ingest::Error),
    #[error("the flush to Altinn stopped")]
    Flush(#[source] sync::Error),
    #[error("the Altinn settings are unusable")]
    Altinn(#[from] altinn::Error),
    #[error(transparent)]
    Admin(#[from] admin::Error),
}

/// Runs the worker until `shutdown` is cancelled, with the admin listener on `ADMIN_LISTEN`.
pub async fn run(settings: &WorkerSettings, shutdown: CancellationToken) -> Result<(), Error> {
    let server = admin::Server::bind_with(&settings.admin).await?;
    run_bound(settings, server, shutdown).await
}

/// [`run`] on an admin listener bound by the caller (tests bind port 0 and read the address).
pub async fn run_bound(
    settings: &WorkerSettings,
    server: admin::Server,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    // Read before anything starts: a malformed token file stops the start, naming the line.
    let tokens = admin::Tokens::load(settings.admin.admin_tokens_file.as_deref())
        .map_err(admin::Error::from)?;
    metrics::install();
    metrics::register_endpoints(crate::altinn::ENDPOINTS);
    // What this worker does, for the API and for the CLI run elsewhere without its settings.
    let mode = settings.mode();
    let health = Arc::new(Health::default());
    let api = admin::api::Api::new(
        health.clone(),
        tokens,
        mode.clone(),
        &settings.broker,
        &settings.ingest,
        &settings.admin.api,
    );
    let app = admin::router(health.clone(), Some(api));
    // Serves until the worker has stopped, so /healthz can say that it did. A server that
    // fails stops the worker: an orchestrator could no longer see it.
    let stop_serving = CancellationToken::new();
    let serving = tokio::spawn({
        let (stop, shutdown) = (stop_serving.clone(), shutdown.clone());
        async move {
            let served = server.serve(app, stop).await;
            if let Err(e) = &served {
                tracing::error!(error = %ErrorChain(&e), "the admin server failed; stopping the worker");
                shutdown.cancel();
            }
            served
        }
    });
    let worker = format!(
        "pid-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    );
    let gauges = tokio::spawn({
        let (health, stop) = (health.clone(), stop_serving.clone());
        let (mode, worker) = (mode.clone(), worker.clone());
        async move { refresh_gauges(&health, &mode, &worker, &stop).await }
    });
    let result = work(settings, health, (&mode, &worker), shutdown).await;
    stop_serving.cancel();
    let _ = gauges.await;
    let served = match serving.await {
        Ok(served) => served,
        Err(e) => Err(admin::Error::Serve(std::io::Error::other(e))),
    };
    result.and(served.map_err(Error::Admin))
}

async fn work(
    settings: &WorkerSettings,
    health: Arc<Health>,
    (mode, worker): (&ops::Mode, &str),
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let Some(pool) = connect_with_retry(&settings.db, &shutdown).await? else {
        return Ok(());
    };
    health.set_pool(pool.clone());
    prepare_database(&pool, settings, mode, worker).await?;
    // Only once migrated, so the API never reads a schema older than its queries.
    health.set_api_pool(
        admin::api_pool(&settings.db.database_url, &settings.admin.api)
            .map_err(state::Error::from)?,
    );
    // Checked before consuming anything, so half-set or unreadable settings stop the start.
    let dispatcher = dispatcher(settings, &pool)?;
    tracing::info!(role_mapping = %settings.housekeeping.role_mapping, "worker starting");
    let result = ingest_and_flush(settings, &health, &pool, dispatcher.as_ref(), &shutdown).await;
    if let Some(dispatcher) = &dispatcher {
        release_leases(dispatcher).await;
    }
    report(&health.ingest, "worker stopped");
    let _ = ops::Mode::forget(&pool, worker).await;
    if let Some(api_pool) = health.api_pool() {
        api_pool.close().await;
    }
    pool.close().await;
    result
}

/// Migrates, records the worker's mode for the CLI and rebuilds the desired grants if the
/// role mapping changed.
async fn prepare_database(
    pool: &PgPool,
    settings: &WorkerSettings,
    mode: &ops::Mode,
    worker: &str,
) -> Result<(), Error> {
    state::migrate(pool).await?;
    if let Err(e) = mode.record(pool, worker).await {
        tracing::warn!(error = %ErrorChain(&e), "could not record the worker's mode for the CLI");
    }
    state::align_role_mapping(
        pool,
        &settings.housekeeping.role_mapping,
        state::Rebuild::IfMappingChanged,
    )
    .await?;
    Ok(())
}

/// The flush's dispatcher when the Altinn settings are configured; none when they are not.
fn dispatcher(settings: &WorkerSettings, pool: &PgPool) -> Result<Option<Dispatcher>, Error> {
    let Some(config) = settings.altinn.validate()? else {
        tracing::info!(
            "Altinn settings are not configured: ingesting events into the desired state \
             only; nothing is sent to Altinn"
        );
        return Ok(None);
    };
    tracing::info!(altinn = %config.altinn_base_url, "flushing to Altinn on SyncNow");
    Ok(Some(Dispatcher::new(
        pool.clone(),
        AltinnClient::new(config)?,
        settings.flush.clone(),
    )))
}

/// Ingests and flushes, with housekeeping alongside, until both halves stop or the shutdown
/// grace runs out.
async fn ingest_and_flush(
    settings: &WorkerSettings,
    health: &Health,
    pool: &PgPool,
    dispatcher: Option<&Dispatcher>,
    shutdown: &CancellationToken,
) -> Result<(), Error> {
    let metrics = &health.ingest;
    // Either half failing stops the other, and the process with an error: a worker that only
    // ingests, or only flushes, would look alive while doing half its job.
    let ingest = async {
        let result = ingest::run(
            &settings.broker.amqp_url,
            &settings.ingest,
            pool.clone(),
            metrics,
            shutdown.clone(),
        )
        .await
        .map_err(Error::Ingest);
        health.stopped(admin::Half::Ingest);
        stop_on_error(&result, "ingest", shutdown);
        result
    };
    let flush = async {
        let Some(dispatcher) = dispatcher else {
            return Ok(());
        };
        let result = sync::run(pool.clone(), dispatcher, shutdown.clone())
            .await
            .map_err(Error::Flush);
        health.stopped(admin::Half::Flush);
        stop_on_error(&result, "the flush to Altinn", shutdown);
        result
    };
    let grace = Duration::from_secs(settings.housekeeping.shutdown_grace_secs);
    tokio::select! {
        (ingested, flushed) = async { tokio::join!(ingest, flush) } => ingested.and(flushed),
        () = grace_runs_out(shutdown, grace) => {
            tracing::error!(grace_secs = grace.as_secs(),
                "still busy when the shutdown grace period ran out; abandoning the work in \
                 hand: unacked messages are redelivered, unfinished deliveries retried");
            Ok(())
        }
        () = housekeeping(pool, &settings.housekeeping, metrics) => unreachable!("housekeeping never returns"),
    }
}

/// The next holder need not wait for the leases to run out.
async fn release_leases(dispatcher: &Dispatcher) {
    match dispatcher.release_leases().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(rows = n, "released the leases of unfinished deliveries"),
        Err(e) => {
            tracing::warn!(error = %ErrorChain(&e), "could not release leases; they run out by themselves")
        }
    }
}

fn stop_on_error<T>(result: &Result<T, Error>, half: &str, shutdown: &CancellationToken) {
    if let Err(e) = result {
        tracing::error!(error = %ErrorChain(&e),
            "{half} failed; stopping the worker");
        shutdown.cancel();
    }
}

/// Returns `grace` after `shutdown` is cancelled.
async fn grace_runs_out(shutdown: &CancellationToken, grace: Duration) {
    shutdown.cancelled().await;
    tokio::time::sleep(grace).await;
}

/// Waits for PostgreSQL at start-up, so the worker can start before its database.
async fn connect_with_retry(
    db: &DbSettings,
    shutdown: &CancellationToken,
) -> Result<Option<PgPool>, state::Error> {
    let mut waits = RetryPolicy::DEFAULT.waits();
    loop {
        let wait = waits.next_wait();
        match state::connect(db).await {
            Ok(pool) => return Ok(Some(pool)),
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %ErrorChain(&e),
                    retry_in = ?wait, "waiting for PostgreSQL");
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Progress reports and pruning. Never returns; it is dropped once ingest and the flush have
/// both stopped, or when the shutdown grace runs out.
async fn housekeeping(pool: &PgPool, settings: &Housekeeping, metrics: &Metrics) {
    let mut progress = interval(Duration::from_secs(settings.progress_interval_secs.max(1)));
    progress.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut prune = interval(Duration::from_secs(3600));
    prune.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last = ([0u64; 5], [0u64; 5]);
    loop {
        tokio::select! {
            _ = progress.tick() => {
                // Only when something moved, so an idle worker does not fill the log.
                let now = (metrics.events.snapshot(), metrics.commands.snapshot());
                if now != last {
                    report(metrics, "ingest progress");
                    last = now;
                }
            }
            _ = prune.tick() => match state::prune(pool, &settings.retention()).await {
                Ok(o) => tracing::info!(processed_events = o.processed_events, tombstones = o.tombstones,
                    outbox_rows = o.outbox_rows, commands = o.commands, dead_letters = o.dead_letters,
                    sequence_regressions = o.sequence_regressions, audit_rows = o.audit_rows, "pruned"),
                Err(e) => tracing::warn!(error = %ErrorChain(&e), "pruning failed; will try again in an hour"),
            },
        }
    }
}

fn report(metrics: &Metrics, message: &str) {
    let [acked, applied, duplicates, dead_lettered, batches] = metrics.events.snapshot();
    let [c_acked, c_applied, c_duplicates, c_dead, _] = metrics.commands.snapshot();
    tracing::info!(
        events.acked = acked,
        events.applied = applied,
        events.duplicates = duplicates,
        events.dead_lettered = dead_lettered,
        events.batches = batches,
        commands.acked = c_acked,
        commands.recorded = c_applied,
        commands.duplicates = c_duplicates,
        commands.dead_lettered = c_dead,
        "{message}"
    );
}

/// Tests and embedders spawn the worker: its future must stay `Send`. Checked when this
/// compiles; never called.
#[allow(dead_code)]
fn the_worker_future_is_send(settings: &WorkerSettings, server: admin::Server) {
    fn assert_send<T: Send>(_: T) {}
    assert_send(run_bound(settings, server, CancellationToken::new()));
}

/// Refreshes the PostgreSQL gauges (and readiness) every [`metrics::REFRESH`] until `stop`,
/// and records the worker's mode for the CLI (see [`ops::Mode::record`]).
async fn refresh_gauges(health: &Health, mode: &ops::Mode, worker: &str, stop: &CancellationToken) {
    // Every second until the worker is first ready, so the gauges do not lag its start.
    let mut ready_once = false;
    let mut progress = ops::FlushProgress::default();
    loop {
        let wait = if ready_once {
            metrics::REFRESH
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
        ready_once |= health.readiness().await.ready;
        if let Some(pool) = health.pool() {
            match ops::refresh_gauges(pool, mode.flush.revokes_enabled).await {
                Ok(counts) => {
                    if let Err(e) = progress.observe(pool, &counts).await {
                        tracing::debug!(error = %ErrorChain(&e), "flush progress not read");
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %ErrorChain(&e), "metrics: PostgreSQL gauges not refreshed")
                }
            }
            if let Err(e) = mode.record(pool, worker).await {
                tracing::debug!(error = %ErrorChain(&e), "the worker's mode was not recorded");
            }
        }
        metrics::install().run_upkeep();
    }
}
