//! The guard rails across processes: two `run` replicas on one database and broker, and the
//! admin API (served by one of them) or the database as the third party. Whatever one replica
//! or an operator decides, the other obeys.

use std::collections::BTreeSet;

use altinn_sync::sim::Faults;
use altinn_sync::sync;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::process::Child;

use crate::admin_api::{OPS_TOKEN, tokens_file};
use crate::common::TestApp;
use crate::common::altinn::{ClientsAltinn, DemoAltinn, FIRM, MED, SECOND, SIGNING};
use crate::common::steps::{flushed, publish, sync_now, sync_now_for};
use crate::common::workload::{FirmEvents, Person, org_number};
use crate::flush::kari_story_in;
use crate::flush_faults::worker_for;

/// Two `run` replicas with `env` on top; the first serves the admin API, at the address
/// returned, with the test tokens.
fn two_replicas(
    app: &TestApp,
    altinn: &altinn_sync::altinn::AltinnSettings,
    env: &[(&str, &str)],
) -> (Vec<Child>, String) {
    // A free port, for the first replica to bind.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tokens = tokens_file();
    let replicas = (0..2)
        .map(|n| {
            let mut command = worker_for(app, altinn, 30);
            command.envs(env.iter().copied());
            if n == 0 {
                command
                    .env("ADMIN_LISTEN", format!("127.0.0.1:{port}"))
                    .env("ADMIN_TOKENS_FILE", &tokens);
            }
            command.spawn().expect("the worker binary")
        })
        .collect();
    (replicas, format!("http://127.0.0.1:{port}"))
}

/// POSTs `body` to the API with the operator's token: the answer's status and JSON.
async fn post(api: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let res = reqwest::Client::new()
        .post(format!("{api}{path}"))
        .bearer_auth(OPS_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    (res.status(), res.json().await.unwrap())
}

/// Stops the replicas, which must have kept running until now.
async fn stop(replicas: Vec<Child>) {
    for mut replica in replicas {
        assert!(
            replica.try_wait().unwrap().is_none(),
            "a replica ended early"
        );
        replica.kill().await.unwrap();
    }
}

/// Publishes `batch`, waits until the firm wants `desired` grants, then syncs it and waits for
/// the flush, as the `commands`th command.
async fn synced(app: &TestApp, batch: Vec<Value>, desired: usize, commands: i64) {
    let last = publish(app, batch).await;
    ingested(app, FIRM, desired).await;
    sync_now(app, last).await;
    flushed(app, commands).await;
}

/// Waits until `firm` wants `desired` grants: every event published so far is ingested.
async fn ingested(app: &TestApp, firm: &str, desired: usize) {
    app.wait_until("the events ingested", || async {
        app.desired(firm).await.len() == desired
    })
    .await;
}

/// The guard's mechanism on one person's revokes, as `TestApp` sets it.
const GUARD_ON_ONE_PERSON: [(&str, &str); 3] = [
    ("REVOKE_GUARD_MIN", "10"),
    ("REVOKE_GUARD_SHARE", "0.2"),
    ("REVOKE_GUARD_SPREAD", "1"),
];

#[tokio::test]
async fn staged_revokes_approved_through_the_api_are_sent_once_by_either_replica() {
    let kari = Person::new(1);
    let altinn = ClientsAltinn::start(20, &[&kari], &[]).await;
    let app = TestApp::without_worker().await;
    let (replicas, api) = two_replicas(&app, &altinn.settings, &GUARD_ON_ONE_PERSON);
    // Kari on 20 clients, then off 12 of them, each synced once both replicas have ingested
    // all of it: a sync-now can be planned as soon as one replica has committed its last
    // event, before the other has committed earlier ones (the firm's high-water mark is the
    // highest sequence committed, not the highest with none missing below it).
    let mut events = FirmEvents::new(FIRM);
    let mut batch = vec![events.role_changed(&kari, &[SIGNING])];
    batch.extend(
        altinn
            .clients
            .iter()
            .map(|(_, org)| events.client_assigned(&kari, org)),
    );
    synced(&app, batch, 20, 1).await;
    let batch = altinn.clients[..12]
        .iter()
        .map(|(_, org)| events.client_removed(&kari, org))
        .collect();
    synced(&app, batch, 8, 2).await;
    let staged = sync::staged(&app.pool, FIRM).await.unwrap();
    assert_eq!(staged.len(), 12);
    let deletes = || {
        altinn
            .sim
            .journal()
            .into_iter()
            .filter(|e| e.method == "DELETE")
            .count()
    };
    assert_eq!(deletes(), 0, "nothing revoked while staged");

    // Through the API of the first replica: four rejected, eight approved.
    let ids: Vec<i64> = staged.iter().map(|s| s.id).collect();
    let (rejected, approved) = ids.split_at(4);
    let path = |verb| format!("/v1/firms/{FIRM}/staged/{verb}");
    let (status, body) = post(&api, &path("reject"), json!({"ids": rejected})).await;
    assert_eq!(
        (status, &body["count"]),
        (StatusCode::OK, &json!(4)),
        "{body}"
    );
    let (status, body) = post(&api, &path("approve"), json!({"ids": approved})).await;
    assert_eq!(
        (status, &body["count"]),
        (StatusCode::OK, &json!(8)),
        "{body}"
    );
    flushed(&app, 2).await;
    app.wait_until("the approved revokes delivered", || async {
        app.count("SELECT count(*) FROM outbox WHERE status = 'delivered' AND action = 'revoke'")
            .await
            == 8
    })
    .await;

    // One DELETE per approved revoke, each recorded once; the rejected ones never sent.
    assert_eq!(deletes(), 8);
    let delivered: Vec<(i64, i64)> = sqlx::query_as(
        r#"SELECT outbox_id, count(*) FROM audit
           WHERE outcome = 'delivered' AND action = 'revoke' GROUP BY outbox_id ORDER BY 1"#,
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        delivered,
        approved.iter().map(|&id| (id, 1)).collect::<Vec<_>>()
    );
    let rejected_sent = app
        .count(&format!(
            "SELECT count(*) FROM outbox WHERE id IN ({}) AND status <> 'superseded'",
            rejected
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ))
        .await;
    assert_eq!(rejected_sent, 0);
    let held = altinn.holds(altinn.parties[0], MED).await;
    assert_eq!(held.len(), 12, "4 rejected and 8 untouched: {held:?}");
    stop(replicas).await;
    app.teardown().await;
}

#[tokio::test]
async fn auto_sync_fires_once_per_firm_with_two_replicas() {
    let kari = Person::new(1);
    let altinn = ClientsAltinn::start(4, &[&kari], &[]).await;
    let app = TestApp::without_worker().await;
    let (replicas, _) = two_replicas(&app, &altinn.settings, &[("AUTO_SYNC_AFTER_SECS", "1")]);
    // Three firms, each changed in three batches, which either replica ingests.
    let firms: Vec<String> = (0..3).map(|n| org_number(2_000 + n)).collect();
    let mut streams: Vec<FirmEvents> = firms.iter().map(FirmEvents::new).collect();
    for (n, events) in streams.iter_mut().enumerate() {
        publish(&app, vec![events.role_changed(&kari, &[SIGNING])]).await;
        for client in 0..3 {
            let org = org_number(1_700_000 + n as u32 * 10 + client);
            publish(&app, vec![events.client_assigned(&kari, &org)]).await;
        }
    }
    let auto_syncs = |firm: String| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                r#"SELECT count(*) FROM commands
                   WHERE firm = $1 AND requested_by = 'auto-sync' AND handled_at IS NOT NULL"#,
            )
            .bind(firm)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    app.wait_until("every firm synced by itself", || async {
        let mut all = true;
        for firm in &firms {
            all &= auto_syncs(firm.clone()).await >= 1;
        }
        all
    })
    .await;
    // A later change of a fourth firm, synced by itself a debounce later: by then a second
    // firing of the first three, by either replica, would have been recorded.
    let late = org_number(2_003);
    let mut events = FirmEvents::new(&late);
    let batch = vec![
        events.role_changed(&kari, &[SIGNING]),
        events.client_assigned(&kari, &org_number(1_700_100)),
    ];
    publish(&app, batch).await;
    app.wait_until("the late firm synced by itself", || async {
        auto_syncs(late.clone()).await == 1
    })
    .await;
    for firm in &firms {
        assert_eq!(auto_syncs(firm.clone()).await, 1, "{firm}");
    }
    assert_eq!(
        app.count("SELECT count(*) FROM commands WHERE requested_by = 'auto-sync'")
            .await,
        4,
        "one sync per firm, handled once"
    );
    stop(replicas).await;
    app.teardown().await;
}

/// The dispatchers (`dispatcher-UUID`) that have claimed the outbox's rows, as they stand.
async fn claimers(app: &TestApp) -> BTreeSet<String> {
    sqlx::query_scalar::<_, String>(
        "SELECT DISTINCT split_part(leased_by, '/', 1) FROM outbox WHERE leased_by IS NOT NULL",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

#[tokio::test]
async fn a_403_on_every_firm_seen_by_one_replica_holds_the_other_and_clears_on_both() {
    let altinn = DemoAltinn::start().await;
    let write = "altinn:clientdelegations.write";
    altinn
        .sim
        .set_faults(Faults {
            missing_scope: Some(write.into()),
            ..Faults::default()
        })
        .await;
    let app = TestApp::without_worker().await;
    // The first replica alone meets Altinn's 403 on both firms: a setup error, held.
    let first = worker_for(&app, &altinn.settings, 30)
        // Probes at most two seconds apart, so the test need not wait long for one.
        .env("FLUSH_RETRY_MAX_SECS", "2")
        .spawn()
        .unwrap();
    for firm in [FIRM, SECOND] {
        kari_story_in(&app, firm).await;
        ingested(&app, firm, 1).await;
        sync_now_for(&app, firm, 1002).await;
    }
    let held = || async {
        let told = app
            .count(&format!(
                "SELECT count(DISTINCT firm) FROM audit WHERE outcome = 'retry' \
                 AND detail LIKE '%{write}%'"
            ))
            .await;
        let paused = app
            .count("SELECT count(*) FROM firms WHERE flush_paused_at IS NOT NULL")
            .await;
        told == 2 && paused == 0
    };
    app.wait_until("both firms held by the first replica", held)
        .await;
    let first_dispatcher = claimers(&app).await;
    assert_eq!(first_dispatcher.len(), 1);

    // The second replica starts: it must not send what the first knows Altinn refuses. Two
    // more probes (each a second or more apart) give it time to claim, had it not obeyed.
    let second = worker_for(&app, &altinn.settings, 30)
        // Probes at most two seconds apart, so the test need not wait long for one.
        .env("FLUSH_RETRY_MAX_SECS", "2")
        .spawn()
        .unwrap();
    app.wait_until("the second replica up", || async {
        app.count("SELECT count(*) FROM worker_modes").await == 2
    })
    .await;
    let attempts = app.count("SELECT max(attempts)::bigint FROM outbox").await;
    let seen = std::sync::Mutex::new(BTreeSet::new());
    app.wait_until("two more probes", || async {
        let now = claimers(&app).await;
        seen.lock().unwrap().extend(now);
        app.count("SELECT max(attempts)::bigint FROM outbox").await >= attempts + 2
    })
    .await;
    assert!(held().await, "still held, no firm paused");
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE status <> 'pending'")
            .await,
        0,
        "a setup error parks nothing"
    );
    assert_eq!(
        seen.into_inner().unwrap(),
        first_dispatcher,
        "only the first replica probed"
    );

    // The scope is granted: both resume, and every change goes out.
    altinn.sim.set_faults(Faults::default()).await;
    flushed(&app, 2).await;
    assert_eq!(altinn.delegations().await.len(), 2);
    assert_eq!(
        app.count("SELECT count(*) FROM firms WHERE flush_paused_at IS NOT NULL")
            .await,
        0
    );
    stop(vec![first, second]).await;
    app.teardown().await;
}
