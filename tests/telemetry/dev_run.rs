//! A `dev` run into an OTLP receiver: the span tree of one sync, from AdminFlow's `publish` to
//! the Altinn calls, and the `/metrics` it leaves. README shows both, captured by this test
//! (`cargo test --test telemetry dev_run -- --nocapture` prints them).

use std::collections::HashMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::process::Command;

use crate::common::dev::Dev;
use crate::common::{TestApp, WAIT};
use crate::export::receiver;

const FIRM: &str = "912345610";

/// Runs the binary as the README's walk-through does, after dev's `export` line.
async fn cli(app: &TestApp, exported: &[(String, String)], otlp: &str, args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_altinn-sync"))
        .args(args)
        .env("AMQP_URL", &app.settings.broker.amqp_url)
        .envs(exported.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?;
    match value.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// The tree under `root`, one line per span, children by start time.
fn render(spans: &[Span], root: &Span) -> String {
    let mut children: HashMap<&[u8], Vec<&Span>> = HashMap::new();
    for s in spans {
        children.entry(&s.parent_span_id[..]).or_default().push(s);
    }
    let mut out = String::new();
    let mut stack = vec![(root, 0)];
    while let Some((span, depth)) = stack.pop() {
        let ms = (span
            .end_time_unix_nano
            .saturating_sub(span.start_time_unix_nano)) as f64
            / 1e6;
        let fields: Vec<String> = [
            "firm",
            "command.id",
            "outbox.id",
            "endpoint",
            "http.response.status_code",
            "outcome",
        ]
        .iter()
        .filter_map(|k| attribute(span, k).map(|v| format!("{k}={v}")))
        .collect();
        out.push_str(&format!(
            "{}{} ({ms:.1} ms) {}\n",
            "  ".repeat(depth),
            span.name,
            fields.join(" ")
        ));
        let mut kids = children.get(&span.span_id[..]).cloned().unwrap_or_default();
        kids.sort_by_key(|s| std::cmp::Reverse(s.start_time_unix_nano));
        stack.extend(kids.into_iter().map(|k| (k, depth + 1)));
    }
    out
}

#[tokio::test]
async fn a_dev_run_shows_one_sync_from_adminflow_to_altinn_and_its_metrics() {
    let (otlp, mut received, stop) = receiver().await;
    let app = TestApp::without_worker().await;
    let Dev {
        child: mut dev,
        mut lines,
        admin,
        exported,
        ..
    } = Dev::start(
        &app,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp),
            // Export within a tenth of a second rather than the SDK's five.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    for (key, file) in [
        ("RoleChanged", "01-kari-role-changed.json"),
        ("ClientAssigned", "02-kari-client-assigned.json"),
    ] {
        let path = format!("schemas/examples/demo/{file}");
        cli(
            &app,
            &exported,
            &otlp,
            &["publish", "--routing-key", key, &path],
        )
        .await;
    }
    cli(
        &app,
        &exported,
        &otlp,
        &["sync", "--firm", FIRM, "--after-sequence", "1002"],
    )
    .await;

    // Spans arrive as each process exports them; the delivery's Altinn call ends the story.
    let mut spans: Vec<Span> = Vec::new();
    let delivered = |spans: &[Span]| {
        spans
            .iter()
            .any(|s| attribute(s, "endpoint").as_deref() == Some("delegations_post"))
    };
    while !delivered(&spans) {
        let (_, body) = tokio::time::timeout(WAIT, received.recv())
            .await
            .expect("the delivery's spans are exported")
            .unwrap();
        let request = ExportTraceServiceRequest::decode(body).unwrap();
        spans.extend(
            request
                .resource_spans
                .into_iter()
                .flat_map(|r| r.scope_spans)
                .flat_map(|s| s.spans),
        );
    }
    // The sync's trace: the root is the `publish` span of the `sync` command.
    let call = spans
        .iter()
        .find(|s| attribute(s, "endpoint").as_deref() == Some("delegations_post"))
        .unwrap();
    let root = spans
        .iter()
        .find(|s| s.trace_id == call.trace_id && s.parent_span_id.is_empty())
        .expect("the trace's root span was exported");
    let mut trace: Vec<Span> = spans
        .iter()
        .filter(|s| s.trace_id == call.trace_id)
        .cloned()
        .collect();
    trace.sort_by_key(|s| s.start_time_unix_nano);
    let tree = render(&trace, root);
    println!("span tree of one sync:\n{tree}");
    assert!(root.name.starts_with("publish "), "{tree}");
    for name in ["SyncNow", "deliver grant"] {
        assert!(tree.contains(name), "{name} in the trace:\n{tree}");
    }
    assert!(
        !tree.contains("15038512363"),
        "no identity number in a span"
    );

    let metrics = reqwest::get(format!("{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let excerpt: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            [
                "altinn_sync_events_total",
                "altinn_sync_deliveries_total{action=\"grant\"",
                "altinn_sync_commands_total{type=\"SyncNow\"",
                "altinn_sync_altinn_requests_total{endpoint=\"delegations_post\"",
                "altinn_sync_ready",
                "altinn_sync_outbox_rows",
            ]
            .iter()
            .any(|p| l.starts_with(p))
        })
        .collect();
    println!("/metrics excerpt:\n{}", excerpt.join("\n"));
    assert!(
        excerpt.contains(&"altinn_sync_deliveries_total{action=\"grant\",outcome=\"delivered\"} 1"),
        "{metrics}"
    );
    assert!(
        excerpt.contains(&"altinn_sync_ready 1"),
        "ready as /readyz would say: {metrics}"
    );
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(dev.id().unwrap().to_string())
        .status()
        .await;
    let _ = tokio::time::timeout(WAIT, dev.wait()).await;
    stop.cancel();
    app.teardown().await;
}
