//! What the tests do to a running app: publish AdminFlow's events and the commands, and wait
//! for the worker to have handled them.

use std::path::Path;

use altinn_sync::altinn::AltinnSettings;
use altinn_sync::sync::FlushSettings;
use serde_json::{Value, json};
use uuid::Uuid;

use super::TestApp;
use super::altinn::{ClientsAltinn, FIRM, SIGNING, STRANGER};
use super::workload::{FirmEvents, Person};

/// A fresh app whose worker flushes to `altinn`.
pub async fn flushing_app(altinn: &AltinnSettings) -> TestApp {
    let mut app = TestApp::without_worker().await;
    app.settings.altinn = altinn.clone();
    app.start_worker().await;
    app
}

/// A fresh app whose worker flushes to `altinn` with `flush` adjusted first.
pub async fn app_with(altinn: &AltinnSettings, flush: impl FnOnce(&mut FlushSettings)) -> TestApp {
    let mut app = TestApp::without_worker().await;
    app.settings.altinn = altinn.clone();
    flush(&mut app.settings.flush);
    app.start_worker().await;
    app
}

pub fn demo(file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas/examples/demo")
        .join(file);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

pub async fn publish_demo(app: &TestApp, file: &str) -> Value {
    let event = demo(file);
    app.publish_event(&event).await;
    event
}

/// Publishes `events` and returns the last one's sequence.
pub async fn publish(app: &TestApp, events: Vec<Value>) -> i64 {
    let mut last = 0;
    for e in events {
        last = e["sequence"].as_i64().unwrap();
        app.publish_event(&e).await;
    }
    last
}

pub async fn sync_now(app: &TestApp, after_sequence: i64) {
    sync_now_for(app, FIRM, after_sequence).await;
}

pub async fn sync_now_for(app: &TestApp, firm: &str, after_sequence: i64) {
    let command = json!({
        "command_id": Uuid::new_v4(), "command_type": "SyncNow",
        "requested_at": "2026-11-24T08:00:00Z", "requested_by": "admin@firm.example",
        "firm": {"org_number": firm}, "after_sequence": after_sequence
    });
    app.publish_command(&command).await;
}

/// Waits until `commands` commands are recorded and handled and no change is pending.
pub async fn flushed(app: &TestApp, commands: i64) {
    let pool = app.pool.clone();
    app.wait_until("the flush", || {
        let pool = pool.clone();
        async move {
            let (recorded, unhandled, pending): (i64, i64, i64) = sqlx::query_as(
                r#"SELECT (SELECT count(*) FROM commands),
                          (SELECT count(*) FROM commands WHERE handled_at IS NULL),
                          (SELECT count(*) FROM outbox WHERE status = 'pending')"#,
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            recorded == commands && unhandled == 0 && pending == 0
        }
    })
    .await;
}

/// Waits until `commands` commands are recorded and handled (planned), whatever is on its way.
pub async fn commands_handled(app: &TestApp, commands: i64) {
    app.wait_until("the sync-nows planned", || async {
        app.count("SELECT count(*) FROM commands WHERE handled_at IS NOT NULL")
            .await
            == commands
    })
    .await;
}

/// Kari, accountant with signing rights, assigned to the demo client and synced: she holds the
/// package in Altinn.
pub async fn kari_granted(app: &TestApp) {
    publish_demo(app, "01-kari-role-changed.json").await;
    publish_demo(app, "02-kari-client-assigned.json").await;
    sync_now(app, 1002).await;
    flushed(app, 1).await;
}

/// Kari with signing rights on clients `0..h`, synced: H = h.
pub async fn kari_granted_on(
    app: &TestApp,
    altinn: &ClientsAltinn,
    kari: &Person,
    h: usize,
) -> FirmEvents {
    let mut events = FirmEvents::new(FIRM);
    let mut batch = vec![events.role_changed(kari, &[SIGNING])];
    for (_, org) in &altinn.clients[..h] {
        batch.push(events.client_assigned(kari, org));
    }
    let last = publish(app, batch).await;
    sync_now(app, last).await;
    flushed(app, 1).await;
    assert_eq!(applied(app).await, i64::try_from(h).unwrap());
    events
}

/// Removes Kari from clients `range` and syncs, as the `commands`th command.
pub async fn remove(
    app: &TestApp,
    altinn: &ClientsAltinn,
    events: &mut FirmEvents,
    kari: &Person,
    range: std::ops::Range<usize>,
    commands: i64,
) {
    let batch = altinn.clients[range]
        .iter()
        .map(|(_, org)| events.client_removed(kari, org))
        .collect();
    let last = publish(app, batch).await;
    sync_now(app, last).await;
    flushed(app, commands).await;
}

async fn applied(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM applied_grants").await
}

/// Kari on the demo client and on the one that has not registered the firm, then a sync-now.
pub async fn kari_on_both_clients_synced(app: &TestApp) {
    publish_demo(app, "01-kari-role-changed.json").await;
    let mut stranger = publish_demo(app, "02-kari-client-assigned.json").await;
    stranger["event_id"] = json!(Uuid::new_v4());
    stranger["sequence"] = json!(1003);
    stranger["data"]["client"]["org_number"] = json!(STRANGER);
    app.publish_event(&stranger).await;
    sync_now(app, 1003).await;
    flushed(app, 1).await;
}
