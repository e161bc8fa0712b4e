//! The admin listener: health, metrics and the /v1 API, over HTTP against a running worker.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::altinn::{CLIENT, DemoAltinn, FIRM, KARI, UNAPPROVED};
use crate::common::steps::{commands_handled, flushed, kari_granted, publish_demo, sync_now};
use crate::common::{TestApp, logs};

pub(crate) const OPS_TOKEN: &str = "ops-token-for-every-firm";
const CLIENT_TOKEN: &str = "token-scoped-to-another-firm";
const READ_TOKEN: &str = "read-only-token-for-every-firm";
/// The identity numbers the demo events and the simulator carry.
const NINS: [&str; 2] = ["15038512363", "02078545642"];

/// A token file (mode 0600) with a token for every firm and one for another firm only.
pub(crate) fn tokens_file() -> PathBuf {
    let line =
        |name: &str, token: &str, scope: &str| format!("{name} {} {scope}\n", sha256_hex(token));
    let path = std::env::temp_dir().join(format!("admin-tokens-{}", Uuid::new_v4().simple()));
    let text = format!(
        "# test tokens\n{}\n{}\n{}",
        line("support", OPS_TOKEN, "*"),
        line("other-firm", CLIENT_TOKEN, CLIENT),
        line("dashboard", READ_TOKEN, "* read")
    );
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn sha256_hex(token: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

struct Http {
    base: String,
    client: reqwest::Client,
    /// Every body received, to check that no identity number was ever served.
    seen: std::sync::Mutex<Vec<String>>,
}

impl Http {
    fn new(addr: SocketAddr) -> Self {
        Self {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            seen: std::sync::Mutex::default(),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, String, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let content_type = res
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let text = res.text().await.unwrap();
        self.seen.lock().unwrap().push(text.clone());
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, content_type, json)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (status, _, json) = self.call(Method::GET, path, Some(OPS_TOKEN), None).await;
        (status, json)
    }
}

/// An app flushing to the simulator, with the token file, and Kari's access delivered.
async fn admin_app(altinn: &DemoAltinn) -> (TestApp, Http) {
    let mut app = TestApp::without_worker().await;
    app.settings.altinn = altinn.settings.clone();
    app.settings.admin.admin_tokens_file = Some(tokens_file());
    app.start_worker().await;
    let http = Http::new(app.admin.unwrap());
    (app, http)
}

fn assert_problem(what: &str, got: &(StatusCode, String, Value), want: StatusCode) {
    let (status, content_type, body) = got;
    assert_eq!(*status, want, "{what}: {body}");
    assert_eq!(content_type, "application/problem+json", "{what}");
    assert!(
        body["title"].is_string() && body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{what}: a problem with a title and a detail: {body}"
    );
    assert_eq!(body["status"], want.as_u16(), "{what}");
}

async fn call_at(
    http: &Http,
    method: &Method,
    route: &str,
    org: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, String, Value) {
    let path = format!("/v1/firms/{org}{route}");
    http.call(method.clone(), &path, token, body).await
}

#[tokio::test]
async fn every_route_checks_the_token_the_input_the_scope_and_the_firm_in_that_order() {
    let altinn = DemoAltinn::start().await;
    let (app, http) = admin_app(&altinn).await;
    publish_demo(&app, "01-kari-role-changed.json").await;
    publish_demo(&app, "02-kari-client-assigned.json").await;
    sync_now(&app, 1002).await;
    flushed(&app, 1).await;
    let command: Uuid = sqlx::query_scalar("SELECT command_id FROM commands")
        .fetch_one(&app.pool)
        .await
        .unwrap();

    let routes: Vec<(Method, String, Option<&str>)> = vec![
        (Method::GET, "/status".into(), None),
        (Method::GET, format!("/syncs/{command}"), None),
        (Method::GET, format!("/employees/{KARI}/explain"), None),
        (Method::GET, "/plan".into(), None),
        (Method::POST, "/sync".into(), Some("{}")),
        (Method::GET, "/parked".into(), None),
        (Method::POST, "/parked/retry".into(), None),
        (Method::GET, "/staged".into(), None),
        (
            Method::POST,
            "/staged/approve".into(),
            Some(r#"{"ids": []}"#),
        ),
        (
            Method::POST,
            "/staged/reject".into(),
            Some(r#"{"ids": []}"#),
        ),
        (Method::GET, "/audit?limit=10".into(), None),
    ];
    for (method, route, body) in &routes {
        let call = |org: &'static str, token: Option<&'static str>| {
            call_at(&http, method, route, org, token, *body)
        };
        let what = |case: &str| format!("{method} {route}: {case}");
        assert_problem(
            &what("no token"),
            &call(FIRM, None).await,
            StatusCode::UNAUTHORIZED,
        );
        assert_problem(
            &what("a wrong token"),
            &call(FIRM, Some("not-a-token")).await,
            StatusCode::UNAUTHORIZED,
        );
        assert_problem(
            &what("a wrong token and a bad firm: 401 first"),
            &call("12345678", Some("not-a-token")).await,
            StatusCode::UNAUTHORIZED,
        );
        assert_problem(
            &what("a malformed organisation number"),
            &call("12345678", Some(OPS_TOKEN)).await,
            StatusCode::BAD_REQUEST,
        );
        assert_problem(
            &what("another firm's token and a bad firm: 400 before 403"),
            &call("98765432X", Some(CLIENT_TOKEN)).await,
            StatusCode::BAD_REQUEST,
        );
        assert_problem(
            &what("a token of another firm"),
            &call(FIRM, Some(CLIENT_TOKEN)).await,
            StatusCode::FORBIDDEN,
        );
        assert_problem(
            &what("a firm never seen"),
            &call(UNAPPROVED, Some(OPS_TOKEN)).await,
            StatusCode::NOT_FOUND,
        );
        let (status, content_type, json) = call(FIRM, Some(OPS_TOKEN)).await;
        assert!(
            status.is_success(),
            "{}: {status} {json}",
            what("a good request")
        );
        assert_eq!(content_type, "application/json", "{}", what("JSON"));
    }

    // Bad parameters, route by route.
    let f = format!("/v1/firms/{FIRM}");
    for (method, path, body) in [
        (Method::GET, format!("{f}/syncs/not-a-uuid"), None),
        (Method::GET, format!("{f}/employees/42/explain"), None),
        (Method::GET, format!("{f}/audit?limit=0"), None),
        (Method::GET, format!("{f}/audit?limit=ten"), None),
        (Method::GET, format!("{f}/audit?client=123"), None),
        (
            Method::POST,
            format!("{f}/sync"),
            Some(r#"{"after_sequence": "soon"}"#),
        ),
        (Method::POST, format!("{f}/sync"), Some("not json")),
        (
            Method::POST,
            format!("{f}/parked/retry"),
            Some(r#"{"idd": 1}"#),
        ),
        (
            Method::POST,
            format!("{f}/staged/approve"),
            Some(r#"{"ids": "all"}"#),
        ),
        // What the document forbids is refused: a null or non-object body, a selection that
        // is not exactly one of ids and all: true, an id not in its hyphenated form, a
        // `before` below 1.
        (Method::POST, format!("{f}/sync"), Some("null")),
        (Method::POST, format!("{f}/parked/retry"), Some("[1]")),
        (
            Method::POST,
            format!("{f}/staged/approve"),
            Some(r#"{"all": false}"#),
        ),
        (
            Method::POST,
            format!("{f}/staged/reject"),
            Some(r#"{"all": true, "ids": [1]}"#),
        ),
        (
            Method::GET,
            format!("{f}/syncs/{}", Uuid::nil().simple()),
            None,
        ),
        (Method::GET, format!("{f}/audit?before=0"), None),
        // Identity numbers where they do not belong: refused, and never echoed (checked below).
        (Method::GET, format!("/v1/firms/{}/status", NINS[0]), None),
        (
            Method::POST,
            format!("{f}/parked/retry"),
            Some(r#"{"id":"15038512363"}"#),
        ),
        (
            Method::POST,
            format!("{f}/sync"),
            Some(r#"{"after_sequence": "02078545642"}"#),
        ),
        (Method::GET, format!("{f}/audit?client=15038512363"), None),
        // Path parameters that percent-decode to bytes that are not UTF-8: axum refuses them
        // before the handler, in plain text, unless the router makes that a problem too.
        (Method::GET, "/v1/firms/%FF/status".to_owned(), None),
        (Method::GET, format!("{f}/syncs/%FF%FE"), None),
    ] {
        let got = http
            .call(method.clone(), &path, Some(OPS_TOKEN), body)
            .await;
        assert_problem(
            &format!("{method} {path} {body:?}"),
            &got,
            StatusCode::BAD_REQUEST,
        );
    }
    let huge = format!(r#"{{"ids": [{}]}}"#, vec!["1"; 20_000].join(","));
    let got = http
        .call(
            Method::POST,
            &format!("{f}/staged/approve"),
            Some(OPS_TOKEN),
            Some(&huge),
        )
        .await;
    assert_problem("a body over 16 KiB", &got, StatusCode::PAYLOAD_TOO_LARGE);
    let got = http
        .call(
            Method::DELETE,
            &format!("{f}/status"),
            Some(OPS_TOKEN),
            None,
        )
        .await;
    assert_problem(
        "a method the route lacks",
        &got,
        StatusCode::METHOD_NOT_ALLOWED,
    );
    let got = http
        .call(Method::GET, &format!("{f}/sync"), Some(OPS_TOKEN), None)
        .await;
    assert_problem("GET on a POST route", &got, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _, json) = http
        .call(
            Method::POST,
            &format!("{f}/parked/retry"),
            Some(OPS_TOKEN),
            Some(r#"{"id": 7.0}"#),
        )
        .await;
    assert_eq!(
        (status, json),
        (StatusCode::OK, json!({"count": 0})),
        "a whole number written as 7.0 is an integer, as JSON Schema says"
    );
    let unknown_sync = http
        .call(
            Method::GET,
            &format!("{f}/syncs/{}", Uuid::new_v4()),
            Some(OPS_TOKEN),
            None,
        )
        .await;
    assert_problem(
        "a sync never requested",
        &unknown_sync,
        StatusCode::NOT_FOUND,
    );

    // The settings page's story: start a sync, follow it to its outcome.
    let (status, _, accepted) = http
        .call(Method::POST, &format!("{f}/sync"), Some(OPS_TOKEN), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let id = accepted["command_id"].as_str().unwrap().to_owned();
    commands_handled(&app, 3).await;
    let (status, summary) = http.get(&format!("{f}/syncs/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        summary["requested_by"], "support",
        "the token's name is who asked"
    );
    assert!(summary["handled_at"].is_string(), "{summary}");
    let (_, first) = http.get(&format!("{f}/syncs/{command}")).await;
    assert_eq!(
        (first["planned"].as_i64(), first["delivered"].as_i64()),
        (Some(1), Some(1)),
        "the first sync planned and delivered Kari's grant: {first}"
    );
    let (_, status_now) = http.get(&format!("{f}/status")).await;
    for count in [
        "pending",
        "in_flight",
        "parked",
        "staged_revokes",
        "held_revokes",
        "dead_letters",
    ] {
        assert!(
            status_now[count].is_i64(),
            "{count} is a number: {status_now}"
        );
    }
    assert!(status_now["paused"].is_null() && status_now["on_hold"].is_null());
    assert_eq!(status_now["last_sync"]["command_type"], "SyncNow");

    let metrics = reqwest::get(format!("{}/metrics", http.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        "altinn_sync_deliveries_total{action=\"grant\",outcome=\"delivered\"}",
        "altinn_sync_commands_total{type=\"SyncNow\",outcome=\"handled\"}",
    ] {
        let n: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{series} ")))
            .unwrap_or_else(|| panic!("{series} in /metrics"))
            .parse()
            .unwrap();
        assert!(n >= 1.0, "{series} counted Kari's delivery and its sync");
    }

    let (_, audit) = http.get(&format!("{f}/audit?limit=1")).await;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 1);
    assert_eq!(audit["entries"][0]["outcome"], "delivered");
    assert!(audit["next_before"].is_null(), "one entry in all: {audit}");

    let served = http.seen.lock().unwrap().join("\n");
    for nin in NINS {
        assert!(
            !served.contains(nin),
            "the API never serves an identity number"
        );
    }
    app.teardown().await;
}

#[tokio::test]
async fn explain_says_where_each_package_is_in_plain_words() {
    let mut logs = logs::subscribe();
    let altinn = DemoAltinn::start().await;
    let (app, http) = admin_app(&altinn).await;
    let explain = format!("/v1/firms/{FIRM}/employees/{KARI}/explain");
    let package = |e: &Value| e["clients"][0]["packages"][0].clone();

    publish_demo(&app, "01-kari-role-changed.json").await;
    publish_demo(&app, "02-kari-client-assigned.json").await;
    app.wait_until("Kari's grant is desired", || async {
        app.count("SELECT count(*) FROM desired_grants").await == 1
    })
    .await;
    let (_, e) = http.get(&explain).await;
    assert_eq!(package(&e)["state"], "waiting_for_sync", "{e}");
    assert_eq!(
        e["verdict"],
        format!(
            "will be granted regnskapsforer-med-signeringsrettighet for {CLIENT} at the next sync"
        )
    );
    assert_eq!(
        e["roles"]["roles"][0]["package"],
        "regnskapsforer-med-signeringsrettighet"
    );

    altinn.sim.close_gate();
    sync_now(&app, 1002).await;
    altinn.sim.held_at_gate(1).await;
    let (_, e) = http.get(&explain).await;
    assert_eq!(package(&e)["state"], "on_its_way", "{e}");

    altinn.sim.open_gate();
    flushed(&app, 1).await;
    let (_, e) = http.get(&explain).await;
    assert_eq!(package(&e)["state"], "has_access", "{e}");
    let verdict = e["verdict"].as_str().unwrap();
    assert!(
        verdict.starts_with(&format!(
            "has regnskapsforer-med-signeringsrettighet for {CLIENT} since 20"
        )),
        "{verdict}"
    );

    publish_demo(&app, "05-kari-client-removed.json").await;
    app.wait_until("Kari's grant is no longer desired", || async {
        app.count("SELECT count(*) FROM desired_grants").await == 0
    })
    .await;
    let (_, e) = http.get(&explain).await;
    assert_eq!(package(&e)["state"], "removal_waiting_for_sync", "{e}");

    altinn.sim.close_gate();
    sync_now(&app, 1005).await;
    altinn.sim.held_at_gate(1).await;
    let (_, e) = http.get(&explain).await;
    assert_eq!(package(&e)["state"], "removal_on_its_way", "{e}");
    altinn.sim.open_gate();
    flushed(&app, 2).await;
    let (_, e) = http.get(&explain).await;
    assert_eq!(
        e["verdict"], "has no Altinn access: nothing is wanted for the employee's clients",
        "{e}"
    );

    // Not one log line of the whole test process carried an identity number.
    let served = http.seen.lock().unwrap().join("\n");
    for nin in NINS {
        assert!(
            !served.contains(nin),
            "the API never serves an identity number"
        );
    }
    let mut lines = 0;
    while let Ok(line) = logs.try_recv() {
        lines += 1;
        for nin in NINS {
            assert!(
                !line.contains(nin),
                "a log line carried an identity number: {line}"
            );
        }
    }
    assert!(lines > 0, "the worker logged while it ran");
    app.teardown().await;
}

#[tokio::test]
async fn the_kill_switch_holds_revokes_and_explain_says_so() {
    let altinn = DemoAltinn::start().await;
    let mut app = TestApp::without_worker().await;
    app.settings.altinn = altinn.settings.clone();
    app.settings.admin.admin_tokens_file = Some(tokens_file());
    app.settings.flush.revokes_enabled = false;
    app.start_worker().await;
    let http = Http::new(app.admin.unwrap());
    kari_granted(&app).await;
    publish_demo(&app, "05-kari-client-removed.json").await;
    sync_now(&app, 1005).await;
    commands_handled(&app, 2).await;

    let (_, status) = http.get(&format!("/v1/firms/{FIRM}/status")).await;
    assert_eq!(status["held_revokes"], 1, "{status}");
    assert_eq!(
        status["pending"], 0,
        "a held revoke is not pending: {status}"
    );
    let (_, e) = http
        .get(&format!("/v1/firms/{FIRM}/employees/{KARI}/explain"))
        .await;
    let p = &e["clients"][0]["packages"][0];
    assert_eq!(p["state"], "removal_held", "{e}");
    assert!(
        p["reason"].as_str().unwrap().contains("REVOKES_ENABLED"),
        "{p}"
    );
    assert_eq!(
        altinn.delegations().await.len(),
        1,
        "Kari still holds her access in Altinn"
    );

    // Switched back on, the held revoke goes out with no further command.
    app.stop_worker().await;
    app.settings.flush.revokes_enabled = true;
    app.start_worker().await;
    flushed(&app, 2).await;
    assert!(altinn.delegations().await.is_empty());
    app.teardown().await;
}

#[tokio::test]
async fn health_readiness_and_metrics_answer_without_a_token() {
    let mut app = TestApp::spawn().await;
    app.barrier().await;
    let http = Http::new(app.admin.unwrap());
    let (status, _, live) = http.call(Method::GET, "/healthz", None, None).await;
    assert_eq!((status, &live["status"]), (StatusCode::OK, &json!("ok")));
    // The barrier went through the consumers, so they are attached.
    let (status, _, ready) = http.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["down"], json!([]));

    let text = reqwest::get(format!("{}/metrics", http.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        "altinn_sync_events_total{outcome=\"applied\"}",
        "altinn_sync_events_total{outcome=\"duplicate\"}",
        "altinn_sync_events_total{outcome=\"dead_lettered\"}",
        "altinn_sync_commands_total{type=\"SyncNow\",outcome=\"handled\"}",
        "altinn_sync_commands_total{type=\"NightlyReconcile\",outcome=\"failed\"}",
        "altinn_sync_batch_duration_seconds_bucket",
        "altinn_sync_outbox_rows{status=\"pending\"}",
        "altinn_sync_outbox_rows{status=\"in_flight\"}",
        "altinn_sync_outbox_rows{status=\"parked\"}",
        "altinn_sync_outbox_rows{status=\"staged\"}",
        "altinn_sync_outbox_oldest_pending_seconds",
        "altinn_sync_deliveries_total{action=\"revoke\",outcome=\"parked\"}",
        "altinn_sync_firms_paused",
        "altinn_sync_last_reconcile_timestamp_seconds",
        "altinn_sync_drift_grants_total{kind=\"missing\"}",
        "altinn_sync_drift_grants_total{kind=\"extra\"}",
        "altinn_sync_ready",
        "altinn_sync_oldest_pause_seconds",
        "altinn_sync_setup_error",
        "altinn_sync_dead_letters",
    ] {
        assert!(text.contains(series), "/metrics lacks {series}:\n{text}");
    }
    let applied: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("altinn_sync_events_total{outcome=\"applied\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(applied >= 1.0, "the barrier event was counted");
    assert!(!text.contains("quantile="), "histograms, not summaries");
    app.teardown().await;
}

#[tokio::test]
async fn without_a_token_file_every_v1_route_answers_401_and_the_document_is_committed() {
    let mut app = TestApp::spawn().await;
    app.barrier().await;
    let http = Http::new(app.admin.unwrap());
    let got = http
        .call(
            Method::GET,
            &format!("/v1/firms/{FIRM}/status"),
            Some(OPS_TOKEN),
            None,
        )
        .await;
    assert_problem("no ADMIN_TOKENS_FILE", &got, StatusCode::UNAUTHORIZED);

    let served = reqwest::get(format!("{}/openapi.json", http.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let committed = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/admin-api.openapi.json"),
    )
    .unwrap();
    assert_eq!(
        served.trim(),
        committed.trim(),
        "schemas/admin-api.openapi.json is out of date: run \
         `cargo run -- openapi > schemas/admin-api.openapi.json`"
    );
    let doc: Value = serde_json::from_str(&served).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(doc["paths"].as_object().unwrap().len(), 11);
    let resolve = |value: &Value| -> Value {
        match value["$ref"].as_str() {
            Some(r) => doc.pointer(r.trim_start_matches('#')).unwrap().clone(),
            None => value.clone(),
        }
    };
    let org = resolve(&json!({"$ref": "#/components/parameters/Org"}));
    assert_eq!(org["schema"]["pattern"], "^[0-9]{9}$", "{org}");
    assert!(org["description"].as_str().unwrap().contains("MOD11"));
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let what = format!("{method} {path}");
            let errors: Vec<&String> = operation["responses"]
                .as_object()
                .unwrap()
                .keys()
                .filter(|status| !status.starts_with('2'))
                .collect();
            // The dry run alone may find the firm being planned by a sync (409).
            let want: &[&str] = if path.ends_with("/plan") {
                &[
                    "400", "401", "403", "404", "408", "409", "413", "429", "503",
                ]
            } else {
                &["400", "401", "403", "404", "408", "413", "429", "503"]
            };
            assert_eq!(errors, want, "{what}: every error status the API answers");
            for status in errors {
                let response = resolve(&operation["responses"][status]);
                let types: Vec<&String> = response["content"].as_object().unwrap().keys().collect();
                assert_eq!(types, ["application/problem+json"], "{what} {status}");
            }
            let parameters = operation["parameters"].as_array().unwrap();
            assert!(
                parameters.iter().any(|p| resolve(p) == org),
                "{what}: org with its pattern"
            );
            for p in parameters.iter().map(resolve) {
                if p["name"].as_str().is_some_and(|n| n.ends_with("_id")) {
                    assert_eq!(p["schema"]["format"], "uuid", "{what}: {p}");
                }
            }
        }
    }
    app.teardown().await;
}

#[tokio::test]
async fn run_refuses_a_world_readable_or_malformed_token_file() {
    let mut app = TestApp::without_worker().await;
    let path = tokens_file();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    app.settings.admin.admin_tokens_file = Some(path.clone());
    app.start_worker().await;
    let refused = app.worker_ended().await.unwrap_err();
    let message = format!("{:#}", anyhow::Error::from(refused));
    assert!(message.contains("readable by every user"), "{message}");

    // Group-readable, as a Kubernetes secret mounted 0440, is fine; a bad line is named.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o440)).unwrap();
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("broken-line-without-a-hash *\n");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::write(&path, text).unwrap();
    app.start_worker().await;
    let refused = app.worker_ended().await.unwrap_err();
    let message = format!("{:#}", anyhow::Error::from(refused));
    assert!(message.contains("line 7"), "{message}");
    assert!(message.contains("2 fields instead of 3"), "{message}");
    app.teardown().await;
}

#[tokio::test]
async fn with_postgres_and_the_broker_down_the_api_answers_503_and_readyz_names_both() {
    use altinn_sync::admin::{self, Health};
    // A port nothing listens on: PostgreSQL is down for real, not mocked.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_secs(1))
        .connect_lazy(&format!("postgres://postgres@127.0.0.1:{port}/none"))
        .unwrap();
    let health = std::sync::Arc::new(Health::default());
    health.set_pool(pool);
    let app = TestApp::without_worker().await;
    let mut settings = app.settings.clone();
    settings.admin.admin_tokens_file = Some(tokens_file());
    let tokens = admin::Tokens::load(settings.admin.admin_tokens_file.as_deref()).unwrap();
    let api = admin::api::Api::new(
        health.clone(),
        tokens,
        settings.mode(),
        &settings.broker,
        &settings.ingest,
        &settings.admin.api,
    );
    let server = admin::Server::bind(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let http = Http::new(server.local_addr());
    let stop = tokio_util::sync::CancellationToken::new();
    let served = tokio::spawn(server.serve(admin::router(health, Some(api)), stop.clone()));

    let got = http
        .call(
            Method::GET,
            &format!("/v1/firms/{FIRM}/status"),
            Some(OPS_TOKEN),
            None,
        )
        .await;
    assert_problem("PostgreSQL down", &got, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _, ready) = http.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready["down"], json!(["postgres", "broker"]));
    let (status, _, _) = http.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK, "waiting out an outage is alive");
    stop.cancel();
    served.await.unwrap().unwrap();

    // PostgreSQL up, RabbitMQ down: a sync cannot be requested, and says so.
    sqlx::query("INSERT INTO firms (org_number, high_water_sequence) VALUES ($1, 0)")
        .bind(FIRM)
        .execute(&app.pool)
        .await
        .unwrap();
    let health = std::sync::Arc::new(Health::default());
    health.set_pool(app.pool.clone());
    health.set_api_pool(app.pool.clone());
    settings.broker.amqp_url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let tokens = admin::Tokens::load(settings.admin.admin_tokens_file.as_deref()).unwrap();
    let api = admin::api::Api::new(
        health.clone(),
        tokens,
        settings.mode(),
        &settings.broker,
        &settings.ingest,
        &settings.admin.api,
    );
    let server = admin::Server::bind(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let http = Http::new(server.local_addr());
    let stop = tokio_util::sync::CancellationToken::new();
    let served = tokio::spawn(server.serve(admin::router(health, Some(api)), stop.clone()));
    let got = http
        .call(
            Method::POST,
            &format!("/v1/firms/{FIRM}/sync"),
            Some(OPS_TOKEN),
            None,
        )
        .await;
    assert_problem("RabbitMQ down", &got, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _, status_now) = http
        .call(
            Method::GET,
            &format!("/v1/firms/{FIRM}/status"),
            Some(OPS_TOKEN),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "reads need only PostgreSQL: {status_now}"
    );
    stop.cancel();
    served.await.unwrap().unwrap();
    app.teardown().await;
}

#[tokio::test]
async fn explain_names_a_refusal_with_altinns_code_and_a_retry_records_who() {
    let altinn = DemoAltinn::start().await;
    let (app, http) = admin_app(&altinn).await;
    crate::common::steps::kari_on_both_clients_synced(&app).await;
    let (_, e) = http
        .get(&format!("/v1/firms/{FIRM}/employees/{KARI}/explain"))
        .await;
    let stranger = e["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_org_number"] == crate::common::altinn::STRANGER)
        .unwrap()["packages"][0]
        .clone();
    assert_eq!(stranger["state"], "refused", "{e}");
    // The worker refused it itself (the client is not the firm's in Altinn): no Altinn code.
    assert!(stranger["code"].is_null(), "{stranger}");
    assert!(
        stranger["reason"]
            .as_str()
            .unwrap()
            .contains("Register of Legal Entities"),
        "{stranger}"
    );
    let verdict = e["verdict"].as_str().unwrap();
    assert!(
        verdict.starts_with(&format!(
            "Altinn refused regnskapsforer-med-signeringsrettighet for {}",
            crate::common::altinn::STRANGER
        )),
        "a refusal comes first in the verdict: {verdict}"
    );
    assert!(verdict.contains(&format!(
        "; has regnskapsforer-med-signeringsrettighet for {CLIENT}"
    )));

    let (_, parked) = http.get(&format!("/v1/firms/{FIRM}/parked")).await;
    let id = parked["parked_changes"][0]["id"].as_i64().unwrap();
    let (status, _, count) = http
        .call(
            Method::POST,
            &format!("/v1/firms/{FIRM}/parked/retry"),
            Some(OPS_TOKEN),
            Some(&format!(r#"{{"id": {id}}}"#)),
        )
        .await;
    assert_eq!((status, count), (StatusCode::OK, json!({"count": 1})));
    let actor: String =
        sqlx::query_scalar("SELECT actor FROM audit WHERE outcome = 'requeued' AND outbox_id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        actor, "support",
        "the retry is audited with the token's name"
    );
    app.teardown().await;
}

#[tokio::test]
async fn explain_gives_altinns_code_for_a_refusal_by_altinn() {
    let altinn = DemoAltinn::start().await;
    let (app, http) = admin_app(&altinn).await;
    // Altinn compares the first four letters of the last name: it cannot match the person.
    for file in ["01-kari-role-changed.json", "02-kari-client-assigned.json"] {
        let mut event = crate::common::steps::demo(file);
        event["data"]["employee"]["last_name"] = json!("Normann");
        app.publish_event(&event).await;
    }
    sync_now(&app, 1002).await;
    flushed(&app, 1).await;
    let (_, e) = http
        .get(&format!("/v1/firms/{FIRM}/employees/{KARI}/explain"))
        .await;
    let p = &e["clients"][0]["packages"][0];
    assert_eq!(p["state"], "refused", "{e}");
    assert_eq!(p["code"], "AM.VLD-00034", "{p}");
    assert!(
        p["reason"]
            .as_str()
            .unwrap()
            .starts_with("the national identity number and last name do not match"),
        "{p}"
    );
    app.teardown().await;
}

#[tokio::test]
async fn explain_says_when_the_worker_sends_nothing_to_altinn() {
    let mut app = TestApp::without_worker().await;
    app.settings.admin.admin_tokens_file = Some(tokens_file());
    app.start_worker().await;
    let http = Http::new(app.admin.unwrap());
    publish_demo(&app, "01-kari-role-changed.json").await;
    publish_demo(&app, "02-kari-client-assigned.json").await;
    app.barrier().await;
    let (_, e) = http
        .get(&format!("/v1/firms/{FIRM}/employees/{KARI}/explain"))
        .await;
    let p = &e["clients"][0]["packages"][0];
    assert_eq!(p["state"], "flush_off", "{e}");
    assert!(
        e["verdict"].as_str().unwrap().contains("is not sent"),
        "{e}"
    );
    let (_, unknown) = http
        .get(&format!(
            "/v1/firms/{FIRM}/employees/{}/explain",
            Uuid::new_v4()
        ))
        .await;
    assert_eq!(
        unknown["verdict"],
        "has no Altinn access: no role has been received from AdminFlow for this employee"
    );
    app.teardown().await;
}

/// Kari granted 12 clients in Altinn, then 11 of them removed at once: at least
/// REVOKE_GUARD_MIN and more than 20 %, so the guard stages all 11 revokes.
async fn eleven_staged_revokes() -> (
    TestApp,
    crate::common::altinn::ClientsAltinn,
    Http,
    crate::common::workload::Person,
) {
    use crate::common::altinn::ClientsAltinn;
    use crate::common::steps::{kari_granted_on, remove};
    use crate::common::workload::Person;
    let kari = Person::new(1);
    let altinn = ClientsAltinn::start(12, &[&kari], &[]).await;
    let mut app = TestApp::without_worker().await;
    app.settings.altinn = altinn.settings.clone();
    app.settings.admin.admin_tokens_file = Some(tokens_file());
    app.start_worker().await;
    let http = Http::new(app.admin.unwrap());
    let mut events = kari_granted_on(&app, &altinn, &kari, 12).await;
    remove(&app, &altinn, &mut events, &kari, 0..11, 2).await;
    (app, altinn, http, kari)
}

/// The ids GET staged lists.
async fn staged_ids(http: &Http) -> Vec<i64> {
    let (_, staged) = http.get(&format!("/v1/firms/{FIRM}/staged")).await;
    staged["staged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_staged_mass_revoke_shows_everywhere_and_is_approved_or_rejected_by_name() {
    let (app, altinn, http, kari) = eleven_staged_revokes().await;

    let f = format!("/v1/firms/{FIRM}");
    let (_, status) = http.get(&format!("{f}/status")).await;
    assert_eq!(status["staged_revokes"], 11, "{status}");
    assert_eq!(status["pending"], 0, "{status}");
    let ids = staged_ids(&http).await;
    assert_eq!(ids.len(), 11);
    let (_, plan) = http.get(&format!("{f}/plan")).await;
    assert_eq!(
        plan["staged_revokes"].as_array().unwrap().len(),
        11,
        "{plan}"
    );
    assert_eq!(plan["revokes"], json!([]), "{plan}");
    let (_, e) = http
        .get(&format!("{f}/employees/{}/explain", kari.id))
        .await;
    let held: Vec<&Value> = e["clients"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["packages"].as_array().unwrap())
        .filter(|p| p["state"] == "removal_held")
        .collect();
    assert_eq!(held.len(), 11, "{e}");
    assert!(
        held[0]["reason"]
            .as_str()
            .unwrap()
            .contains("mass-revoke guard")
    );

    let approve = |ids: &[i64]| {
        let body = json!({"ids": ids}).to_string();
        let http = &http;
        let path = format!("{f}/staged/approve");
        async move {
            http.call(Method::POST, &path, Some(OPS_TOKEN), Some(&body))
                .await
        }
    };
    let (status, _, count) = approve(&ids[..2]).await;
    assert_eq!((status, count), (StatusCode::OK, json!({"count": 2})));
    let (status, _, count) = http
        .call(
            Method::POST,
            &format!("{f}/staged/reject"),
            Some(OPS_TOKEN),
            Some(r#"{"all": true}"#),
        )
        .await;
    assert_eq!((status, count), (StatusCode::OK, json!({"count": 9})));
    crate::common::steps::flushed(&app, 2).await;
    assert_eq!(
        altinn
            .holds(altinn.parties[0], crate::common::altinn::MED)
            .await
            .len(),
        10,
        "the two approved revokes went out; the nine rejected did not"
    );
    let actors: Vec<(String, String)> = sqlx::query_as(
        "SELECT outcome, actor FROM audit WHERE outcome IN ('approved', 'rejected') ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(actors.len(), 11);
    assert!(
        actors.iter().all(|(_, actor)| actor == "support"),
        "{actors:?}"
    );
    app.teardown().await;
}

#[tokio::test]
async fn without_ids_or_all_true_approve_and_reject_decide_nothing_and_say_so() {
    let (app, altinn, http, _) = eleven_staged_revokes().await;
    let f = format!("/v1/firms/{FIRM}");
    let ids = staged_ids(&http).await;
    assert_eq!(ids.len(), 11);

    // An empty body once approved every staged revoke; now it is refused and names both ways.
    for (route, verb) in [("approve", "approved"), ("reject", "rejected")] {
        for body in [None, Some("{}"), Some("  ")] {
            let got = http
                .call(
                    Method::POST,
                    &format!("{f}/staged/{route}"),
                    Some(OPS_TOKEN),
                    body,
                )
                .await;
            let what = format!("POST staged/{route} with {body:?}");
            assert_problem(&what, &got, StatusCode::BAD_REQUEST);
            let detail = got.2["detail"].as_str().unwrap();
            assert!(
                detail.starts_with(&format!("nothing was {verb}"))
                    && detail.contains(r#"{"ids": [...]}"#)
                    && detail.contains(r#"{"all": true}"#),
                "{what}: the answer says nothing was {verb} and how to say which: {detail}"
            );
        }
    }
    assert_eq!(
        staged_ids(&http).await,
        ids,
        "every revoke is still staged: nothing was approved or rejected"
    );
    let decided: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit WHERE outcome IN ('approved', 'rejected')")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(decided, 0, "the audit records no decision");

    // {"all": true} is the explicit way to approve them all.
    let (status, _, count) = http
        .call(
            Method::POST,
            &format!("{f}/staged/approve"),
            Some(OPS_TOKEN),
            Some(r#"{"all": true}"#),
        )
        .await;
    assert_eq!((status, count), (StatusCode::OK, json!({"count": 11})));
    crate::common::steps::flushed(&app, 2).await;
    assert_eq!(
        altinn
            .holds(altinn.parties[0], crate::common::altinn::MED)
            .await
            .len(),
        1,
        "the eleven approved revokes went out; the client Kari kept remains"
    );
    assert!(staged_ids(&http).await.is_empty());
    app.teardown().await;
}

#[tokio::test]
async fn a_dry_run_while_a_sync_plans_the_firm_answers_409_at_once_and_works_after() {
    let altinn = DemoAltinn::start().await;
    let (mut app, http) = admin_app(&altinn).await;
    publish_demo(&app, "01-kari-role-changed.json").await;
    publish_demo(&app, "02-kari-client-assigned.json").await;
    app.barrier().await;

    // A sync's planning holds the firm's lock (plan_flush), here in a transaction of our own.
    let mut planning = app.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('altinn-sync.flush:' || $1, 0))")
        .bind(FIRM)
        .execute(&mut *planning)
        .await
        .unwrap();
    let busy = call_at(&http, &Method::GET, "/plan", FIRM, Some(OPS_TOKEN), None).await;
    assert_problem("a dry run during planning", &busy, StatusCode::CONFLICT);
    assert!(
        busy.2["detail"].as_str().unwrap().contains("try again"),
        "{}",
        busy.2
    );
    planning.rollback().await.unwrap();

    let (status, _, plan) =
        call_at(&http, &Method::GET, "/plan", FIRM, Some(OPS_TOKEN), None).await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["grants"].as_array().unwrap().len(), 1, "{plan}");
    app.teardown().await;
}

/// Persons per round of the flood test, and the clients each is assigned.
const FLOOD_PERSONS: usize = 3;
const FLOOD_CLIENTS: usize = 10;

/// One round of work for ingest and the flush: the round's persons, each with signing rights
/// on every client, published and synced; returns how long until all was delivered.
async fn ingest_and_flush_round(
    app: &TestApp,
    altinn: &crate::common::altinn::ClientsAltinn,
    events: &mut crate::common::workload::FirmEvents,
    persons: &[crate::common::workload::Person],
    round: i64,
) -> std::time::Duration {
    use crate::common::altinn::SIGNING;
    use crate::common::steps::publish;
    let started = std::time::Instant::now();
    let mut batch = Vec::new();
    for p in persons {
        batch.push(events.role_changed(p, &[SIGNING]));
        for (_, client) in &altinn.clients {
            batch.push(events.client_assigned(p, client));
        }
    }
    let last = publish(app, batch).await;
    sync_now(app, last).await;
    flushed(app, round).await;
    started.elapsed()
}

/// Calls of one firm's token in `loops` concurrent loops until `stop`: (answered 200, 503).
async fn flood(
    http: std::sync::Arc<Http>,
    loops: usize,
    stop: tokio_util::sync::CancellationToken,
) -> (u64, u64) {
    let mut tasks = Vec::new();
    for i in 0..loops {
        let (http, stop) = (http.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let routes = ["/plan", "/audit", "/parked", "/staged", "/status"];
            let (mut ok, mut busy) = (0u64, 0u64);
            let mut n = i;
            while !stop.is_cancelled() {
                let path = format!("/v1/firms/{FIRM}{}", routes[n % routes.len()]);
                n += 1;
                let (status, content_type, body) =
                    http.call(Method::GET, &path, Some(OPS_TOKEN), None).await;
                match status {
                    StatusCode::OK => ok += 1,
                    // A dry run while a sync plans the firm, or every API connection busy.
                    StatusCode::CONFLICT | StatusCode::SERVICE_UNAVAILABLE => {
                        assert_eq!(content_type, "application/problem+json", "{body}");
                        busy += 1;
                    }
                    other => panic!("{path}: {other} {body}"),
                }
            }
            (ok, busy)
        }));
    }
    let mut total = (0, 0);
    for t in tasks {
        let (ok, busy) = t.await.unwrap();
        total = (total.0 + ok, total.1 + busy);
    }
    total
}

/// Issue 16, step 9: a flood of one firm's API calls cannot take the connections ingest and
/// the flush need: every round is delivered and no worker connection times out. Quiet and
/// flooded rounds of the same work alternate, and their pace is printed (not yet asserted).
#[tokio::test]
async fn a_flood_of_one_firms_api_calls_leaves_ingest_and_the_flush_their_pace() {
    use crate::common::altinn::ClientsAltinn;
    use crate::common::workload::{FirmEvents, Person};
    const PAIRS: usize = 5;
    let persons: Vec<Person> = (0..2 * PAIRS * FLOOD_PERSONS)
        .map(|n| Person::new(100 + n as u32))
        .collect();
    let altinn =
        ClientsAltinn::start(FLOOD_CLIENTS, &persons.iter().collect::<Vec<_>>(), &[]).await;
    let mut app = TestApp::without_worker().await;
    app.settings.altinn = altinn.settings.clone();
    app.settings.admin.admin_tokens_file = Some(tokens_file());
    app.start_worker().await;
    let http = std::sync::Arc::new(Http::new(app.admin.unwrap()));
    let mut logs = logs::subscribe();
    let mut events = FirmEvents::new(FIRM);
    // The firm known, and the first round's costs (connections, tokens) paid before measuring.
    let mut rounds = persons.chunks(FLOOD_PERSONS);
    ingest_and_flush_round(&app, &altinn, &mut events, rounds.next().unwrap(), 1).await;
    let (mut quiet, mut flooded) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    let mut ratios = Vec::new();
    let mut answered = (0, 0);
    for (i, persons) in rounds.enumerate() {
        let round = i as i64 + 2;
        if i % 2 == 0 {
            let took = ingest_and_flush_round(&app, &altinn, &mut events, persons, round).await;
            quiet += took;
            ratios.push(took.as_secs_f64());
            continue;
        }
        let stop = tokio_util::sync::CancellationToken::new();
        let flooding = tokio::spawn(flood(http.clone(), 12, stop.clone()));
        let took = ingest_and_flush_round(&app, &altinn, &mut events, persons, round).await;
        flooded += took;
        // Each flooded round against the quiet one just before it: the machine's own load
        // (other tests, other builds) drifts slowly, and weighs on both alike.
        if let Some(last) = ratios.last_mut() {
            *last = took.as_secs_f64() / *last;
        }
        stop.cancel();
        let (ok, busy) = flooding.await.unwrap();
        answered = (answered.0 + ok, answered.1 + busy);
    }
    let expected = (persons.len() * FLOOD_CLIENTS) as i64;
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE status = 'delivered'")
            .await,
        expected
    );
    assert!(answered.0 > 0, "the flood was answered: {answered:?}");
    ratios.sort_by(f64::total_cmp);
    let ratio = ratios[ratios.len() / 2];
    eprintln!(
        "flood: quiet {quiet:?}, flooded {flooded:?}, pair ratios {ratios:.2?} (median x{ratio:.2}); \
         API answers: {} ok, {} busy",
        answered.0, answered.1
    );
    // Not asserted yet: on a loaded 2-core machine the flood's own CPU (HTTP, the dry runs in
    // PostgreSQL) slows the rounds by 0.4x to 2.7x from pair to pair, far beyond a 20% band,
    // even with the pools apart. The pools are what this test holds: the log check below.
    // No connection of ingest or the flush timed out (the API's own pool may make it wait).
    while let Ok(line) = logs.try_recv() {
        let workers = line.contains("pool timed out") && !line.contains("admin API");
        assert!(!workers, "{line}");
    }
    app.teardown().await;
}

/// Step 10: a read-only token reads everything its scope allows and changes nothing: every
/// POST is a 403 problem, even with a body that would be accepted. Step 9: the staged list
/// comes a page at a time, and the pages together are the whole list.
#[tokio::test]
async fn a_read_only_token_reads_and_may_not_post_and_staged_comes_in_pages() {
    let (app, _altinn, http, _kari) = eleven_staged_revokes().await;
    let all = staged_ids(&http).await;
    assert_eq!(all.len(), 11);
    let mut paged = Vec::new();
    let mut after: Option<i64> = None;
    loop {
        let query = after.map_or_else(String::new, |a| format!("&after={a}"));
        let (status, _, page) = http
            .call(
                Method::GET,
                &format!("/v1/firms/{FIRM}/staged?limit=4{query}"),
                Some(READ_TOKEN),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let ids: Vec<i64> = page["staged"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_i64().unwrap())
            .collect();
        assert!(ids.len() <= 4, "{page}");
        paged.extend(ids);
        match page["next_after"].as_i64() {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(
        paged, all,
        "the pages together are the list, in order, once each"
    );
    let (status, _, plan) = http
        .call(
            Method::GET,
            &format!("/v1/firms/{FIRM}/plan?limit=5"),
            Some(READ_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["totals"]["staged_revokes"], 11, "{plan}");
    assert_eq!(
        plan["staged_revokes"].as_array().unwrap().len(),
        5,
        "{plan}"
    );
    assert_eq!(plan["next_after"], 5, "{plan}");
    let (status, _, parked) = http
        .call(
            Method::GET,
            &format!("/v1/firms/{FIRM}/parked?limit=1"),
            Some(READ_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{parked}");
    assert_eq!(parked["next_before"], Value::Null, "{parked}");
    for (route, body) in [
        ("/sync", "{}"),
        ("/parked/retry", "{}"),
        ("/staged/approve", r#"{"all": true}"#),
        ("/staged/reject", r#"{"all": true}"#),
    ] {
        let got = call_at(
            &http,
            &Method::POST,
            route,
            FIRM,
            Some(READ_TOKEN),
            Some(body),
        )
        .await;
        assert_problem(route, &got, StatusCode::FORBIDDEN);
        assert!(
            got.2["detail"].as_str().unwrap().contains("read-only"),
            "{}",
            got.2
        );
    }
    assert_eq!(staged_ids(&http).await, all, "nothing was decided");
    assert_eq!(
        app.count("SELECT count(*) FROM commands WHERE requested_by = 'dashboard'")
            .await,
        0
    );
    app.teardown().await;
}

/// Step 10: the API's syncs go out on one held connection and channel, not one per call,
/// and a token that requests more than ADMIN_SYNCS_PER_MINUTE is answered 429 with
/// `Retry-After`.
#[tokio::test]
async fn syncs_share_one_publisher_and_are_rate_limited_per_token() {
    let altinn = DemoAltinn::start().await;
    let mut app = TestApp::without_worker().await;
    app.settings.altinn = altinn.settings.clone();
    app.settings.admin.admin_tokens_file = Some(tokens_file());
    app.settings.admin.api.admin_syncs_per_minute = 2;
    app.start_worker().await;
    let http = Http::new(app.admin.unwrap());
    kari_granted(&app).await;
    let mut logs = logs::subscribe();
    let sync = |token: &'static str| {
        http.client
            .post(format!("{}/v1/firms/{FIRM}/sync", http.base))
            .bearer_auth(token)
            .send()
    };
    for _ in 0..2 {
        assert_eq!(
            sync(OPS_TOKEN).await.unwrap().status(),
            StatusCode::ACCEPTED
        );
    }
    let refused = sync(OPS_TOKEN).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    // Both syncs reached the worker, on the one connection the publisher opened.
    app.wait_until("the API's syncs recorded", || async {
        app.count("SELECT count(*) FROM commands WHERE requested_by = 'support'")
            .await
            == 2
    })
    .await;
    let mut connected = 0;
    while let Ok(line) = logs.try_recv() {
        connected += usize::from(line.contains("command publisher connected"));
    }
    assert_eq!(connected, 1, "one connection for both syncs");
    app.teardown().await;
}
