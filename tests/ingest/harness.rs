//! The harness itself: a test that fails before `teardown` leaves nothing behind.

use altinn_sync::ingest;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use sqlx::PgPool;

use crate::common::{TestApp, amqp_url, pg_root};

#[tokio::test]
async fn an_app_dropped_without_teardown_removes_its_database_and_queues() {
    let app = TestApp::spawn().await;
    let database = app
        .settings
        .db
        .database_url
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let queue = app.topology.events_queue.clone();
    // As a failed assertion would, unwinding past the test's `teardown`.
    drop(app);

    let root = PgPool::connect(&format!("{}/postgres", pg_root()))
        .await
        .unwrap();
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&database)
            .fetch_one(&root)
            .await
            .unwrap();
    assert!(!exists, "database {database} is dropped");
    let conn = ingest::connect(&amqp_url()).await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel
        .queue_declare(queue.as_str().into(), passive, FieldTable::default())
        .await;
    assert!(declared.is_err(), "queue {queue} is deleted");
}
