//! The README's walk-through, with the real binary: `publish` the demo events, then `desired`.

use std::path::Path;
use std::process::Output;

use serde_json::{Value, json};
use tokio::process::Command;

use altinn_sync::state;

use crate::common::{TestApp, WAIT};

const DEMO: &str = "schemas/examples/demo";
const FIRM: &str = "912345610";
const KARI: &str = "3f2c8a1e-6b4d-4e7a-9c1f-0a5b7d2e8c41";
const OLA: &str = "b7e1d9c2-4a3f-4f8e-8d6b-2c9a1e0f7b53";
/// Kari's party in `deploy/sim/demo-world.json`.
const KARI_PARTY: &str = "0b0f1c2d-0000-4000-8000-000000000201";

/// Runs the binary against the test's database and broker; fails the test if it fails.
pub(crate) async fn cli(app: &TestApp, args: &[&str]) -> Output {
    cli_with(app, &[], args).await
}

/// The binary with `env` on top of the test's database and broker, as after an `export`.
async fn cli_with(app: &TestApp, env: &[(String, String)], args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_altinn-sync"))
        .args(args)
        .env("DATABASE_URL", &app.settings.db.database_url)
        .env("AMQP_URL", &app.settings.broker.amqp_url)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .await
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "altinn-sync {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

async fn publish(app: &TestApp, file: &str) {
    let event: Value =
        serde_json::from_slice(&std::fs::read(Path::new(DEMO).join(file)).unwrap()).unwrap();
    let path = format!("{DEMO}/{file}");
    let exchange = app.topology.events_exchange.clone();
    let key = event["event_type"].as_str().unwrap();
    cli(
        app,
        &[
            "publish",
            "--exchange",
            &exchange,
            "--routing-key",
            key,
            &path,
        ],
    )
    .await;
}

async fn desired_json(app: &TestApp) -> Value {
    let out = cli(app, &["desired", "--firm", FIRM, "--json"]).await;
    serde_json::from_slice(&out.stdout).expect("desired --json prints JSON")
}

#[tokio::test]
async fn the_readme_walk_through_works_with_the_binary() {
    let mut app = TestApp::spawn().await;
    publish(&app, "01-kari-role-changed.json").await;
    publish(&app, "02-kari-client-assigned.json").await;
    app.barrier().await;
    assert_eq!(
        desired_json(&app).await,
        json!([{"employee_id": KARI, "client_org_number": "998877660",
                "package": "regnskapsforer-med-signeringsrettighet"}])
    );

    publish(&app, "03-ola-role-changed.json").await;
    publish(&app, "04-project-accountant-to-ola.json").await;
    publish(&app, "05-kari-client-removed.json").await;
    app.barrier().await;
    assert_eq!(
        desired_json(&app).await,
        json!([{"employee_id": OLA, "client_org_number": "998877660",
                "package": "regnskapsforer-lonn"}])
    );

    let text = cli(&app, &["desired", "--firm", FIRM]).await;
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.starts_with("EMPLOYEE_ID"), "{text}");
    assert!(
        text.contains(OLA) && text.contains("regnskapsforer-lonn"),
        "{text}"
    );
    app.teardown().await;
}

#[tokio::test]
async fn a_changed_role_mapping_rebuilds_the_desired_grants_at_start_up() {
    let mut app = TestApp::spawn().await;
    publish(&app, "01-kari-role-changed.json").await;
    publish(&app, "02-kari-client-assigned.json").await;
    app.barrier().await;
    app.stop_worker().await;

    app.settings.housekeeping.role_mapping = "AccountantWithSigningRights=regnskapsforer-lonn"
        .parse()
        .unwrap();
    app.start_worker().await;
    app.barrier().await;
    assert_eq!(
        desired_json(&app).await,
        json!([{"employee_id": KARI, "client_org_number": "998877660",
                "package": "regnskapsforer-lonn"}])
    );
    app.assert_desired_consistent().await;
    app.teardown().await;
}

#[tokio::test]
async fn explain_tells_support_why_access_is_there_or_missing() {
    let mut app = TestApp::spawn().await;
    for file in [
        "01-kari-role-changed.json",
        "02-kari-client-assigned.json",
        "03-ola-role-changed.json",
        "04-project-accountant-to-ola.json",
        "05-kari-client-removed.json",
    ] {
        publish(&app, file).await;
    }
    app.barrier().await;

    let out = cli(&app, &["explain", "--firm", FIRM, "--employee", KARI]).await;
    let kari = String::from_utf8(out.stdout).unwrap();
    assert!(kari.contains("last name Nordmann"), "{kari}");
    assert!(
        kari.contains("AccountantWithSigningRights -> regnskapsforer-med-signeringsrettighet"),
        "{kari}"
    );
    assert!(
        kari.contains("998877660 Fjordkraft Regnskap AS: removed (sequence 1005"),
        "{kari}"
    );
    assert!(kari.contains("-> no access"), "{kari}");
    assert!(
        !kari.contains("15038512"),
        "never the identity number: {kari}"
    );

    let out = cli(
        &app,
        &["explain", "--firm", FIRM, "--employee", OLA, "--json"],
    )
    .await;
    let ola: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ola["clients"][0]["project_accountant"], json!(true));
    assert_eq!(ola["clients"][0]["assigned"], Value::Null);
    assert_eq!(
        ola["clients"][0]["desired_packages"],
        json!(["regnskapsforer-lonn"])
    );
    assert_eq!(
        ola["roles"]["roles"],
        json!([{"role": "PayrollAccountant", "package": "regnskapsforer-lonn"}])
    );
    assert!(!ola.to_string().contains("national_identity_number"));

    let unknown = "00000000-0000-4000-8000-000000000000";
    let out = cli(&app, &["explain", "--firm", FIRM, "--employee", unknown]).await;
    let nobody = String::from_utf8(out.stdout).unwrap();
    assert!(nobody.contains("Roles: none received"), "{nobody}");
    assert!(nobody.contains("Clients: none"), "{nobody}");
    app.teardown().await;
}

#[tokio::test]
async fn rebuild_desired_applies_a_new_mapping_on_command() {
    let mut app = TestApp::spawn().await;
    publish(&app, "01-kari-role-changed.json").await;
    publish(&app, "02-kari-client-assigned.json").await;
    app.barrier().await;
    app.stop_worker().await;

    let out = Command::new(env!("CARGO_BIN_EXE_altinn-sync"))
        .args(["rebuild-desired"])
        .env("DATABASE_URL", &app.settings.db.database_url)
        .env(
            "ROLE_MAPPING",
            "AccountantWithSigningRights=regnskapsforer-lonn",
        )
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 added, 1 removed"));
    assert_eq!(
        desired_json(&app).await,
        json!([{"employee_id": KARI, "client_org_number": "998877660",
                "package": "regnskapsforer-lonn"}])
    );
    app.assert_desired_consistent().await;
    app.teardown().await;
}

/// The README's "try it": `altinn-sync dev`, then the demo events and `sync` with the binary;
/// access appears in the simulator, and disappears after the client is removed. The user's
/// settings for a real Altinn are ignored (and not echoed), and SIGTERM stops dev cleanly.
#[tokio::test]
async fn dev_lets_a_new_user_watch_access_appear_and_disappear() {
    let app = TestApp::without_worker().await;
    // A user's settings for the real Altinn, which dev must not use.
    let crate::common::dev::Dev {
        child: mut dev,
        mut lines,
        guide: mut stderr,
        sim,
        admin,
        exported,
        token,
    } = crate::common::dev::Dev::start(
        &app,
        &[
            ("ALTINN_BASE_URL", "https://platform.altinn.no"),
            ("MASKINPORTEN_KEY_FILE", "/nonexistent/prod-key.pem"),
        ],
    )
    .await;
    let api_bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let api = |path: String| {
        let (admin, token, bodies) = (admin.clone(), token.clone(), api_bodies.clone());
        async move {
            let res = reqwest::Client::new()
                .get(format!("{admin}/v1/firms/{FIRM}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert!(res.status().is_success(), "GET {path}: {}", res.status());
            let text = res.text().await.unwrap();
            bodies.lock().unwrap().push(text.clone());
            serde_json::from_str::<Value>(&text).unwrap()
        }
    };
    assert_eq!(
        exported.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["DATABASE_URL", "TOPOLOGY_PREFIX", "PUBLISH_EXCHANGE"]
    );
    // The README's commands, after the export line.
    let readme = |args: &'static [&'static str]| {
        let (app, exported) = (&app, &exported);
        async move { cli_with(app, exported, args).await }
    };
    let rest = tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            stderr.push(line);
        }
        stderr
    });
    let delegations = || {
        let url = format!("{sim}/_sim/delegations");
        async move {
            reqwest::get(url)
                .await
                .unwrap()
                .json::<Vec<Value>>()
                .await
                .unwrap()
        }
    };

    readme(&[
        "publish",
        "--routing-key",
        "RoleChanged",
        "schemas/examples/demo/01-kari-role-changed.json",
    ])
    .await;
    readme(&[
        "publish",
        "--routing-key",
        "ClientAssigned",
        "schemas/examples/demo/02-kari-client-assigned.json",
    ])
    .await;
    app.wait_until("Kari's desired grant", || async {
        !state::desired_grants(&app.pool, FIRM)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    assert_eq!(
        delegations().await,
        Vec::<Value>::new(),
        "nothing reaches Altinn before a sync"
    );

    const SYNC: &[&str] = &["sync", "--firm", FIRM];
    readme(SYNC).await;
    app.wait_until("access to appear in the simulator", || async {
        !delegations().await.is_empty()
    })
    .await;
    let held = delegations().await;
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["firmOrgNumber"], FIRM);
    assert_eq!(held[0]["agentParty"], KARI_PARTY, "Kari is the agent");
    assert_eq!(
        held[0]["packages"],
        json!(["urn:altinn:accesspackage:regnskapsforer-med-signeringsrettighet"])
    );
    // The README's curl walk-through: the same answers through the admin API.
    let status = api("/status".into()).await;
    assert!(status["last_sync"]["handled_at"].is_string(), "{status}");
    let explained = api(format!("/employees/{KARI}/explain")).await;
    let verdict = explained["verdict"].as_str().unwrap();
    assert!(
        verdict.starts_with("has regnskapsforer-med-signeringsrettighet for 998877660 since "),
        "{verdict}"
    );

    readme(&[
        "publish",
        "--routing-key",
        "ClientRemoved",
        "schemas/examples/demo/05-kari-client-removed.json",
    ])
    .await;
    readme(SYNC).await;
    app.wait_until("access to disappear from the simulator", || async {
        delegations().await.is_empty()
    })
    .await;
    let explained = readme(&["explain", "--firm", FIRM, "--employee", KARI]).await;
    let explained = String::from_utf8(explained.stdout).unwrap();
    // The CLI mirror prints what the API serves.
    let printed = |out: Output| String::from_utf8(out.stdout).unwrap();
    let status = printed(readme(&["status", "--firm", FIRM]).await);
    assert!(
        status.contains("0 waiting, 0 in flight, 0 parked"),
        "{status}"
    );
    let plan = printed(readme(&["plan", "--firm", FIRM]).await);
    assert!(
        plan.contains("0 grants, 0 revokes, 0 staged revokes"),
        "{plan}"
    );
    let audit = printed(readme(&["audit", "--firm", FIRM]).await);
    assert_eq!(
        audit.matches(" delivered ").count(),
        2,
        "a grant and a revoke: {audit}"
    );
    let audit_json: Value =
        serde_json::from_str(&printed(readme(&["audit", "--firm", FIRM, "--json"]).await)).unwrap();
    assert_eq!(
        audit_json,
        api("/audit".into()).await,
        "the CLI and the API agree"
    );
    for text in api_bodies
        .lock()
        .unwrap()
        .iter()
        .chain([&status, &plan, &audit])
    {
        assert!(!text.contains("15038512363"), "no identity number: {text}");
    }
    assert!(
        explained.contains("998877660") && explained.contains("removed"),
        "{explained}"
    );
    assert!(
        !explained.contains("15038512363"),
        "explain never prints the identity number"
    );

    let status = Command::new("kill")
        .arg("-TERM")
        .arg(dev.id().unwrap().to_string())
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(WAIT, dev.wait())
        .await
        .expect("dev stops in time after SIGTERM")
        .unwrap();
    assert!(exit.success(), "dev exits 0 on SIGTERM, got {exit}");

    let stderr = rest.await.unwrap().join("\n");
    for nin in ["15038512363", "02078545642"] {
        assert!(
            !stderr.contains(nin),
            "dev's whole log carries no identity number"
        );
    }
    assert!(!stderr.contains(&token), "the admin token is never logged");
    assert!(
        stderr.contains("ALTINN_BASE_URL, MASKINPORTEN_KEY_FILE"),
        "dev says which settings it ignores: {stderr}"
    );
    assert!(
        !stderr.contains("platform.altinn.no") && !stderr.contains("prod-key"),
        "dev does not echo the ignored values: {stderr}"
    );
    for step in [
        "--routing-key RoleChanged",
        "schemas/examples/demo/05-kari-client-removed.json",
        &format!("altinn-sync sync --firm {FIRM}\n"),
        &format!("curl -s {sim}/_sim/delegations"),
    ] {
        assert!(stderr.contains(step), "the guide shows {step:?}: {stderr}");
    }
    app.teardown().await;
}
