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

    let retention = altinn_sync::state::Retention {
        days: Duration::from_secs(30 * 24 * 3600),
        audit: Duration::from_secs(400 * 24 * 3600),
    };
    let pruned = altinn_sync::state::prune(&app.pool, &retention)
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

#[tokio::test]
async fn pruning_deletes_what_is_done_and_old_and_keeps_parked_changes_and_the_audit_longer() {
    let app = TestApp::without_worker().await;
    let run = |sql: &'static str| {
        let pool = app.pool.clone();
        async move { sqlx::query(sql).execute(&pool).await.unwrap() }
    };
    // Two of each: one finished 31 days ago, one recent.
    for age in ["31 days", "1 day"] {
        let status = |s: &str| format!("'{s}'");
        for s in ["delivered", "superseded", "parked"] {
            let sql = format!(
                r#"INSERT INTO outbox (firm, employee_id, client_org_number, package, action,
                                      generation, idempotency_key, cause, status, finished_at)
                   VALUES ('912345610', gen_random_uuid(), '998877660', 'p', 'grant', 1,
                           gen_random_uuid()::text, gen_random_uuid(), {}, now() - interval '{age}')"#,
                status(s)
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&app.pool)
                .await
                .unwrap();
        }
        let sql = format!(
            r#"INSERT INTO commands (command_id, command_type, firm, requested_at, received_at,
                                     handled_at)
               VALUES (gen_random_uuid(), 'SyncNow', '912345610', now(), now(),
                       now() - interval '{age}');
               INSERT INTO dead_letters (queue, routing_key, reason_code, reason, body_bytes,
                                         redelivered, received_at)
               VALUES ('q', 'ClientAssigned', 'schema', 'bad', 10, false, now() - interval '{age}');
               INSERT INTO sequence_regressions (firm, event_id, sequence, high_water_sequence,
                                                 detected_at)
               VALUES ('912345610', gen_random_uuid(), 1, 20000, now() - interval '{age}');
               INSERT INTO audit (firm, employee_id, client_org_number, package, action, outcome,
                                  cause, outbox_id, at)
               VALUES ('912345610', gen_random_uuid(), '998877660', 'p', 'grant', 'delivered',
                       gen_random_uuid(), 1, now() - interval '{age}')"#
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&app.pool)
            .await
            .unwrap();
    }
    // An audit row older than its own, longer retention.
    run(
        r#"INSERT INTO audit (firm, employee_id, client_org_number, package, action, outcome,
                              cause, outbox_id, at)
           VALUES ('912345610', gen_random_uuid(), '998877660', 'p', 'grant', 'delivered',
                   gen_random_uuid(), 1, now() - interval '401 days')"#,
    )
    .await;

    let retention = altinn_sync::state::Retention {
        days: Duration::from_secs(30 * 24 * 3600),
        audit: Duration::from_secs(400 * 24 * 3600),
    };
    let pruned = altinn_sync::state::prune(&app.pool, &retention)
        .await
        .unwrap();
    assert_eq!(
        (
            pruned.outbox_rows,
            pruned.commands,
            pruned.dead_letters,
            pruned.sequence_regressions,
            pruned.audit_rows
        ),
        (2, 1, 1, 1, 1),
        "old delivered and superseded changes, one of each of the rest, the 401-day audit row"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE status = 'parked'")
            .await,
        2,
        "parked changes stay until they are resolved"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM audit WHERE at < now() - interval '30 days'")
            .await,
        1,
        "the 31-day audit row stays: the audit is kept for 400 days"
    );
    app.teardown().await;
}
