//! Progress on long work (issue 15, step 6): a large flush logs done, left, pace and finish, and
//! a sync's summary (`status`, `GET /v1/firms/{org}/syncs/{id}`) gives the same pace and finish.
//!
//! The outbox is filled by SQL, as a reconcile of thousands of changes leaves it, so the figures
//! are known exactly; no worker runs, and nothing is delivered behind the test's back.

use altinn_sync::ops::{FlushProgress, Mode, Ops};
use uuid::Uuid;

use crate::common::{TestApp, logs};

const FIRM: &str = "910000005";
const OTHER_FIRM: &str = "910000013";

/// `rows` changes of `firm` planned by `cause`, `delivered` of them finished `ago_secs` ago.
async fn planned(app: &TestApp, firm: &str, cause: Uuid, rows: i64, delivered: i64, ago: f64) {
    sqlx::query(
        r#"INSERT INTO outbox (firm, employee_id, client_org_number, package, action, generation,
                               idempotency_key, cause, status, finished_at)
           SELECT $1, gen_random_uuid(), lpad(n::text, 9, '0'), 'regnskapsforer-lonn', 'grant',
                  1, concat_ws('/', $1, $2::uuid, n), $2,
                  CASE WHEN n <= $4 THEN 'delivered' ELSE 'pending' END,
                  CASE WHEN n <= $4 THEN now() - make_interval(secs => $5) END
           FROM generate_series(1, $3) AS n"#,
    )
    .bind(firm)
    .bind(cause)
    .bind(rows)
    .bind(delivered)
    .bind(ago)
    .execute(&app.pool)
    .await
    .unwrap();
}

/// Delivers `n` more of `firm`'s pending changes, now.
async fn deliver(app: &TestApp, firm: &str, n: i64) {
    sqlx::query(
        r#"UPDATE outbox SET status = 'delivered', finished_at = now()
           WHERE id IN (SELECT id FROM outbox WHERE firm = $1 AND status = 'pending'
                        ORDER BY id LIMIT $2)"#,
    )
    .bind(firm)
    .bind(n)
    .execute(&app.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_large_reconcile_shows_done_left_pace_and_finish_in_the_log_and_the_sync_summary() {
    let mut log = logs::subscribe();
    let app = TestApp::without_worker().await;
    sqlx::query("INSERT INTO firms (org_number, high_water_sequence) VALUES ($1, 1), ($2, 1)")
        .bind(FIRM)
        .bind(OTHER_FIRM)
        .execute(&app.pool)
        .await
        .unwrap();
    // A reconcile of every firm, planned 30 s ago; 1,500 of the firm's 4,000 changes delivered
    // since, and another firm's 1,000 all still waiting.
    let command = Uuid::new_v4();
    sqlx::query(
        r#"INSERT INTO commands (command_id, command_type, firm, requested_at, received_at,
                                 handled_at)
           VALUES ($1, 'NightlyReconcile', NULL, now() - interval '31 s',
                   now() - interval '31 s', now() - interval '30 s')"#,
    )
    .bind(command)
    .execute(&app.pool)
    .await
    .unwrap();
    planned(&app, FIRM, command, 4_000, 1_500, 10.0).await;
    planned(&app, OTHER_FIRM, command, 1_000, 0, 0.0).await;

    // The flush's progress, over every firm: nothing on the first look, then a line.
    let mut progress = FlushProgress::default();
    let counts = || altinn_sync::sync::outbox_counts(&app.pool, None, true);
    progress
        .observe(&app.pool, &counts().await.unwrap())
        .await
        .unwrap();
    deliver(&app, FIRM, 500).await;
    progress
        .observe(&app.pool, &counts().await.unwrap())
        .await
        .unwrap();
    let line = logs::wait_for(&mut log, &["flush progress", "done=500", "left=3000"]).await;
    assert!(
        line.contains("per_s=") && line.contains("finish_in="),
        "{line}"
    );
    assert!(
        !line.contains("finish_in=unknown"),
        "a pace gives a finish: {line}"
    );

    // The firm's share of the reconcile: 2,000 of 4,000 delivered in the last 30 s, 2,000 left.
    let ops = Ops::new(
        app.pool.clone(),
        Mode {
            flush_on: true,
            flush: app.settings.flush.clone(),
        },
    );
    let summary = ops.sync_summary(FIRM, command).await.unwrap();
    assert_eq!(
        (summary.planned, summary.delivered, summary.pending),
        (4_000, 2_000, 2_000)
    );
    let per_s = summary
        .per_s
        .expect("a pace while changes are on their way");
    // 2,000 in a window of about 30 s (the test's own time stretches it a little).
    assert!((40.0..=67.0).contains(&per_s), "{per_s}");
    let finish = summary.estimated_finish.expect("a finish at that pace");
    let in_secs = (finish - chrono::Utc::now()).num_seconds();
    assert!((25..=55).contains(&in_secs), "finish in {in_secs} s");

    // `status` shows the same summary as its last reconcile, and says it in words.
    let status = ops.status(FIRM).await.unwrap();
    let last = status.last_reconcile.as_ref().expect("the reconcile");
    assert_eq!(last.command_id, command);
    assert_eq!((last.delivered, last.pending), (2_000, 2_000));
    assert!((last.per_s.unwrap() - per_s).abs() < 5.0, "{last:?}");
    let text = status.to_string();
    assert!(text.contains("/s, done about"), "{text}");

    // Once every change is delivered, neither pace nor finish is claimed.
    deliver(&app, FIRM, 2_000).await;
    let summary = ops.sync_summary(FIRM, command).await.unwrap();
    assert_eq!((summary.delivered, summary.pending), (4_000, 0));
    assert_eq!((summary.per_s, summary.estimated_finish), (None, None));
    app.teardown().await;
}
