//! Commands are validated and recorded; bad ones are dead-lettered.

use serde_json::json;
use uuid::Uuid;

use crate::common::TestApp;
use crate::common::workload::org_number;

/// (command_type, firm, after_sequence, requested_by)
type Recorded = (String, Option<String>, Option<i64>, Option<String>);

#[tokio::test]
async fn commands_are_recorded_once_and_bad_ones_dead_lettered() {
    let app = TestApp::spawn().await;
    let firm = org_number(30);
    let sync_now = json!({
        "command_id": Uuid::new_v4(), "command_type": "SyncNow",
        "requested_at": "2026-11-24T08:00:00Z", "requested_by": "admin@firm.example",
        "firm": {"org_number": firm}, "after_sequence": 1042
    });
    let nightly = json!({
        "command_id": Uuid::new_v4(), "command_type": "NightlyReconcile",
        "requested_at": "2026-11-24T02:00:00Z", "firm": null
    });
    let no_firm = json!({
        "command_id": Uuid::new_v4(), "command_type": "SyncNow",
        "requested_at": "2026-11-24T08:00:00Z", "firm": null
    });
    app.publish_command(&sync_now).await;
    app.publish_command(&sync_now).await;
    app.publish_command(&nightly).await;
    app.publish_command(&no_firm).await;

    let pool = app.pool.clone();
    app.wait_until("two commands and one dead letter", || {
        let pool = pool.clone();
        async move {
            let (c, d): (i64, i64) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM commands), (SELECT count(*) FROM dead_letters)",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            c == 2 && d == 1
        }
    })
    .await;
    let rows: Vec<Recorded> = sqlx::query_as(
        "SELECT command_type, firm, after_sequence, requested_by FROM commands ORDER BY command_type",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            ("NightlyReconcile".to_owned(), None, None, None),
            (
                "SyncNow".to_owned(),
                Some(firm),
                Some(1042),
                Some("admin@firm.example".to_owned())
            ),
        ]
    );
    let dead = app.drain_dead_letters(1).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].0.as_str(), dead[0].1.as_str()),
        ("schema", "SyncNow")
    );
    app.teardown().await;
}
