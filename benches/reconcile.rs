//! Reconcile benchmark: a full `NightlyReconcile` of many firms against a simulator in its own
//! process, timed by phase (reading Altinn; delta and outbox), with the worker's peak RSS.
//!
//! `cargo bench --bench reconcile` (needs the local PostgreSQL and RabbitMQ).
//! Settings: BENCH_FIRMS (default 1000), BENCH_EMPLOYEES (per firm, 50), BENCH_CLIENTS (per
//! firm, 50), BENCH_ASSIGNMENTS (clients per employee, 20): 1,000,000 desired grants by default.
//! BENCH_DRIFT (0.01) is the steady-state case's drift, half missing and half extra.
//! BENCH_CASES (`empty,steady`). BENCH_WORKER_LOG is the worker's `RUST_LOG` (default `warn`).
#![allow(
    // Tests and benchmarks report failure by panicking, and count in small numbers.
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

mod common;

use common::{
    Generated, SCOPES, Shape, env_or, generate, load_facts, peak_rss_kib, simulator, steady_state,
    wait_for_port, worker, world,
};

use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::PgPool;

use uuid::Uuid;

struct Outcome {
    read: f64,
    apply: f64,
    total: f64,
    rss_kib: u64,
    outbox_rows: i64,
    summary: String,
    /// The same reading by a bare client, without the database: (seconds, calls).
    bare_read: (f64, u64),
}

async fn run_case(
    case: &str,
    shape: &Shape,
    g: &Generated,
    root: &str,
) -> (Outcome, f64, u64, u64) {
    let id = format!("{}_{case}", &Uuid::new_v4().simple().to_string()[..8]);
    let database_url = format!("{root}/bench_{id}");
    let db = altinn_sync::state::DbSettings {
        database_url: database_url.clone(),
        database_max_connections: 4,
    };
    let pool = altinn_sync::state::connect(&db).await.unwrap();
    altinn_sync::state::migrate(&pool).await.unwrap();
    if let Ok(ms) = std::env::var("BENCH_AUTO_EXPLAIN") {
        // The plan of every statement slower than this, in PostgreSQL's own log.
        for setting in [
            "session_preload_libraries = 'auto_explain'".to_owned(),
            format!("auto_explain.log_min_duration = '{ms}ms'"),
            "auto_explain.log_analyze = on".to_owned(),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER DATABASE bench_{id} SET {setting}"
            )))
            .execute(&pool)
            .await
            .unwrap();
        }
    }
    eprintln!("[{case}] loading the facts…");
    load_facts(&pool, g).await;
    let (held, missing, extra) = if case == "steady" {
        steady_state(&pool, g, shape).await
    } else {
        (Vec::new(), u64::MAX, 0)
    };
    // The tables at rest, as autovacuum leaves them in production (this machine runs
    // PostgreSQL with autovacuum off): otherwise the reconcile would pay for setting the hint
    // bits of a million freshly loaded rows, and plan without statistics.
    sqlx::query("VACUUM ANALYZE").execute(&pool).await.unwrap();
    let desired: i64 = sqlx::query_scalar("SELECT count(*) FROM desired_grants")
        .fetch_one(&pool)
        .await
        .unwrap();
    // Altinn empty: every desired grant is missing.
    let missing = if missing == u64::MAX {
        desired as u64
    } else {
        missing
    };
    let baseline = outbox_baseline(&pool).await;
    eprintln!(
        "[{case}] {desired} desired grants; baseline insert {baseline:.1} s; starting the simulator…"
    );
    let world_file = std::env::temp_dir().join(format!("bench-reconcile-{id}.json"));
    std::fs::write(&world_file, serde_json::to_vec(&world(g, held)).unwrap()).unwrap();
    let port = 21_000 + (std::process::id() % 5_000) as u16 + u16::from(case == "steady");
    let mut sim = simulator(port, &world_file, &[]);
    wait_for_port(port).await;
    let _ = std::fs::remove_file(&world_file);

    // The reading the reconcile will do, bare, before the worker changes anything.
    let bare_read = bare_read(port, &g.firm_orgs).await;
    let mut worker = worker(&database_url, &id, port);
    let command = Uuid::new_v4();
    sqlx::query(
        r#"INSERT INTO commands (command_id, command_type, firm, requested_at)
           VALUES ($1, 'NightlyReconcile', NULL, now())"#,
    )
    .bind(command)
    .execute(&pool)
    .await
    .unwrap();
    eprintln!("[{case}] reconciling…");
    let started = Instant::now();
    let summary: String = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let outcome: Option<String> = sqlx::query_scalar(
            "SELECT outcome FROM commands WHERE command_id = $1 AND handled_at IS NOT NULL",
        )
        .bind(command)
        .fetch_one(&pool)
        .await
        .unwrap_or(None);
        if let Some(o) = outcome {
            break o;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "reconcile stalled"
        );
        if let Ok(Some(status)) = worker.try_wait() {
            panic!("the worker exited: {status}");
        }
    };
    let total = started.elapsed().as_secs_f64();
    let rss_kib = peak_rss_kib(worker.id().unwrap());
    let _ = worker.kill().await;
    let _ = sim.kill().await;
    // The rows this reconcile planned, not the history of earlier flushes.
    let outbox_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE cause = $1")
        .bind(command)
        .fetch_one(&pool)
        .await
        .unwrap();
    let seconds = |label: &str| -> f64 {
        summary
            .split(label)
            .nth(1)
            .and_then(|rest| rest.trim().split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let outcome = Outcome {
        read: seconds("read Altinn in"),
        apply: seconds("delta and outbox in"),
        total,
        rss_kib,
        outbox_rows,
        summary: summary.clone(),
        bare_read,
    };
    pool.close().await;
    let admin = PgPool::connect(&format!("{root}/postgres")).await.unwrap();
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS bench_{id} WITH (FORCE)"
    )))
    .execute(&admin)
    .await;
    (outcome, baseline, missing, extra)
}

/// The floor for reading Altinn: every firm's party, agents and each agent's packages, by a
/// bare `AltinnClient` with the worker's limits (16 calls in flight, 4 per firm, 16 firms at
/// once), and nothing written anywhere.
async fn bare_read(port: u16, firms: &[String]) -> (f64, u64) {
    use altinn_sync::altinn::{AltinnClient, AltinnSettings};
    use futures_util::StreamExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    let settings = AltinnSettings {
        altinn_base_url: Some(format!("http://127.0.0.1:{port}")),
        maskinporten_url: Some(format!("http://127.0.0.1:{port}/")),
        maskinporten_client_id: Some("demo-client".into()),
        maskinporten_kid: Some("demo-kid".into()),
        maskinporten_key_file: Some(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/deploy/sim/test-only-maskinporten-key.pem"
            )
            .into(),
        ),
        maskinporten_scopes: Some(SCOPES.into()),
        altinn_request_timeout_ms: 30_000,
        maskinporten_systemuser_external_ref: None,
    };
    let client = AltinnClient::new(settings.validate().unwrap().unwrap()).unwrap();
    let calls = tokio::sync::Semaphore::new(16);
    let made = AtomicU64::new(0);
    let started = Instant::now();
    let (client, calls, made) = (&client, &calls, &made);
    futures_util::stream::iter(firms)
        .map(|org| async move {
            let call = || async {
                made.fetch_add(1, Ordering::Relaxed);
                calls.acquire().await.unwrap()
            };
            let firm = {
                let _permit = call().await;
                client.firm_party(org).await.unwrap()
            };
            let agents = {
                let _permit = call().await;
                client.agents(&firm).await.unwrap()
            };
            let firm = &firm;
            futures_util::stream::iter(agents)
                .map(|a| async move {
                    let _permit = call().await;
                    client.agent_packages(firm, a.agent.id).await.unwrap().len()
                })
                .buffer_unordered(4)
                .collect::<Vec<_>>()
                .await;
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    (
        started.elapsed().as_secs_f64(),
        made.load(Ordering::Relaxed),
    )
}

/// The floor for filling the outbox: the same number of rows, straight from `desired_grants`
/// with one statement, into a table shaped and indexed like the outbox.
async fn outbox_baseline(pool: &PgPool) -> f64 {
    sqlx::query("CREATE TABLE outbox_baseline (LIKE outbox INCLUDING ALL)")
        .execute(pool)
        .await
        .unwrap();
    let started = Instant::now();
    sqlx::query(
        r#"INSERT INTO outbox_baseline (firm, employee_id, client_org_number, package, action,
                                        generation, idempotency_key, cause)
           SELECT firm, employee_id, client_org_number, package, 'grant', 1,
                  concat_ws('/', firm, employee_id, client_org_number, package, 'grant', 1),
                  gen_random_uuid()
           FROM desired_grants"#,
    )
    .execute(pool)
    .await
    .unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    sqlx::query("DROP TABLE outbox_baseline")
        .execute(pool)
        .await
        .unwrap();
    elapsed
}

#[tokio::main]
async fn main() {
    let shape = Shape {
        firms: env_or("BENCH_FIRMS", 1000),
        employees: env_or("BENCH_EMPLOYEES", 50),
        clients: env_or("BENCH_CLIENTS", 50),
        per_employee: env_or("BENCH_ASSIGNMENTS", 20),
        drift: env_or("BENCH_DRIFT", 0.01),
    };
    let cases: String = env_or("BENCH_CASES", "empty,steady".to_owned());
    let root = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let g = generate(&shape);
    let mut rows = Vec::new();
    for case in cases.split(',') {
        let (outcome, baseline, missing, extra) = run_case(case, &shape, &g, &root).await;
        eprintln!("[{case}] {}", outcome.summary);
        rows.push((case.to_owned(), outcome, baseline, missing, extra));
    }

    println!();
    println!(
        "## Reconcile benchmark: {} firms x {} employees x {} clients each = {} desired grants",
        shape.firms,
        shape.employees,
        shape.per_employee,
        shape.firms * shape.employees * shape.per_employee
    );
    println!("(2 cores; simulator in its own process, worker, PostgreSQL on the same machine)");
    println!();
    println!(
        "| case | read Altinn | baseline: bare client, same reads | delta + outbox | baseline: one INSERT of as many rows | whole command | outbox rows | drift made (missing / extra) | drift counted | worker peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut figures = Vec::new();
    for (case, o, baseline, missing, extra) in rows {
        let counted = o
            .summary
            .split(": ")
            .nth(1)
            .and_then(|s| s.split(" grants drifted").next())
            .unwrap_or("?");
        let (bare, calls) = o.bare_read;
        println!(
            "| {case} | {:.1} s | {bare:.1} s ({calls} calls, {:.0}/s) | {:.1} s | {baseline:.1} s | {:.1} s | {} | {missing} / {extra} | {counted} | {:.0} MiB |",
            o.read,
            calls as f64 / bare,
            o.apply,
            o.total,
            o.outbox_rows,
            o.rss_kib as f64 / 1024.0
        );
        figures.push(json!({
            "case": case, "read_s": o.read, "apply_s": o.apply, "total_s": o.total,
            "bare_read_s": bare, "bare_read_calls": calls, "baseline_insert_s": baseline,
            "outbox_rows": o.outbox_rows, "missing": missing, "extra": extra,
            "drift_counted": counted, "rss_mib": o.rss_kib as f64 / 1024.0,
        }));
    }
    // The last line: every figure, for scripts.
    println!(
        "{}",
        json!({
            "bench": "reconcile", "firms": shape.firms,
            "grants": shape.firms * shape.employees * shape.per_employee, "cases": figures,
        })
    );
}
