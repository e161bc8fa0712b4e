//! The Prometheus series, through the `metrics` facade and its Prometheus exporter.
//!
//! Every series and label value is registered at 0 when the recorder is installed, so a rule
//! or panel sees it before the first event. Label values never carry a firm, an employee or
//! an identity number: the cardinality is the same at one firm or ten thousand.
//!
//! Gauges computed from PostgreSQL are refreshed every [`REFRESH`] by each replica, not on
//! every scrape; rules aggregate them with `max()`.

use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub const EVENTS: &str = "altinn_sync_events_total";
pub const COMMANDS: &str = "altinn_sync_commands_total";
pub const BATCH_DURATION: &str = "altinn_sync_batch_duration_seconds";
pub const OUTBOX_ROWS: &str = "altinn_sync_outbox_rows";
pub const OUTBOX_OLDEST_PENDING: &str = "altinn_sync_outbox_oldest_pending_seconds";
pub const ALTINN_REQUESTS: &str = "altinn_sync_altinn_requests_total";
pub const ALTINN_REQUEST_DURATION: &str = "altinn_sync_altinn_request_duration_seconds";
pub const DELIVERIES: &str = "altinn_sync_deliveries_total";
pub const FIRMS_PAUSED: &str = "altinn_sync_firms_paused";
pub const LAST_RECONCILE: &str = "altinn_sync_last_reconcile_timestamp_seconds";
pub const DRIFT: &str = "altinn_sync_drift_grants_total";
pub const READY: &str = "altinn_sync_ready";
pub const OLDEST_PAUSE: &str = "altinn_sync_oldest_pause_seconds";
pub const SETUP_ERROR: &str = "altinn_sync_setup_error";
pub const DEAD_LETTERS: &str = "altinn_sync_dead_letters";

/// How often the gauges computed from PostgreSQL are refreshed.
pub const REFRESH: Duration = Duration::from_secs(15);

/// Seconds, from a fast Altinn answer to a slow ingest batch or a timed-out call.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

const EVENT_OUTCOMES: [&str; 3] = ["applied", "duplicate", "dead_lettered"];
const COMMAND_TYPES: [&str; 2] = ["SyncNow", "NightlyReconcile"];
const COMMAND_OUTCOMES: [&str; 2] = ["handled", "failed"];
const OUTBOX_STATUSES: [&str; 5] = ["pending", "in_flight", "parked", "staged", "held"];
const ACTIONS: [&str; 2] = ["grant", "revoke"];
const DELIVERY_OUTCOMES: [&str; 3] = ["delivered", "retried", "parked"];
const DRIFT_KINDS: [&str; 2] = ["missing", "extra"];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and registers every series at 0. Later calls (a
/// second worker in one test process) return the same handle.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = [BATCH_DURATION, ALTINN_REQUEST_DURATION]
            .into_iter()
            .try_fold(PrometheusBuilder::new(), |b, name| {
                b.set_buckets_for_metric(Matcher::Full(name.to_owned()), BUCKETS)
            });
        let handle = match builder {
            Ok(builder) => {
                let recorder = builder.build_recorder();
                let handle = recorder.handle();
                if metrics::set_global_recorder(recorder).is_err() {
                    tracing::warn!("another metrics recorder is installed; /metrics stays empty");
                }
                handle
            }
            // The bucket list is a non-empty constant; this is unreachable in practice.
            Err(e) => {
                tracing::warn!(error = %e, "metrics buckets rejected; histograms become summaries");
                PrometheusBuilder::new().build_recorder().handle()
            }
        };
        register();
        handle
    })
}

fn register() {
    describe_counter!(EVENTS, "AdminFlow events by outcome");
    describe_counter!(COMMANDS, "SyncNow and NightlyReconcile commands by outcome");
    describe_histogram!(
        BATCH_DURATION,
        metrics::Unit::Seconds,
        "An ingest batch, from its first delivery to its commit"
    );
    describe_gauge!(
        OUTBOX_ROWS,
        "Outbox rows by status (held: revokes held by REVOKES_ENABLED=false)"
    );
    describe_gauge!(
        OUTBOX_OLDEST_PENDING,
        metrics::Unit::Seconds,
        "Age of the oldest change waiting for Altinn"
    );
    describe_counter!(
        ALTINN_REQUESTS,
        "Calls to Altinn and Maskinporten by endpoint and status"
    );
    describe_histogram!(
        ALTINN_REQUEST_DURATION,
        metrics::Unit::Seconds,
        "Calls to Altinn and Maskinporten by endpoint"
    );
    describe_counter!(DELIVERIES, "Delivery attempts by action and outcome");
    describe_gauge!(
        FIRMS_PAUSED,
        "Firms whose flush is paused by Altinn's refusal"
    );
    describe_gauge!(
        LAST_RECONCILE,
        metrics::Unit::Seconds,
        "Unix time the last nightly reconcile ended"
    );
    describe_counter!(
        DRIFT,
        "Grants the reconcile found missing in Altinn, or extra"
    );
    describe_gauge!(READY, "1 when /readyz answers 200");
    describe_gauge!(
        OLDEST_PAUSE,
        metrics::Unit::Seconds,
        "How long the longest-paused firm has been paused"
    );
    describe_gauge!(
        SETUP_ERROR,
        "1 while deliveries are held because Maskinporten or Altinn refuses the worker itself"
    );
    describe_gauge!(DEAD_LETTERS, "Dead letters recorded in the last 24 hours");

    for outcome in EVENT_OUTCOMES {
        counter!(EVENTS, "outcome" => outcome).increment(0);
    }
    for kind in COMMAND_TYPES {
        for outcome in COMMAND_OUTCOMES {
            counter!(COMMANDS, "type" => kind, "outcome" => outcome).increment(0);
        }
    }
    let _ = histogram!(BATCH_DURATION);
    for status in OUTBOX_STATUSES {
        gauge!(OUTBOX_ROWS, "status" => status).set(0.0);
    }
    gauge!(OUTBOX_OLDEST_PENDING).set(0.0);
    for endpoint in crate::altinn::ENDPOINTS {
        let _ = histogram!(ALTINN_REQUEST_DURATION, "endpoint" => *endpoint);
        // The status label is Altinn's answer, so only the happy one is known in advance.
        counter!(ALTINN_REQUESTS, "endpoint" => *endpoint, "status" => "200").increment(0);
    }
    for action in ACTIONS {
        for outcome in DELIVERY_OUTCOMES {
            counter!(DELIVERIES, "action" => action, "outcome" => outcome).increment(0);
        }
    }
    gauge!(FIRMS_PAUSED).set(0.0);
    gauge!(LAST_RECONCILE).set(0.0);
    for kind in DRIFT_KINDS {
        counter!(DRIFT, "kind" => kind).increment(0);
    }
    gauge!(READY).set(0.0);
    gauge!(OLDEST_PAUSE).set(0.0);
    gauge!(SETUP_ERROR).set(0.0);
    gauge!(DEAD_LETTERS).set(0.0);
}

pub fn routes(health: std::sync::Arc<super::Health>) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(health)
}

async fn render(
    axum::extract::State(health): axum::extract::State<std::sync::Arc<super::Health>>,
) -> impl IntoResponse {
    // `altinn_sync_ready` as `/readyz` would answer now: one `SELECT 1` per scrape.
    health.readiness().await;
    let handle = install();
    handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
}

/// An ingest batch was committed: what its events came to, and how long it took.
pub fn batch(applied: u64, duplicates: u64, dead_lettered: u64, took: Duration) {
    counter!(EVENTS, "outcome" => "applied").increment(applied);
    counter!(EVENTS, "outcome" => "duplicate").increment(duplicates);
    counter!(EVENTS, "outcome" => "dead_lettered").increment(dead_lettered);
    histogram!(BATCH_DURATION).record(took.as_secs_f64());
}

/// A command was handled, or failed (and stays unhandled for another try).
pub fn command(kind: &'static str, handled: bool, n: u64) {
    let outcome = if handled { "handled" } else { "failed" };
    counter!(COMMANDS, "type" => kind, "outcome" => outcome).increment(n);
}

/// A delivery attempt's outcome: `delivered`, `retried` or `parked`.
pub fn delivery(action: &str, outcome: &'static str) {
    let action = if action == "revoke" {
        "revoke"
    } else {
        "grant"
    };
    counter!(DELIVERIES, "action" => action, "outcome" => outcome).increment(1);
}

/// What a reconcile found that Altinn had, or lacked, against the recorded state.
pub fn drift(missing: u64, extra: u64) {
    counter!(DRIFT, "kind" => "missing").increment(missing);
    counter!(DRIFT, "kind" => "extra").increment(extra);
}

pub fn set_ready(ready: bool) {
    gauge!(READY).set(if ready { 1.0 } else { 0.0 });
}

pub fn set_setup_error(held: bool) {
    gauge!(SETUP_ERROR).set(if held { 1.0 } else { 0.0 });
}

/// Refreshes the PostgreSQL gauges (and readiness) every [`REFRESH`] until `shutdown`.
/// Also records the worker's mode for the CLI (see [`crate::ops::Mode::record`]).
pub async fn refresh_loop(
    health: &super::Health,
    mode: &crate::ops::Mode,
    worker: &str,
    shutdown: &CancellationToken,
) {
    // Every second until the worker is first ready, so the gauges do not lag its start.
    let mut ready_once = false;
    loop {
        let wait = if ready_once {
            REFRESH
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
        ready_once |= health.readiness().await.ready;
        if let Some(pool) = health.pool() {
            if let Err(e) = refresh(pool, mode.flush.revokes_enabled).await {
                tracing::debug!(error = %e, "metrics: PostgreSQL gauges not refreshed");
            }
            if let Err(e) = mode.record(pool, worker).await {
                tracing::debug!(error = %e, "the worker's mode was not recorded");
            }
        }
        install().run_upkeep();
    }
}

#[derive(sqlx::FromRow)]
struct Gauges {
    firms_paused: i64,
    oldest_pause: f64,
    last_reconcile: f64,
    dead_letters: i64,
}

/// Reads every PostgreSQL gauge: the outbox's counts, then the rest in one statement.
pub async fn refresh(pool: &PgPool, revokes_enabled: bool) -> Result<(), crate::state::Error> {
    let o = crate::sync::outbox_counts(pool, None, revokes_enabled).await?;
    let g: Gauges = sqlx::query_as(
        r#"SELECT
             (SELECT count(*) FROM firms WHERE flush_paused_at IS NOT NULL) AS firms_paused,
             coalesce((SELECT extract(epoch FROM now() - min(flush_paused_at))::float8
                       FROM firms WHERE flush_paused_at IS NOT NULL), 0) AS oldest_pause,
             coalesce((SELECT extract(epoch FROM max(handled_at))::float8 FROM commands
                       WHERE command_type = 'NightlyReconcile' AND handled_at IS NOT NULL), 0)
               AS last_reconcile,
             (SELECT count(*) FROM dead_letters WHERE received_at > now() - interval '24 hours')
               AS dead_letters"#,
    )
    .fetch_one(pool)
    .await?;
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    let f = |n: i64| n as f64;
    for (status, n) in [
        ("pending", o.pending),
        ("in_flight", o.in_flight),
        ("parked", o.parked),
        ("staged", o.staged),
        ("held", o.held),
    ] {
        gauge!(OUTBOX_ROWS, "status" => status).set(f(n));
    }
    gauge!(OUTBOX_OLDEST_PENDING).set(o.oldest_pending_secs);
    gauge!(FIRMS_PAUSED).set(f(g.firms_paused));
    gauge!(OLDEST_PAUSE).set(g.oldest_pause);
    gauge!(LAST_RECONCILE).set(g.last_reconcile);
    gauge!(DEAD_LETTERS).set(f(g.dead_letters));
    Ok(())
}
