//! Crashes, shutdowns and outages: nothing is lost, nothing is applied twice.

use std::process::Stdio;

use tokio::process::{Child, Command};

use crate::common::proxy::Proxy;
use crate::common::workload::{FirmEvents, Model, Person, mixed_stream, org_number};
use crate::common::{TestApp, logs};

/// The worker as its own process, configured for the test's database and topology.
fn worker_process(app: &TestApp) -> Child {
    let s = &app.settings;
    Command::new(env!("CARGO_BIN_EXE_altinn-sync"))
        .arg("run")
        // A free port: several workers run side by side.
        .env("ADMIN_LISTEN", "127.0.0.1:0")
        .env("DATABASE_URL", &s.db.database_url)
        .env("AMQP_URL", &s.broker.amqp_url)
        .env("TOPOLOGY_PREFIX", &s.ingest.topology_prefix)
        .env("EVENTS_EXCHANGE", &s.ingest.events_exchange)
        .env("BATCH_SIZE", "100")
        .env("PREFETCH", "500")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("the worker binary starts")
}

/// Waits until at least `n` events are committed, waking on each commit.
async fn wait_for_processed(app: &TestApp, n: i64) {
    let pool = app.pool.clone();
    app.wait_until("part of the backlog", || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM processed_events")
                .fetch_one(&pool)
                .await
                .unwrap()
                >= n
        }
    })
    .await;
}

async fn processed(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM processed_events").await
}

#[tokio::test]
async fn a_worker_killed_mid_batch_loses_nothing_and_applies_nothing_twice() {
    let mut app = TestApp::without_worker().await;
    let events = mixed_stream(11, 8, 20, 30, 20_000, 0.05, 20);
    let mut model = Model::default();
    for (_, e) in &events {
        model.apply(e);
    }
    let distinct: std::collections::HashSet<&str> = events
        .iter()
        .map(|(_, e)| e["event_id"].as_str().unwrap())
        .collect();
    app.publish_all(&events).await;

    let mut first = worker_process(&app);
    wait_for_processed(&app, 2000).await;
    first.start_kill().unwrap(); // SIGKILL: no chance to finish the batch
    first.wait().await.unwrap();
    let at_kill = processed(&app).await;
    assert!(
        (at_kill as usize) < distinct.len(),
        "the kill came mid-stream ({at_kill} of {})",
        distinct.len()
    );

    let mut second = worker_process(&app);
    app.barrier().await;
    second.start_kill().unwrap();
    second.wait().await.unwrap();

    assert_eq!(
        processed(&app).await - app.markers().await,
        distinct.len() as i64,
        "every event once"
    );
    assert_eq!(app.desired_all().await, model.desired());
    app.assert_desired_consistent().await;
    assert_eq!(app.count("SELECT count(*) FROM dead_letters").await, 0);
    app.teardown().await;
}

#[tokio::test]
async fn sigterm_finishes_the_batch_in_hand_and_exits_cleanly() {
    let mut app = TestApp::without_worker().await;
    let events = mixed_stream(12, 4, 10, 10, 5_000, 0.0, 1);
    app.publish_all(&events).await;
    let mut worker = worker_process(&app);
    wait_for_processed(&app, 500).await;
    let pid = worker.id().expect("running") as i32;
    // SIGTERM through the shell's kill, to avoid a libc dependency in tests.
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let exit = worker.wait().await.unwrap();
    assert!(exit.success(), "graceful shutdown exits 0, got {exit:?}");

    app.start_worker().await;
    app.barrier().await;
    assert_eq!(
        processed(&app).await - app.markers().await,
        events.len() as i64
    );
    app.teardown().await;
}

#[tokio::test]
async fn while_postgres_is_down_the_consumer_is_cancelled_and_resumes_after() {
    let mut logs = logs::subscribe();
    let mut app = TestApp::without_worker().await;
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let direct = app.settings.db.database_url.clone();
    let db_name = direct.rsplit('/').next().unwrap().to_owned();
    app.settings.db.database_url = format!("postgres://postgres@{}/{db_name}", proxy.addr);
    app.start_worker().await;
    app.barrier().await;

    proxy.cut();
    let mut firm = FirmEvents::new(org_number(40));
    let kari = Person::new(1);
    let client = org_number(4000);
    app.publish_event(&firm.role_changed(&kari, &["PayrollAccountant"]))
        .await;
    app.publish_event(&firm.client_assigned(&kari, &client))
        .await;
    let queue = app.topology.events_queue.clone();
    logs::wait_for(&mut logs, &[&queue, "consumer cancelled"]).await;

    proxy.restore();
    app.barrier().await;
    assert_eq!(
        app.desired(&firm.org).await.len(),
        1,
        "the batch held during the outage is applied"
    );
    app.teardown().await;
}

#[tokio::test]
async fn when_rabbitmq_drops_the_worker_reconnects_redeclares_and_resumes() {
    let mut logs = logs::subscribe();
    let mut app = TestApp::without_worker().await;
    let proxy = Proxy::start("127.0.0.1:5672".parse().unwrap()).await;
    app.settings.broker.amqp_url = format!("amqp://guest:guest@{}/%2f", proxy.addr);
    app.start_worker().await;
    app.barrier().await;

    proxy.cut();
    logs::wait_for(&mut logs, &["RabbitMQ connection lost"]).await;
    let mut firm = FirmEvents::new(org_number(41));
    let kari = Person::new(1);
    let client = org_number(4100);
    app.publish_event(&firm.role_changed(&kari, &["PayrollAccountant"]))
        .await;
    app.publish_event(&firm.client_assigned(&kari, &client))
        .await;

    proxy.restore();
    app.barrier().await;
    assert_eq!(app.desired(&firm.org).await.len(), 1);
    app.teardown().await;
}
