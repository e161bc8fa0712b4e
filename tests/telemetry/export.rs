//! The OTLP export of the real binary, into a small OTLP/HTTP receiver: the variables have their
//! standard meaning, and `sync` and `reconcile` send the `traceparent` of the span exported.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::common::{TestApp, WAIT};

/// One request the receiver got: its path and body.
pub(crate) type Received = (String, Bytes);

/// An OTLP/HTTP receiver on 127.0.0.1:0 that answers every POST with 200 and hands it over.
pub(crate) async fn receiver() -> (String, mpsc::UnboundedReceiver<Received>, CancellationToken) {
    async fn receive(
        State(tx): State<mpsc::UnboundedSender<Received>>,
        uri: Uri,
        body: Bytes,
    ) -> StatusCode {
        let _ = tx.send((uri.path().to_owned(), body));
        StatusCode::OK
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().fallback(receive).with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stopped.cancelled_owned())
            .await
    });
    (format!("http://{addr}"), rx, stop)
}

/// Runs the binary with `args` and the OTLP variable `var` set to `value`, and waits for it.
async fn run(app: &TestApp, args: &[&str], var: &str, value: &str) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_altinn-sync"))
        .args(args)
        .env("AMQP_URL", &app.settings.broker.amqp_url)
        .env("TOPOLOGY_PREFIX", &app.settings.ingest.topology_prefix)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env(var, value)
        .env("OTEL_SERVICE_NAME", "altinn-sync-under-test")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "altinn-sync {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The next export the receiver got: its path, and the trace ids of its `publish` spans.
async fn next_export(rx: &mut mpsc::UnboundedReceiver<Received>) -> (String, Vec<String>) {
    let (path, body) = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("the binary exports its spans before it exits")
        .unwrap();
    assert!(!body.is_empty(), "an export carries spans");
    let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
    let mut traces = Vec::new();
    for resource in &request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref()?.value.clone());
        assert_eq!(
            service,
            Some(any_value::Value::StringValue(
                "altinn-sync-under-test".into()
            )),
            "service.name comes from OTEL_SERVICE_NAME"
        );
        for span in resource.scope_spans.iter().flat_map(|s| &s.spans) {
            if span.kind == SpanKind::Producer as i32 {
                assert!(span.name.starts_with("publish "), "{}", span.name);
                traces.push(hex::encode(&span.trace_id));
            }
        }
    }
    (path, traces)
}

/// The trace ids in the `traceparent` headers of the commands waiting on the queue.
async fn published_traces(app: &TestApp, n: usize) -> Vec<String> {
    let conn = altinn_sync::ingest::connect(&app.settings.broker.amqp_url)
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .basic_qos(10, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            app.topology.commands_queue.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut traces = Vec::new();
    while traces.len() < n {
        let delivery = tokio::time::timeout(WAIT, consumer.next())
            .await
            .expect("the command is on the queue")
            .unwrap()
            .unwrap();
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        let Some(AMQPValue::LongString(tp)) = headers.inner().get("traceparent") else {
            panic!("the command carries no traceparent: {headers:?}");
        };
        let tp = String::from_utf8_lossy(tp.as_bytes()).into_owned();
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4, "a W3C traceparent: {tp}");
        traces.push(parts[1].to_owned());
    }
    let _ = conn.close(200, "read".into()).await;
    traces
}

#[tokio::test]
async fn the_binary_exports_to_the_standard_otlp_endpoints_and_sends_traceparent() {
    let (url, mut rx, stop) = receiver().await;
    let app = TestApp::without_worker().await;

    // The base URL: the SDK appends the signal's path.
    run(
        &app,
        &["sync", "--firm", "912345610"],
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        &url,
    )
    .await;
    let (path, sync_traces) = next_export(&mut rx).await;
    assert_eq!(path, "/v1/traces");
    assert_eq!(sync_traces.len(), 1, "one publish span");

    // The traces URL is used as it is.
    run(
        &app,
        &["reconcile", "--firm", "912345610"],
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        &format!("{url}/collector/traces"),
    )
    .await;
    let (path, reconcile_traces) = next_export(&mut rx).await;
    assert_eq!(path, "/collector/traces");
    assert_eq!(reconcile_traces.len(), 1, "one publish span");

    assert_eq!(
        published_traces(&app, 2).await,
        [sync_traces, reconcile_traces].concat(),
        "each command carries the trace of the span exported"
    );
    stop.cancel();
    app.teardown().await;
}
