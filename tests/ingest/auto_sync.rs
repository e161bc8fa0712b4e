//! The automatic sync (AUTO_SYNC_AFTER_SECS): its debounce and cap, judged by the due check
//! at chosen instants against the marks ingest really set, and a real run end to end.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::common::TestApp;
use crate::common::altinn::{ClientsAltinn, FIRM, MED, SIGNING};
use crate::common::steps::{app_with, publish};
use crate::common::workload::{FirmEvents, Person, org_number};
use altinn_sync::sync;

/// The firm's marks: (first change, last change) since its last plan.
async fn marks(app: &TestApp) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    sqlx::query_as(
        "SELECT desired_changed_first, desired_changed_last FROM firms WHERE org_number = $1",
    )
    .bind(FIRM)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

fn micros(n: i64) -> chrono::Duration {
    chrono::Duration::microseconds(n)
}

/// Kari gets client `n` in a batch of its own: a change of the firm's desired grants.
async fn change(app: &mut TestApp, events: &mut FirmEvents, kari: &Person, n: u32) {
    let batch = vec![events.client_assigned(kari, &org_number(1_600_000 + n))];
    publish(app, batch).await;
    app.barrier().await;
}

#[tokio::test]
async fn a_firm_is_due_its_debounce_after_its_last_change() {
    // Ingest only: the due check is called by the test, at instants it chooses.
    let mut app = TestApp::spawn().await;
    let kari = Person::new(1);
    let mut events = FirmEvents::new(FIRM);
    publish(&app, vec![events.role_changed(&kari, &[SIGNING])]).await;
    app.barrier().await;
    assert_eq!(marks(&app).await, (None, None), "no grant changed yet");
    change(&mut app, &mut events, &kari, 0).await;
    let (Some(first), Some(last)) = marks(&app).await else {
        panic!("ingest marks the firm")
    };
    assert_eq!(first, last);
    let n = Duration::from_secs(60);
    let pool = app.pool.clone();
    let due = |at| sync::auto_sync(&pool, n, Some(at));
    assert!(due(last + micros(60_000_000 - 1)).await.unwrap().is_empty());

    // A second change puts it off: due N after the last change, not the first.
    change(&mut app, &mut events, &kari, 1).await;
    let (Some(first_now), Some(last)) = marks(&app).await else {
        panic!("still marked")
    };
    assert_eq!(first_now, first);
    assert!(last > first);
    assert!(due(first + micros(60_000_000)).await.unwrap().is_empty());
    assert!(due(last + micros(60_000_000 - 1)).await.unwrap().is_empty());
    assert_eq!(due(last + micros(60_000_000)).await.unwrap(), [FIRM]);
    // Fired once: the marks are cleared with the command recorded.
    assert_eq!(marks(&app).await, (None, None));
    assert!(due(last + micros(3_600_000_000)).await.unwrap().is_empty());
    let recorded: Vec<(String, Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT command_type, requested_by, after_sequence FROM commands WHERE firm = $1",
    )
    .bind(FIRM)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        recorded,
        [("SyncNow".to_owned(), Some("auto-sync".to_owned()), None)]
    );

    // A plan that saw the change (a sync-now by hand, say) clears the marks too.
    change(&mut app, &mut events, &kari, 2).await;
    assert!(marks(&app).await.0.is_some());
    assert_eq!(
        sync::handle_commands(&app.pool, &app.settings.flush)
            .await
            .unwrap(),
        1
    );
    assert_eq!(marks(&app).await, (None, None));
    app.teardown().await;
}

#[tokio::test]
async fn a_firm_that_keeps_changing_is_due_ten_debounces_after_its_first_change() {
    let mut app = TestApp::spawn().await;
    let kari = Person::new(1);
    let mut events = FirmEvents::new(FIRM);
    publish(&app, vec![events.role_changed(&kari, &[SIGNING])]).await;
    change(&mut app, &mut events, &kari, 0).await;
    change(&mut app, &mut events, &kari, 1).await;
    let (Some(first), Some(last)) = marks(&app).await else {
        panic!("ingest marks the firm")
    };
    // A debounce a tenth of the gap between the two changes: by the time ten have passed since
    // the first change, the last one is still less than one debounce old, so only the cap can
    // make the firm due.
    let gap = (last - first).num_microseconds().unwrap();
    let n = gap / 10;
    assert!(n > 0, "{gap} µs between two batches");
    let after = Duration::from_micros(n.unsigned_abs());
    let cap = first + micros(10 * n);
    assert!(cap < last + micros(n));
    let pool = app.pool.clone();
    let due = |at| sync::auto_sync(&pool, after, Some(at));
    assert!(due(cap - micros(1)).await.unwrap().is_empty());
    assert_eq!(due(cap).await.unwrap(), [FIRM]);
    assert_eq!(marks(&app).await, (None, None));
    app.teardown().await;
}

#[tokio::test]
async fn the_automatic_sync_delivers_changes_by_itself_through_the_guard() {
    let kari = Person::new(1);
    let altinn = ClientsAltinn::start(12, &[&kari], &[]).await;
    let app = app_with(&altinn.settings, |f| f.auto_sync_after_secs = Some(1)).await;
    let mut events = FirmEvents::new(FIRM);
    let mut batch = vec![events.role_changed(&kari, &[SIGNING])];
    for (_, org) in &altinn.clients {
        batch.push(events.client_assigned(&kari, org));
    }
    publish(&app, batch).await;
    let auto_synced = |commands: i64| {
        let pool = app.pool.clone();
        app.wait_until("the automatic sync", move || {
            let pool = pool.clone();
            async move {
                let (handled, open): (i64, i64) = sqlx::query_as(
                    r#"SELECT (SELECT count(*) FROM commands
                               WHERE requested_by = 'auto-sync' AND handled_at IS NOT NULL),
                              (SELECT count(*) FROM outbox WHERE status = 'pending')"#,
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                handled == commands && open == 0
            }
        })
    };
    auto_synced(1).await;
    assert_eq!(altinn.holds(altinn.parties[0], MED).await.len(), 12);

    // Kari leaves every client: the automatic sync plans the revokes, and the guard stages them.
    let batch = altinn
        .clients
        .iter()
        .map(|(_, org)| events.client_removed(&kari, org))
        .collect();
    publish(&app, batch).await;
    auto_synced(2).await;
    let pool = app.pool.clone();
    app.wait_until("the revokes staged", || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox WHERE status = 'staged'")
                .fetch_one(&pool)
                .await
                .unwrap()
                == 12
        }
    })
    .await;
    assert_eq!(altinn.holds(altinn.parties[0], MED).await.len(), 12);
    let by: Vec<Option<String>> = sqlx::query_scalar("SELECT requested_by FROM commands")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        by,
        [Some("auto-sync".to_owned()), Some("auto-sync".to_owned())]
    );
    app.teardown().await;
}
