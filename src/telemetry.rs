//! Logging and tracing: a `tracing` subscriber, and an OTLP exporter when one is configured.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use lapin::types::{AMQPValue, FieldTable};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Set once an exporter is installed; linking spans to message trace contexts is skipped
/// otherwise, because it costs a parse per message.
static EXPORTING: AtomicBool = AtomicBool::new(false);

#[derive(Debug, Clone, clap::Args)]
pub struct TelemetrySettings {
    /// Log format on standard error: `text` or `json`. Levels come from RUST_LOG (default info).
    #[arg(long, env = "LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: LogFormat,
    /// OTLP/HTTP endpoint for traces, e.g. http://127.0.0.1:4318/v1/traces. Off when unset.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not build the OTLP exporter")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("could not install the tracing subscriber")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
}

/// Flushes spans when dropped.
pub struct Guard(Option<SdkTracerProvider>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the subscriber. `default_filter` applies when RUST_LOG is unset.
pub fn init(settings: &TelemetrySettings, default_filter: &str) -> Result<Guard, Error> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let fmt = match settings.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let (otel, provider) = match &settings.otlp_endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(endpoint)
                .build()?;
            // The batch processor exports from a thread of its own, hence the blocking client.
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .build();
            let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("altinn-sync"));
            opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
            EXPORTING.store(true, Ordering::Relaxed);
            (Some(layer), Some(provider))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()?;
    Ok(Guard(provider))
}

/// Links `span` to the trace AdminFlow started, from the message's W3C `traceparent` header.
/// A batch serves many traces, so it is a link rather than a parent.
pub fn link_traceparent(span: &tracing::Span, headers: Option<&FieldTable>) {
    if !EXPORTING.load(Ordering::Relaxed) {
        return;
    }
    let Some(value) = headers.and_then(|h| h.inner().get("traceparent")) else {
        return;
    };
    let text = match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.to_string(),
        _ => return,
    };
    let carrier = HashMap::from([("traceparent".to_owned(), text)]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let context = cx.span().span_context().clone();
    if context.is_valid() {
        span.add_link(context);
    }
}
