//! With an in-memory exporter: a `SyncNow` carrying AdminFlow's `traceparent` is handled, planned
//! and delivered in that trace, down to the Altinn call, and Altinn receives a `traceparent` of
//! that trace.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use altinn_sync::altinn::AltinnSettings;
use altinn_sync::publish::json_properties;
use altinn_sync::sim::{self, Client, FirmRole, Person, Simulator, World};
use altinn_sync::telemetry::{self, LogFormat};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use opentelemetry::trace::{SpanId, SpanKind, TraceId};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::{Value as Json, json};
use tokio_util::sync::DropGuard;
use uuid::Uuid;

use crate::common::TestApp;
use crate::common::altinn::{maskinporten_client, serve};

const FIRM: &str = "912345610";
const CLIENT: &str = "998877660";
/// Kari's, from the demo events: it must appear in no span.
const KARI_NIN: &str = "15038512363";
const DELEGATIONS: &str =
    "/accessmanagement/api/v1/enduser/clientdelegations/agents/accesspackages";

/// The test binary's one subscriber, exporting into memory.
struct Spans {
    provider: SdkTracerProvider,
    exporter: InMemorySpanExporter,
}

fn spans() -> &'static Spans {
    static SPANS: OnceLock<Spans> = OnceLock::new();
    SPANS.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = telemetry::tracer_provider(exporter.clone());
        telemetry::install(&provider, LogFormat::Json, "warn").expect("the only subscriber");
        Spans { provider, exporter }
    })
}

impl Spans {
    /// Every finished span of `trace`, in the order they started.
    fn of_trace(&self, trace: TraceId) -> Vec<SpanData> {
        self.provider.force_flush().unwrap();
        let mut spans: Vec<SpanData> = self
            .exporter
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .filter(|s| s.span_context.trace_id() == trace)
            .collect();
        spans.sort_by_key(|s| s.start_time);
        spans
    }
}

/// The simulator on 127.0.0.1:0, journaling, with the demo firm, its client and Kari.
async fn altinn() -> (Simulator, AltinnSettings, DropGuard) {
    let world = World {
        maskinporten_clients: vec![maskinporten_client()],
        maskinporten_issuer: None,
        firms: vec![sim::Firm {
            org_number: FIRM.into(),
            party_uuid: Uuid::new_v4(),
            name: "Demo Regnskap AS".into(),
            system_user_approved: true,
        }],
        clients: vec![Client {
            party_uuid: Uuid::new_v4(),
            org_number: CLIENT.into(),
            name: "Fjordkraft Regnskap AS".into(),
            firm_roles: vec![FirmRole {
                firm_org_number: FIRM.into(),
                role: "regnskapsforer".into(),
                packages: Vec::new(),
            }],
        }],
        persons: vec![Person {
            party_uuid: Uuid::new_v4(),
            national_identity_number: KARI_NIN.into(),
            last_name: "Nordmann".into(),
            name: "Kari Nordmann".into(),
        }],
        altinn_token_lifetime_secs: None,
        held: Vec::new(),
    };
    let sim = Simulator::with_journal();
    let (settings, shutdown) = serve(world, sim.clone(), 5_000).await;
    (sim, settings, shutdown)
}

fn demo(file: &str) -> Json {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas/examples/demo")
        .join(file);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Publishes `command` as AdminFlow would, with `traceparent` in the AMQP headers.
async fn publish_traced(app: &TestApp, command: &Json, traceparent: &str) {
    let conn = altinn_sync::ingest::connect(&app.settings.broker.amqp_url)
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut headers = FieldTable::default();
    headers.insert(
        "traceparent".into(),
        AMQPValue::LongString(LongString::from(traceparent)),
    );
    let properties = json_properties(command["command_id"].as_str()).with_headers(headers);
    let confirm = channel
        .basic_publish(
            app.topology.commands_exchange.as_str().into(),
            command["command_type"].as_str().unwrap().into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            &serde_json::to_vec(command).unwrap(),
            properties,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());
    let _ = conn.close(200, "published".into()).await;
}

/// Waits until `commands` commands are handled and no change is pending.
async fn flushed(app: &TestApp, commands: i64) {
    let pool = app.pool.clone();
    app.wait_until("the flush", move || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, bool>(
                r#"SELECT (SELECT count(*) FROM commands WHERE handled_at IS NOT NULL) = $1
                      AND NOT EXISTS (SELECT 1 FROM commands WHERE handled_at IS NULL)
                      AND NOT EXISTS (SELECT 1 FROM outbox WHERE status = 'pending')"#,
            )
            .bind(commands)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    })
    .await;
}

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn attr_str(span: &SpanData, key: &str) -> Option<String> {
    attr(span, key).map(|v| v.as_str().into_owned())
}

/// The trace as an indented tree, with each span's kind and the attributes that tell the story.
fn tree(spans: &[SpanData]) -> String {
    const SHOWN: [&str; 11] = [
        "command.type",
        "command.id",
        "firm",
        "action",
        "outbox.id",
        "outcome",
        "endpoint",
        "http.request.method",
        "url.template",
        "http.response.status_code",
        "firms",
    ];
    let ids: Vec<SpanId> = spans.iter().map(|s| s.span_context.span_id()).collect();
    let mut children: HashMap<Option<SpanId>, Vec<&SpanData>> = HashMap::new();
    for s in spans {
        let parent = ids.contains(&s.parent_span_id).then_some(s.parent_span_id);
        children.entry(parent).or_default().push(s);
    }
    fn walk(
        out: &mut String,
        children: &HashMap<Option<SpanId>, Vec<&SpanData>>,
        parent: Option<SpanId>,
        depth: usize,
    ) {
        for s in children.get(&parent).into_iter().flatten() {
            let attrs: Vec<String> = SHOWN
                .iter()
                .filter_map(|k| attr(s, k).map(|v| format!("{k}={v}")))
                .collect();
            let kind = match s.span_kind {
                SpanKind::Client => " [client]",
                SpanKind::Server => " [server]",
                SpanKind::Producer => " [producer]",
                SpanKind::Consumer => " [consumer]",
                SpanKind::Internal => "",
            };
            let ms = s
                .end_time
                .duration_since(s.start_time)
                .unwrap_or_default()
                .as_secs_f64()
                * 1e3;
            out.push_str(&format!(
                "{}{}{kind} {ms:.1} ms  {}\n",
                "  ".repeat(depth),
                s.name,
                attrs.join(" ")
            ));
            walk(out, children, Some(s.span_context.span_id()), depth + 1);
        }
    }
    let mut out = String::new();
    walk(&mut out, &children, None, 0);
    out
}

#[tokio::test]
async fn a_commands_traceparent_reaches_the_altinn_call_and_altinn() {
    let spans = spans();
    let (sim, settings, stop_sim) = altinn().await;
    let mut app = TestApp::without_worker().await;
    app.settings.altinn = settings;
    app.start_worker().await;
    app.publish_event(&demo("01-kari-role-changed.json")).await;
    app.publish_event(&demo("02-kari-client-assigned.json"))
        .await;
    app.barrier().await;

    // AdminFlow's span that published the command.
    let (trace, parent) = (random_trace_id(), random_span_id());
    let traceparent = format!("00-{trace}-{parent}-01");
    let command_id = Uuid::new_v4();
    let command = json!({
        "command_id": command_id, "command_type": "SyncNow",
        "requested_at": "2026-11-24T08:00:00Z", "requested_by": "admin@firm.example",
        "firm": {"org_number": FIRM}, "after_sequence": 1002
    });
    publish_traced(&app, &command, &traceparent).await;
    flushed(&app, 1).await;
    // A nightly reconcile continues its own sender's trace, phase by phase.
    let reconcile_trace = random_trace_id();
    let reconcile = json!({
        "command_id": Uuid::new_v4(), "command_type": "NightlyReconcile",
        "requested_at": "2026-11-24T02:00:00Z", "firm": {"org_number": FIRM}
    });
    publish_traced(
        &app,
        &reconcile,
        &format!("00-{reconcile_trace}-{}-01", random_span_id()),
    )
    .await;
    flushed(&app, 2).await;
    // Every span of the worker has ended once it has stopped.
    app.stop_worker().await;
    drop(stop_sim);

    let traced = spans.of_trace(trace);
    println!("span tree of one sync (trace {trace}):\n{}", tree(&traced));

    let command_span = traced
        .iter()
        .find(|s| s.name == "SyncNow")
        .expect("the command's span is in AdminFlow's trace");
    assert_eq!(
        command_span.parent_span_id, parent,
        "a child of AdminFlow's span"
    );
    assert_eq!(
        attr_str(command_span, "command.id"),
        Some(command_id.to_string())
    );
    assert_eq!(attr_str(command_span, "firm").as_deref(), Some(FIRM));

    let delivery = traced
        .iter()
        .find(|s| s.name == "deliver grant")
        .expect("the delivery joins the trace, from the outbox row");
    assert_eq!(attr_str(delivery, "outcome").as_deref(), Some("delivered"));
    assert_eq!(
        attr_str(delivery, "command.id"),
        Some(command_id.to_string())
    );

    let call = traced
        .iter()
        .find(|s| attr_str(s, "endpoint").as_deref() == Some("delegations_post"))
        .expect("the Altinn call's span is in AdminFlow's trace");
    assert_eq!(call.span_kind, SpanKind::Client);
    assert_eq!(call.name, format!("POST {DELEGATIONS}"));
    assert_eq!(
        attr_str(call, "http.request.method").as_deref(),
        Some("POST")
    );
    assert_eq!(attr_str(call, "url.template").as_deref(), Some(DELEGATIONS));
    assert_eq!(
        attr(call, "http.response.status_code"),
        Some(&Value::I64(200))
    );
    assert!(
        traced
            .iter()
            .any(|s| s.span_context.span_id() == call.parent_span_id),
        "the call is a child of a span of the trace"
    );

    // Altinn received the call span's own context.
    let received: Vec<String> = sim
        .journal()
        .into_iter()
        .filter(|e| e.method == "POST" && e.path == DELEGATIONS)
        .filter_map(|e| e.traceparent)
        .collect();
    assert_eq!(
        received,
        vec![format!("00-{trace}-{}-01", call.span_context.span_id())],
        "Altinn gets a traceparent of AdminFlow's trace, naming the client span"
    );
    assert!(
        sim.journal().iter().all(|e| e.traceparent.is_some()),
        "every Altinn and Maskinporten call sends a traceparent"
    );

    let reconciled = spans.of_trace(reconcile_trace);
    println!(
        "span tree of one nightly reconcile (trace {reconcile_trace}):\n{}",
        tree(&reconciled)
    );
    let names: Vec<&str> = reconciled.iter().map(|s| s.name.as_ref()).collect();
    for phase in ["NightlyReconcile", "reconcile.read", "reconcile.apply"] {
        assert!(names.contains(&phase), "{phase} in {names:?}");
    }
    assert!(
        reconciled
            .iter()
            .any(|s| attr_str(s, "endpoint").as_deref() == Some("delegations")),
        "the read phase's Altinn calls are in the reconcile's trace: {names:?}"
    );

    // The ingest batch that took the command is linked to AdminFlow's trace.
    spans.provider.force_flush().unwrap();
    let all = spans.exporter.get_finished_spans().unwrap();
    assert!(
        all.iter().any(|s| s.name == "ingest.batch"
            && s.links
                .iter()
                .any(|l| l.span_context.trace_id() == trace && l.span_context.span_id() == parent)),
        "the batch span links to the message's traceparent"
    );
    let leaked: Vec<&KeyValue> = all
        .iter()
        .flat_map(|s| {
            s.attributes
                .iter()
                .chain(s.events.iter().flat_map(|e| &e.attributes))
        })
        .filter(|kv| {
            let v = kv.value.as_str();
            v.contains(KARI_NIN) || v.to_lowercase().contains("personidentifier")
        })
        .collect();
    assert!(
        leaked.is_empty(),
        "identity numbers in span attributes or events: {leaked:?}"
    );

    app.teardown().await;
}

fn random_trace_id() -> TraceId {
    TraceId::from_bytes(Uuid::new_v4().into_bytes())
}

fn random_span_id() -> SpanId {
    SpanId::from_bytes(Uuid::new_v4().into_bytes()[..8].try_into().unwrap())
}
