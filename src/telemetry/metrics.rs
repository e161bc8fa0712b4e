//! The Prometheus series, through the `metrics` facade and its Prometheus exporter.
//!
//! Every series and label value is registered at 0 when the recorder is installed, so a rule
//! or panel sees it before the first event. Label values never carry a firm, an employee or
//! an identity number: the cardinality is the same at one firm or ten thousand.
//!
//! Gauges computed from PostgreSQL are set here but read from above (`ops::gauges`), every
//! [`REFRESH`] by each replica, not on every scrape; rules aggregate them with `max()`.

use super::ErrorChain;
use crate::policy::Action;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

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
pub const CONCURRENCY_LIMIT: &str = "altinn_sync_altinn_concurrency_limit";

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
                tracing::warn!(error = %ErrorChain(&e), "metrics buckets rejected; histograms become summaries");
                PrometheusBuilder::new().build_recorder().handle()
            }
        };
        register();
        handle
    })
}

fn register() {
    describe();
    set_to_zero();
}

/// The help text of every series.
fn describe() {
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
    describe_gauge!(
        CONCURRENCY_LIMIT,
        "Altinn calls allowed in flight at once: adaptive, or FLUSH_CONCURRENCY when set"
    );
}

/// Every series and label value at 0, so it exists before its first event.
fn set_to_zero() {
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
    for action in Action::ALL.map(Action::as_str) {
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
    gauge!(CONCURRENCY_LIMIT).set(0.0);
}

/// An ingest batch was committed: what its events came to, and how long it took.
pub fn batch(applied: u64, duplicates: u64, dead_lettered: u64, took: Duration) {
    counter!(EVENTS, "outcome" => "applied").increment(applied);
    counter!(EVENTS, "outcome" => "duplicate").increment(duplicates);
    counter!(EVENTS, "outcome" => "dead_lettered").increment(dead_lettered);
    histogram!(BATCH_DURATION).record(took.as_secs_f64());
}

/// What became of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandOutcome {
    Handled,
    /// It stays unhandled for another try.
    Failed,
}

pub fn command(kind: &'static str, outcome: CommandOutcome, n: u64) {
    let outcome = match outcome {
        CommandOutcome::Handled => "handled",
        CommandOutcome::Failed => "failed",
    };
    counter!(COMMANDS, "type" => kind, "outcome" => outcome).increment(n);
}

/// Delivery attempts of one action (`grant` or `revoke`) with one outcome (`delivered`,
/// `retried` or `parked`).
pub fn deliveries(action: Action, outcome: &'static str, n: u64) {
    counter!(DELIVERIES, "action" => action.as_str(), "outcome" => outcome).increment(n);
}

/// Registers the Altinn and Maskinporten endpoints' series at 0; the labels are route
/// templates the client owns (`altinn::ENDPOINTS`), never ids.
pub fn register_endpoints(endpoints: &[&'static str]) {
    for endpoint in endpoints {
        let _ = histogram!(ALTINN_REQUEST_DURATION, "endpoint" => *endpoint);
        // The status label is Altinn's answer, so only the happy one is known in advance.
        counter!(ALTINN_REQUESTS, "endpoint" => *endpoint, "status" => "200").increment(0);
    }
}

/// One call to Altinn or Maskinporten: its endpoint template, its status (or `timeout`,
/// `error`) and how long it took.
pub fn altinn_request(endpoint: &'static str, status: String, took: Duration) {
    counter!(ALTINN_REQUESTS, "endpoint" => endpoint, "status" => status).increment(1);
    histogram!(ALTINN_REQUEST_DURATION, "endpoint" => endpoint).record(took.as_secs_f64());
}

/// Sets every outbox gauge from its counts by status.
pub fn outbox(rows: [(&'static str, f64); 5], oldest_pending_secs: f64) {
    for (status, n) in rows {
        gauge!(OUTBOX_ROWS, "status" => status).set(n);
    }
    gauge!(OUTBOX_OLDEST_PENDING).set(oldest_pending_secs);
}

/// The gauges read from PostgreSQL beside the outbox.
pub fn firms(paused: f64, oldest_pause_secs: f64, last_reconcile: f64, dead_letters: f64) {
    gauge!(FIRMS_PAUSED).set(paused);
    gauge!(OLDEST_PAUSE).set(oldest_pause_secs);
    gauge!(LAST_RECONCILE).set(last_reconcile);
    gauge!(DEAD_LETTERS).set(dead_letters);
}

/// What a reconcile found that Altinn had, or lacked, against the recorded state.
pub fn drift(missing: u64, extra: u64) {
    counter!(DRIFT, "kind" => "missing").increment(missing);
    counter!(DRIFT, "kind" => "extra").increment(extra);
}

pub fn set_ready(ready: bool) {
    gauge!(READY).set(if ready { 1.0 } else { 0.0 });
}

pub fn set_concurrency_limit(limit: usize) {
    #[allow(clippy::cast_precision_loss)] // a few hundred at most
    gauge!(CONCURRENCY_LIMIT).set(limit as f64);
}

pub fn set_setup_error(held: bool) {
    gauge!(SETUP_ERROR).set(if held { 1.0 } else { 0.0 });
}
