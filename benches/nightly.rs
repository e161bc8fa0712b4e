//! Nightly-window benchmark (issue 15, step 4): the whole customer base reconciled end to end
//! against an Altinn with a real capacity, through the worker as its own process.
//!
//! Each run seeds PostgreSQL's desired state and the simulator's delegations in bulk (SQL and
//! the world file, no Altinn calls), starts the simulator at BENCH_LATENCY_MS and
//! BENCH_RATE_LIMIT and the worker on default settings, publishes a `NightlyReconcile` to
//! RabbitMQ as `altinn-sync reconcile` does, and waits for the last change it planned to be
//! delivered. Runs:
//! - `first`: the first rollout; every grant desired, Altinn empty.
//! - `steady`: a steady night; Altinn holds everything but BENCH_DRIFT (half missing, half
//!   extra), and the worker knows it delivered it.
//!
//! `cargo bench --bench nightly` (needs the local PostgreSQL and RabbitMQ).
//! Settings: BENCH_FIRMS (2000), BENCH_EMPLOYEES (per firm, 10), BENCH_CLIENTS (per firm, 60),
//! BENCH_ASSIGNMENTS (clients per employee, 50): 2,000 × 10 × 50 = 1,000,000 grants of one
//! package. BENCH_DRIFT (0.01), BENCH_RUNS (`steady,first`), BENCH_LATENCY_MS (100),
//! BENCH_RATE_LIMIT (500), BENCH_TIMEOUT_SECS (10800), BENCH_WORKER_LOG (the worker's
//! `RUST_LOG`; progress lines are kept). The last line is one JSON object with every figure.
#![allow(
    // Tests and benchmarks report failure by panicking, and count in small numbers.
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss
)]

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use altinn_sync::sim::CapacityReport;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::AsyncBufReadExt;
use uuid::Uuid;

use common::{
    Generated, Shape, env_or, generate, load_facts, peak_rss_kib, simulator, steady_state,
    wait_for_port, worker_command, world,
};

/// The worker's log: warnings, and the progress of the reconcile and of the flush.
const PROGRESS_LOG: &str = "warn,altinn_sync::ops::progress=info,altinn_sync::sync::reconcile=info";

struct Capacity {
    latency_ms: u64,
    rate_limit: u32,
}

/// One run's database, seeded, with what it was seeded with.
struct Seeded {
    pool: PgPool,
    id: String,
    database_url: String,
    desired: i64,
    held: Vec<Value>,
    missing: u64,
    extra: u64,
}

async fn seed(run: &str, shape: &Shape, g: &Generated, root: &str) -> Seeded {
    let id = format!("{}_{run}", &Uuid::new_v4().simple().to_string()[..8]);
    let database_url = format!("{root}/bench_{id}");
    let db = altinn_sync::state::DbSettings {
        database_url: database_url.clone(),
        database_max_connections: 4,
    };
    let pool = altinn_sync::state::connect(&db).await.unwrap();
    altinn_sync::state::migrate(&pool).await.unwrap();
    let started = Instant::now();
    load_facts(&pool, g).await;
    let (held, missing, extra) = if run == "steady" {
        steady_state(&pool, g, shape).await
    } else {
        (Vec::new(), 0, 0)
    };
    // As autovacuum leaves the tables in production (it is off on this machine).
    sqlx::query("VACUUM ANALYZE").execute(&pool).await.unwrap();
    let desired: i64 = sqlx::query_scalar("SELECT count(*) FROM desired_grants")
        .fetch_one(&pool)
        .await
        .unwrap();
    let missing = if run == "steady" {
        missing
    } else {
        desired as u64
    };
    eprintln!(
        "[{run}] seeded {desired} desired grants ({missing} missing in Altinn, {extra} extra) in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Seeded {
        pool,
        id,
        database_url,
        desired,
        held,
        missing,
        extra,
    }
}

async fn sim_capacity(http: &reqwest::Client, port: u16) -> CapacityReport {
    http.get(format!("http://127.0.0.1:{port}/_sim/capacity"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits for the worker's `/readyz`: its queues and exchanges exist once it answers 200.
async fn wait_ready(http: &reqwest::Client, admin: u16, worker: &mut tokio::process::Child) {
    for _ in 0..1200 {
        let url = format!("http://127.0.0.1:{admin}/readyz");
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
        {
            return;
        }
        if let Ok(Some(status)) = worker.try_wait() {
            panic!("the worker exited: {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the worker did not get ready");
}

/// The worker's progress lines, as it logged them, with the seconds since the command.
type Lines = Arc<Mutex<Vec<String>>>;

/// Reads the worker's log (stderr): keeps and shows its progress lines, shows its warnings.
fn keep_progress(
    stderr: tokio::process::ChildStderr,
    started: Arc<Mutex<Option<Instant>>>,
) -> Lines {
    let lines: Lines = Arc::default();
    let kept = lines.clone();
    tokio::spawn(async move {
        let mut reader = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            let line = plain(&line);
            if line.contains(" WARN ") || line.contains(" ERROR ") {
                eprintln!("  worker: {line}");
            }
            if !line.contains("progress") {
                continue;
            }
            let at = started
                .lock()
                .unwrap()
                .map_or(0.0, |s| s.elapsed().as_secs_f64());
            let line = format!("+{at:.0}s {line}");
            eprintln!("  {line}");
            kept.lock().unwrap().push(line);
        }
    });
    lines
}

/// The line without its terminal colours.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // An escape runs to its final letter, e.g. `ESC[2m`.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

struct Done {
    handled: bool,
    pending: i64,
}

async fn done(pool: &PgPool, command: Uuid) -> Done {
    let handled: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM commands WHERE command_id = $1 AND handled_at IS NOT NULL)",
    )
    .bind(command)
    .fetch_one(pool)
    .await
    .unwrap();
    // The partial index `outbox_due` keeps this cheap however large the outbox is.
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE status = 'pending'")
        .fetch_one(pool)
        .await
        .unwrap();
    Done { handled, pending }
}

// Long because it is one run from start to figures, step after step, as the doc comment says.
async fn run(run: &str, shape: &Shape, g: &Generated, root: &str, cap: &Capacity) -> Value {
    let s = seed(run, shape, g, root).await;
    let world_file = std::env::temp_dir().join(format!("bench-nightly-{}.json", s.id));
    std::fs::write(&world_file, serde_json::to_vec(&world(g, s.held)).unwrap()).unwrap();
    let port = 26_000 + (std::process::id() % 4_000) as u16 * 2 + u16::from(run == "steady");
    let admin = port + 10_000;
    let mut sim = simulator(
        port,
        &world_file,
        &[
            "--latency-ms",
            &cap.latency_ms.to_string(),
            "--rate-limit",
            &cap.rate_limit.to_string(),
        ],
    );
    wait_for_port(port).await;
    let _ = std::fs::remove_file(&world_file);
    let http = reqwest::Client::new();

    let prefix = format!("bench-{}", s.id);
    let mut worker = worker_command(&s.database_url, &s.id, port)
        .env("ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
        .env(
            "RUST_LOG",
            std::env::var("BENCH_WORKER_LOG").unwrap_or_else(|_| PROGRESS_LOG.into()),
        )
        .stderr(Stdio::piped())
        .spawn()
        .expect("worker binary");
    let since: Arc<Mutex<Option<Instant>>> = Arc::default();
    let progress = keep_progress(worker.stderr.take().unwrap(), since.clone());
    wait_ready(&http, admin, &mut worker).await;
    let before = sim_capacity(&http, port).await;

    let amqp = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    eprintln!("[{run}] publishing NightlyReconcile…");
    let published_at = Utc::now();
    let started = Instant::now();
    *since.lock().unwrap() = Some(started);
    let command = altinn_sync::ops::request_reconcile(&amqp, &prefix, None, "bench-nightly")
        .await
        .unwrap();
    let timeout = Duration::from_secs(env_or("BENCH_TIMEOUT_SECS", 10_800));
    let mut last_note = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let d = done(&s.pool, command).await;
        if d.handled && d.pending == 0 {
            break;
        }
        if last_note.elapsed() >= Duration::from_secs(60) {
            last_note = Instant::now();
            eprintln!(
                "[{run}] +{:.0}s: planned {}, {} pending",
                started.elapsed().as_secs_f64(),
                d.handled,
                d.pending
            );
        }
        assert!(
            started.elapsed() < timeout,
            "[{run}] not done in {timeout:?}"
        );
        if let Ok(Some(status)) = worker.try_wait() {
            panic!("the worker exited: {status}");
        }
    }
    let noticed = started.elapsed().as_secs_f64();
    let after = sim_capacity(&http, port).await;
    let worker_rss = peak_rss_kib(worker.id().unwrap()) as f64 / 1024.0;
    let sim_rss = peak_rss_kib(sim.id().unwrap()) as f64 / 1024.0;
    let _ = worker.kill().await;
    let _ = sim.kill().await;
    let figures = outcome(&s.pool, command, published_at).await;
    let wall = figures.last_delivery_s.unwrap_or(figures.planned_s);
    let changes = figures.delivered;
    let reads = after.served_reads - before.served_reads;
    let writes = (after.served - after.served_reads) - (before.served - before.served_reads);
    let calls_429 = after.rate_limited - before.rate_limited;
    let per_change = |calls: u64| {
        if changes > 0 {
            calls as f64 / changes as f64
        } else {
            0.0
        }
    };
    let progress = progress.lock().unwrap().clone();
    let (target, met) = if run == "first" {
        let limit = figures.grants as f64 / 450.0;
        (
            format!("< {limit:.0} s (grant calls / 450 per s)"),
            wall < limit,
        )
    } else {
        (
            "< 600 s and <= 1.1 write calls per changed grant".to_owned(),
            wall < 600.0 && per_change(writes) <= 1.1,
        )
    };
    eprintln!("[{run}] {}", figures.summary);
    let result = json!({
        "bench": "nightly", "run": run, "firms": shape.firms, "desired_grants": s.desired,
        "drift_missing": s.missing, "drift_extra": s.extra,
        "latency_ms": cap.latency_ms, "rate_limit_per_s": cap.rate_limit,
        "wall_s": round(wall), "planned_s": round(figures.planned_s), "noticed_s": round(noticed),
        "changes": changes, "grants": figures.grants, "revokes": figures.revokes,
        "parked": figures.parked, "staged": figures.staged,
        "calls_read": reads, "calls_write": writes, "calls_429": calls_429,
        "write_calls_per_change": round(per_change(writes)),
        "calls_per_change": round(per_change(reads + writes)),
        "calls_per_s": round((reads + writes) as f64 / wall.max(0.001)),
        "worker_rss_mib": round(worker_rss), "sim_rss_mib": round(sim_rss),
        "progress_lines": progress.len(), "target": target, "met": met,
    });
    eprintln!("[{run}] progress lines seen: {}", progress.len());
    drop_database(&s.pool, root, &s.id).await;
    println!("{result}");
    result
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

struct Figures {
    delivered: u64,
    grants: u64,
    revokes: u64,
    parked: u64,
    staged: u64,
    /// Seconds from the command to its plan, and to its last delivery.
    planned_s: f64,
    last_delivery_s: Option<f64>,
    summary: String,
}

async fn outcome(pool: &PgPool, command: Uuid, published_at: DateTime<Utc>) -> Figures {
    let (grants, revokes, parked, staged, last): (i64, i64, i64, i64, Option<DateTime<Utc>>) =
        sqlx::query_as(
            r#"SELECT count(*) FILTER (WHERE status = 'delivered' AND action = 'grant'),
                      count(*) FILTER (WHERE status = 'delivered' AND action = 'revoke'),
                      count(*) FILTER (WHERE status = 'parked'),
                      count(*) FILTER (WHERE status = 'staged'),
                      max(finished_at) FILTER (WHERE status = 'delivered')
               FROM outbox WHERE cause = $1"#,
        )
        .bind(command)
        .fetch_one(pool)
        .await
        .unwrap();
    let (handled_at, summary): (DateTime<Utc>, Option<String>) =
        sqlx::query_as("SELECT handled_at, outcome FROM commands WHERE command_id = $1")
            .bind(command)
            .fetch_one(pool)
            .await
            .unwrap();
    let secs = |t: DateTime<Utc>| (t - published_at).as_seconds_f64();
    Figures {
        delivered: (grants + revokes) as u64,
        grants: grants as u64,
        revokes: revokes as u64,
        parked: parked as u64,
        staged: staged as u64,
        planned_s: secs(handled_at),
        last_delivery_s: last.map(secs),
        summary: summary.unwrap_or_default(),
    }
}

async fn drop_database(pool: &PgPool, root: &str, id: &str) {
    pool.close().await;
    let admin = PgPool::connect(&format!("{root}/postgres")).await.unwrap();
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS bench_{id} WITH (FORCE)"
    )))
    .execute(&admin)
    .await;
}

#[tokio::main]
async fn main() {
    let shape = Shape {
        firms: env_or("BENCH_FIRMS", 2000),
        employees: env_or("BENCH_EMPLOYEES", 10),
        clients: env_or("BENCH_CLIENTS", 60),
        per_employee: env_or("BENCH_ASSIGNMENTS", 50),
        drift: env_or("BENCH_DRIFT", 0.01),
    };
    let cap = Capacity {
        latency_ms: env_or("BENCH_LATENCY_MS", 100),
        rate_limit: env_or("BENCH_RATE_LIMIT", 500),
    };
    let runs: String = env_or("BENCH_RUNS", "steady,first".to_owned());
    let root = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let g = generate(&shape);
    eprintln!(
        "nightly: {} firms × {} employees × {} clients each = {} grants; Altinn at {} ms, {} req/s",
        shape.firms,
        shape.employees,
        shape.per_employee,
        shape.firms * shape.employees * shape.per_employee,
        cap.latency_ms,
        cap.rate_limit
    );
    let mut results = Vec::new();
    for name in runs.split(',') {
        results.push(run(name, &shape, &g, &root, &cap).await);
    }
    println!();
    println!(
        "| run | wall | changes | reads / writes | write calls per change | 429s | worker / sim peak RSS | target |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &results {
        println!(
            "| {} | {} s | {} | {} / {} | {} | {} | {} / {} MiB | {} ({}) |",
            r["run"],
            r["wall_s"],
            r["changes"],
            r["calls_read"],
            r["calls_write"],
            r["write_calls_per_change"],
            r["calls_429"],
            r["worker_rss_mib"],
            r["sim_rss_mib"],
            r["target"],
            if r["met"] == true { "met" } else { "missed" }
        );
    }
    println!(
        "{}",
        json!({"bench": "nightly", "firms": shape.firms,
               "grants": shape.firms * shape.employees * shape.per_employee, "runs": results})
    );
}
