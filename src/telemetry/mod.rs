//! Logging, tracing and metrics, at the bottom of the crate: every layer records into it and
//! it depends on nothing above it. The admin listener only serves what [`metrics`] holds.
//!
//! Tracing is a `tracing` subscriber whose spans are OpenTelemetry spans, and the W3C
//! trace context carried in and out.
//!
//! - Spans are always made, so log lines and the `traceparent` headers sent on name the trace
//!   even when nothing is exported. They are exported through OTLP/HTTP only when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL, the SDK appends `/v1/traces`) or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL) is set; the SDK reads both itself.
//! - `service.name` is `OTEL_SERVICE_NAME`, else `altinn-sync`.
//! - Trace context goes in and out as W3C `traceparent`, through OpenTelemetry's global
//!   propagator (`TraceContextPropagator`): AMQP headers in ([`amqp_traceparent`]) and out
//!   ([`amqp_headers`]), HTTP headers out ([`inject_http`]), outbox rows ([`traceparent`]).
//! - In JSON, a log line inside a span carries the span's `trace_id`.
//!
//! Metrics go through the `metrics` facade into one process-wide Prometheus recorder
//! ([`metrics::install`]); the pipeline calls the named recorders in [`metrics`], never the
//! macros with a series name of its own.

mod chain;
pub mod metrics;
mod traces;

pub use chain::{ErrorChain, redact_digit_runs};

pub use traces::{
    Guard, LogFormat, SERVICE_NAME, TRACEPARENT, TelemetrySettings, amqp_headers, amqp_traceparent,
    continue_trace, init, inject_http, install, link, link_traceparent, resource, traceparent,
    tracer_provider,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not build the OTLP exporter (see OTEL_EXPORTER_OTLP_ENDPOINT)")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("could not install the tracing subscriber")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
}
