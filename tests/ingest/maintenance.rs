//! Pruning of processed ids and tombstones after the retention period.

use std::time::Duration;

use crate::common::TestApp;
use crate::common::workload::{FirmEvents, Person, org_number};

#[tokio::test]
async fn processed_ids_and_tombstones_older_than_the_retention_are_pruned() {
    let mut app = TestApp::spawn().await;
    let mut firm = FirmEvents::new(org_number(50));
    let kari = Person::new(1);
    let (old, fresh) = (org_number(5000), org_number(5001));
    app.publish_event(&firm.role_changed(&kari, &["PayrollAccountant"]))
        .await;
    app.publish_event(&firm.client_assigned(&kari, &old)).await;
    app.publish_event(&firm.client_removed(&kari, &old)).await;
    app.publish_event(&firm.client_assigned(&kari, &fresh))
        .await;
    app.publish_event(&firm.client_removed(&kari, &fresh)).await;
    app.barrier().await;

    // Age the firm's processed ids and the first tombstone past a 30-day retention.
    sqlx::query(
        "UPDATE processed_events SET processed_at = now() - interval '31 days' WHERE firm = $1",
    )
    .bind(&firm.org)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE assignments SET updated_at = now() - interval '31 days' WHERE client_org_number = $1")
        .bind(&old)
        .execute(&app.pool)
        .await
        .unwrap();

    let pruned = altinn_sync::state::prune(&app.pool, Duration::from_secs(30 * 24 * 3600))
        .await
        .unwrap();
    assert_eq!((pruned.processed_events, pruned.tombstones), (5, 1));
    let left: Vec<String> =
        sqlx::query_scalar("SELECT client_org_number FROM assignments WHERE NOT active")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(left, vec![fresh], "the recent tombstone stays");
    app.teardown().await;
}
