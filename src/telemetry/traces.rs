//! Tracing: the subscriber, the OTLP export and the W3C trace context carried in and out.

use std::collections::HashMap;

use lapin::types::{AMQPValue, FieldTable, LongString};
use opentelemetry::global;
use opentelemetry::trace::{TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanExporter};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::Error;

/// `service.name` unless `OTEL_SERVICE_NAME` says otherwise.
pub const SERVICE_NAME: &str = "altinn-sync";
/// The W3C header (AMQP and HTTP) and outbox column.
pub const TRACEPARENT: &str = "traceparent";
/// Either turns the OTLP export on.
const OTLP_ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
];

#[derive(Debug, Clone, clap::Args)]
pub struct TelemetrySettings {
    /// Log format on standard error: `text` or `json`. Levels come from RUST_LOG (default info).
    /// Traces go through OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (base URL, e.g.
    /// http://127.0.0.1:4318) or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (full URL) is set; the
    /// service is OTEL_SERVICE_NAME (default altinn-sync).
    #[arg(long, env = "LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Exports the spans still buffered, and stops the export, when dropped.
pub struct Guard(SdkTracerProvider);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.shutdown();
    }
}

/// Installs the subscriber, with the OTLP exporter when the environment asks for one.
/// `default_filter` applies to the logs when RUST_LOG is unset.
pub fn init(settings: &TelemetrySettings, default_filter: &str) -> Result<Guard, Error> {
    let provider = match otlp_exporter()? {
        Some(exporter) => tracer_provider(exporter),
        // Nothing to export to: spans keep their ids (logs and the `traceparent` sent on still
        // name the trace) but record nothing, unless the sender sampled the trace. Recording
        // every span for nobody cost a fifth of the flush's throughput.
        None => SdkTracerProvider::builder()
            .with_resource(resource())
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)))
            .build(),
    };
    install(&provider, settings.log_format, default_filter)?;
    Ok(Guard(provider))
}

/// The OTLP/HTTP exporter, when `OTEL_EXPORTER_OTLP_ENDPOINT` or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set. No endpoint is given here: the SDK gives each
/// variable its standard meaning.
fn otlp_exporter() -> Result<Option<opentelemetry_otlp::SpanExporter>, Error> {
    let configured = OTLP_ENDPOINT_VARS
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
    if !configured {
        return Ok(None);
    }
    // The batch processor exports from a thread of its own, hence the blocking client.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    Ok(Some(exporter))
}

/// Spans exported in batches to `exporter`, as this service.
pub fn tracer_provider<E: SpanExporter + 'static>(exporter: E) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_resource(resource())
        .with_batch_exporter(exporter)
        .build()
}

/// The SDK's resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES), named `altinn-sync` when
/// neither names the service.
pub fn resource() -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    if named {
        detected
    } else {
        Resource::builder().with_service_name(SERVICE_NAME).build()
    }
}

/// Installs the global subscriber: logs on standard error, filtered by RUST_LOG or
/// `default_filter`, and this crate's spans (info and above) into `provider`, whatever the log
/// filter, so even a one-shot command sends its `traceparent`. Sets the W3C propagator.
pub fn install(
    provider: &SdkTracerProvider,
    format: LogFormat,
    default_filter: &str,
) -> Result<(), Error> {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    subscriber(provider, format, filter, std::io::stderr).try_init()?;
    Ok(())
}

/// The subscriber [`install`] installs, logging to `writer`.
fn subscriber<W>(
    provider: &SdkTracerProvider,
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
) -> impl Subscriber + Send + Sync + for<'a> LookupSpan<'a>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_writer(writer).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .event_format(WithTraceId(tracing_subscriber::fmt::format().json()))
            .with_writer(writer)
            .boxed(),
    };
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(SERVICE_NAME))
        .with_filter(Targets::new().with_target("altinn_sync", tracing::Level::INFO));
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(spans)
}

/// The JSON line of the wrapped format, with the current span's `trace_id` first.
struct WithTraceId<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let Some(trace_id) = current_trace_id() else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{\"trace_id\":\"{trace_id}\",{rest}"),
            None => writer.write_str(&line),
        }
    }
}

/// The trace of the span entered on this thread: entering a span makes its OpenTelemetry
/// context the current one.
fn current_trace_id() -> Option<TraceId> {
    let cx = opentelemetry::Context::current();
    let span = cx.span();
    let context = span.span_context();
    context.is_valid().then(|| context.trace_id())
}

/// The W3C `traceparent` naming `span`, to carry its trace on: in a message, in an outbox row.
/// None when spans are not recorded.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let mut carrier = HashMap::new();
    let cx = span.context();
    global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    carrier.remove(TRACEPARENT)
}

/// The remote context a W3C `traceparent` names, if it is well-formed.
fn remote_context(traceparent: &str) -> Option<opentelemetry::Context> {
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let cx = global::get_text_map_propagator(|p| p.extract(&carrier));
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes `span` continue the trace `traceparent` names (a command's, an outbox row's). Call it
/// before the span is first entered; a missing or malformed `traceparent` leaves `span` as it is.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(cx) = traceparent.and_then(remote_context) {
        let _ = span.set_parent(cx);
    }
}

/// The message's `traceparent` header, if it is a well-formed one.
pub fn amqp_traceparent(headers: Option<&FieldTable>) -> Option<String> {
    let text = match headers?.inner().get(TRACEPARENT)? {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.to_string(),
        _ => return None,
    };
    remote_context(&text).map(|_| text)
}

/// Links `span` to the trace of the message's `traceparent`, as a batch serves many traces.
/// Call it before the span is first entered.
pub fn link_traceparent(span: &tracing::Span, headers: Option<&FieldTable>) {
    link(span, amqp_traceparent(headers).as_deref());
}

/// Links `span` to the trace `traceparent` names, if well-formed. Call it before the span is
/// first entered.
pub fn link(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(cx) = traceparent.and_then(remote_context) {
        span.add_link(cx.span().span_context().clone());
    }
}

/// AMQP headers carrying `span`'s trace on (empty when spans are not recorded).
pub fn amqp_headers(span: &tracing::Span) -> FieldTable {
    let mut headers = FieldTable::default();
    if let Some(tp) = traceparent(span) {
        headers.insert(
            TRACEPARENT.into(),
            AMQPValue::LongString(LongString::from(tp)),
        );
    }
    headers
}

/// `request` with the W3C headers naming `span`, so the server's spans join its trace.
pub fn inject_http(
    span: &tracing::Span,
    request: reqwest::RequestBuilder,
) -> reqwest::RequestBuilder {
    let mut carrier: HashMap<String, String> = HashMap::new();
    let cx = span.context();
    global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    carrier.into_iter().fold(request, |request, (name, value)| {
        request.header(name, value)
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::EnvFilter;

    use super::{LogFormat, TraceContextPropagator, subscriber};

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_log_lines_inside_a_span_carry_its_trace_id() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let provider = SdkTracerProvider::builder().build();
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = subscriber(
            &provider,
            LogFormat::Json,
            EnvFilter::new("info"),
            move || writer.clone(),
        );
        let trace_id = tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside any span");
            let span = tracing::info_span!("command");
            let trace_id = span.context().span().span_context().trace_id();
            span.in_scope(|| tracing::info!(firm = "912345610", "inside the span"));
            trace_id
        });
        let text = String::from_utf8(lines.0.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_default())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0].get("trace_id"), None, "{text}");
        assert_eq!(
            lines[1]["trace_id"].as_str(),
            Some(trace_id.to_string().as_str()),
            "{text}"
        );
        assert_eq!(lines[1]["fields"]["message"], "inside the span", "{text}");
    }
}
