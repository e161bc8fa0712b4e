//! Ingest benchmark: drain capacity, publish-to-commit latency and peak RSS of the worker,
//! against two baselines measured in the same run on the same broker: the raw broker rate, and
//! a lean batched consumer (`ingest/lean.rs`) writing the same rows into a fresh database. The
//! bench checks that both databases hold the same desired state afterwards. The last line of
//! the output is one JSON object of the figures.
//!
//! `cargo bench --bench ingest` (needs the local RabbitMQ and PostgreSQL). Settings:
//! BENCH_EVENTS (default 200000), BENCH_RATE (offered load for latency, default 5000/s),
//! BENCH_LATENCY_SECS (default 20), TEST_DATABASE_URL and TEST_AMQP_URL as for the tests.
#![allow(
    // Tests and benchmarks report failure by panicking, and count in small numbers.
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

#[path = "ingest/lean.rs"]
mod lean;
#[path = "../tests/common/workload.rs"]
mod workload;

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use altinn_sync::ingest::{self, Topology};
use altinn_sync::publish::json_properties;
use futures_util::StreamExt;
use lapin::Channel;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::Value;
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Bench {
    id: String,
    database_url: String,
    amqp_url: String,
    topology: Topology,
    pool: PgPool,
    channel: Channel,
}

#[tokio::main]
async fn main() {
    let events_n: usize = env_or("BENCH_EVENTS", 200_000);
    let rate: u64 = env_or("BENCH_RATE", 5_000);
    let latency_secs: u64 = env_or("BENCH_LATENCY_SECS", 20);
    let bench = Bench::setup().await;

    eprintln!("generating {events_n} events…");
    let events = workload::mixed_stream(42, 200, 50, 300, events_n, 0.05, 50);
    let deliveries = events.len();
    let distinct: HashSet<&str> = events
        .iter()
        .map(|(_, e)| e["event_id"].as_str().unwrap())
        .collect();
    let bodies: Vec<(String, Vec<u8>, String)> = events
        .iter()
        .map(|(k, e)| {
            (
                k.clone(),
                serde_json::to_vec(e).unwrap(),
                e["event_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();

    eprintln!("raw broker baseline: {deliveries} messages through a quorum queue, no work…");
    let raw_rate = bench.raw_broker_rate(&bodies).await;

    eprintln!("lean batched consumer baseline: {deliveries} messages into a fresh database…");
    let (lean_rate, lean_pool) = bench.lean_rate(&bodies).await;

    eprintln!(
        "pre-loading {deliveries} deliveries ({} distinct events)…",
        distinct.len()
    );
    bench
        .publish(&bench.topology.events_exchange.clone(), &bodies)
        .await;

    eprintln!("starting the worker and timing the drain…");
    let started_wall = chrono::Utc::now();
    let started = Instant::now();
    let machine_before = machine_cpu();
    let mut worker = bench.spawn_worker();
    let stderr = worker.stderr.take().unwrap();
    // The worker's own counter, from its progress log: waiting on it puts no load on the
    // database while the drain is timed.
    let acked_so_far = Arc::new(AtomicU64::new(0));
    let acked_writer = acked_so_far.clone();
    let log_task = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut last_stop = None;
        while let Ok(Some(line)) = lines.next_line().await {
            if std::env::var("BENCH_ECHO").is_ok() {
                eprintln!("{line}");
            }
            if let Some(acked) = json_field(&line, "events.acked") {
                acked_writer.store(acked, Ordering::Relaxed);
            }
            if line.contains("worker stopped") {
                last_stop = Some(line);
            }
        }
        last_stop
    });
    wait_for_acked(&acked_so_far, deliveries as u64).await;
    let detected = started.elapsed();
    let machine_after = machine_cpu();
    let worker_cpu = process_cpu_secs(worker.id().unwrap());
    let busy = (machine_after.0 - machine_before.0) / (machine_after.1 - machine_before.1);
    let last_commit: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT max(processed_at) FROM processed_events")
            .fetch_one(&bench.pool)
            .await
            .unwrap();
    let drain = (last_commit - started_wall).to_std().unwrap_or(detected);
    let drain_rate = deliveries as f64 / drain.as_secs_f64();
    bench.assert_processed(distinct.len() as i64).await;
    let product_rows = lean::digest(&bench.pool).await;
    let lean_rows = lean::digest(&lean_pool).await;
    let same_rows = product_rows == lean_rows;
    if !same_rows {
        eprintln!("WARNING: the product and the lean consumer wrote different rows:");
        for (p, l) in product_rows.iter().zip(&lean_rows) {
            eprintln!("  {}: product {} / lean {}", p.0, p.1, l.1);
        }
    }
    lean_pool.close().await;

    eprintln!("latency at {rate} events/s offered for {latency_secs} s…");
    let latency_events =
        workload::mixed_stream(43, 100, 40, 200, (rate * latency_secs) as usize, 0.0, 1);
    let latency_ids = bench.paced_publish(&latency_events, rate).await;
    wait_for_acked(&acked_so_far, (deliveries + latency_ids) as u64).await;
    bench
        .assert_processed((distinct.len() + latency_ids) as i64)
        .await;
    let (p50, p99, max): (f64, f64, f64) = sqlx::query_as(
        r#"SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms),
                  percentile_cont(0.99) WITHIN GROUP (ORDER BY ms),
                  max(ms)
           FROM (SELECT (extract(epoch FROM processed_at - occurred_at) * 1000)::float8 AS ms
                 FROM processed_events WHERE occurred_at >= $1) l"#,
    )
    .bind(started_wall + chrono::Duration::seconds(1))
    .fetch_one(&bench.pool)
    .await
    .unwrap();

    let peak_rss_kib = peak_rss_kib(worker.id().unwrap());
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(worker.id().unwrap().to_string())
        .status()
        .await;
    let status = worker.wait().await.unwrap();
    let stop_line = log_task.await.unwrap().unwrap_or_default();
    let acked = json_field(&stop_line, "events.acked");
    let ready_after = bench.ready_messages().await;

    println!();
    println!(
        "## Ingest benchmark ({} cores, broker and database on the same machine)",
        num_cpus()
    );
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| backlog deliveries (incl. 5% duplicates, shuffled in windows of 50) | {deliveries} |"
    );
    println!("| distinct events committed | {} |", distinct.len());
    println!("| raw broker rate (quorum queue, consume + ack, no work) | {raw_rate:.0} msg/s |");
    println!(
        "| worker drain rate | {drain_rate:.0} deliveries/s = {:.0} distinct events/s ({:.1} s) |",
        distinct.len() as f64 / drain.as_secs_f64(),
        drain.as_secs_f64()
    );
    println!(
        "| lean batched consumer (2,000 or 10 ms, 3 statements, one ack) | {lean_rate:.0} deliveries/s |"
    );
    println!(
        "| drain / lean consumer; drain / raw broker | {:.2}; {:.2} |",
        drain_rate / lean_rate,
        drain_rate / raw_rate
    );
    println!("| same desired state as the lean consumer (7 tables compared) | {same_rows} |");
    println!(
        "| latency at {rate}/s offered ({latency_ids} events): p50 / p99 / max | {p50:.1} / {p99:.1} / {max:.1} ms |"
    );
    println!(
        "| during the drain: machine CPU busy / worker CPU time | {:.0}% / {worker_cpu:.1} s |",
        busy * 100.0
    );
    println!(
        "| worker peak RSS (VmHWM) | {:.1} MiB |",
        peak_rss_kib as f64 / 1024.0
    );
    println!(
        "| worker's own counter: events acked | {} |",
        acked.map_or("?".into(), |a| a.to_string())
    );
    println!("| ready messages left after shutdown | {ready_after} |");
    println!("| worker exit | {status} |");
    let expected_acks = (deliveries + latency_ids) as u64;
    if acked != Some(expected_acks) || ready_after != 0 {
        eprintln!("WARNING: the worker acked {acked:?} deliveries, expected {expected_acks}");
    }
    println!(
        "{}",
        serde_json::json!({
            "bench": "ingest",
            "deliveries": deliveries,
            "distinct_events": distinct.len(),
            "drain_per_s": drain_rate.round(),
            "lean_per_s": lean_rate.round(),
            "raw_per_s": raw_rate.round(),
            "ratio_lean": (drain_rate / lean_rate * 100.0).round() / 100.0,
            "ratio_raw": (drain_rate / raw_rate * 100.0).round() / 100.0,
            "same_rows": same_rows,
            "latency_rate": rate,
            "p50_ms": (p50 * 10.0).round() / 10.0,
            "p99_ms": (p99 * 10.0).round() / 10.0,
            "max_ms": (max * 10.0).round() / 10.0,
            "rss_mib": (peak_rss_kib as f64 / 102.4).round() / 10.0,
            "worker_cpu_s": (worker_cpu * 10.0).round() / 10.0,
        })
    );
    bench.teardown().await;
}

impl Bench {
    async fn setup() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let root = std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let amqp_url = std::env::var("TEST_AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
        let database_url = format!("{root}/bench_{id}");
        let db = altinn_sync::state::DbSettings {
            database_url: database_url.clone(),
            database_max_connections: 2,
        };
        let pool = altinn_sync::state::connect(&db).await.unwrap();
        altinn_sync::state::migrate(&pool).await.unwrap();
        let topology = Topology::new(
            &format!("bench-{id}"),
            &format!("bench-{id}.adminflow.events"),
            20,
        );
        let conn = ingest::connect(&amqp_url).await.unwrap();
        let channel = conn.create_channel().await.unwrap();
        topology.declare(&channel).await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        std::mem::forget(conn); // lives for the whole run
        Self {
            id,
            database_url,
            amqp_url,
            topology,
            pool,
            channel,
        }
    }

    fn spawn_worker(&self) -> Child {
        Command::new(env!("CARGO_BIN_EXE_altinn-sync"))
            .arg("run")
            // A free port: several workers run side by side.
            .env("ADMIN_LISTEN", "127.0.0.1:0")
            .env("DATABASE_URL", &self.database_url)
            .env("AMQP_URL", &self.amqp_url)
            .env("TOPOLOGY_PREFIX", format!("bench-{}", self.id))
            .env("EVENTS_EXCHANGE", &self.topology.events_exchange)
            .env("LOG_FORMAT", "json")
            .env("PROGRESS_INTERVAL_SECS", "1")
            .envs(
                std::env::vars()
                    .filter(|(k, _)| k.starts_with("WORKER_"))
                    .map(|(k, v)| (k.trim_start_matches("WORKER_").to_owned(), v)),
            )
            .env(
                "RUST_LOG",
                std::env::var("BENCH_WORKER_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("worker binary")
    }

    async fn publish(&self, exchange: &str, bodies: &[(String, Vec<u8>, String)]) {
        for chunk in bodies.chunks(2000) {
            let mut confirms = Vec::with_capacity(chunk.len());
            for (key, body, id) in chunk {
                let props = json_properties(Some(id));
                confirms.push(
                    self.channel
                        .basic_publish(
                            exchange.into(),
                            key.as_str().into(),
                            BasicPublishOptions::default(),
                            body,
                            props,
                        )
                        .await
                        .unwrap(),
                );
            }
            for c in confirms {
                assert!(c.await.unwrap().is_ack());
            }
        }
    }

    /// Publish-and-consume through a bare quorum queue with the worker's prefetch and batch.
    async fn raw_broker_rate(&self, bodies: &[(String, Vec<u8>, String)]) -> f64 {
        let queue = format!("bench-{}.raw", self.id);
        self.declare_quorum(&queue).await;
        // Default exchange: the routing key is the queue name.
        let to_queue: Vec<(String, Vec<u8>, String)> = bodies
            .iter()
            .map(|(_, b, id)| (queue.clone(), b.clone(), id.clone()))
            .collect();
        self.publish("", &to_queue).await;
        let conn = ingest::connect(&self.amqp_url).await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.basic_qos(8000, BasicQosOptions::default())
            .await
            .unwrap();
        let started = Instant::now();
        let mut consumer = ch
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let mut n = 0usize;
        while let Some(d) = consumer.next().await {
            let d = d.unwrap();
            n += 1;
            if n.is_multiple_of(2000) || n == bodies.len() {
                ch.basic_ack(d.delivery_tag, BasicAckOptions { multiple: true })
                    .await
                    .unwrap();
            }
            if n == bodies.len() {
                break;
            }
        }
        let rate = n as f64 / started.elapsed().as_secs_f64();
        let _ = ch
            .queue_delete(queue.as_str().into(), Default::default())
            .await;
        let _ = conn.close(200, "done".into()).await;
        rate
    }

    /// The lean batched consumer over a quorum queue of its own, into a fresh database.
    async fn lean_rate(&self, bodies: &[(String, Vec<u8>, String)]) -> (f64, PgPool) {
        let queue = format!("bench-{}.lean", self.id);
        self.declare_quorum(&queue).await;
        let to_queue: Vec<(String, Vec<u8>, String)> = bodies
            .iter()
            .map(|(_, b, id)| (queue.clone(), b.clone(), id.clone()))
            .collect();
        self.publish("", &to_queue).await;
        let db = altinn_sync::state::DbSettings {
            database_url: format!("{}_lean", self.database_url),
            database_max_connections: 2,
        };
        let pool = altinn_sync::state::connect(&db).await.unwrap();
        altinn_sync::state::migrate(&pool).await.unwrap();
        altinn_sync::state::align_role_mapping(
            &pool,
            &altinn_sync::policy::RoleMapping::default(),
            altinn_sync::state::Rebuild::IfMappingChanged,
        )
        .await
        .unwrap();
        let rate = lean::drain(&self.amqp_url, &queue, &pool, bodies.len()).await;
        (rate, pool)
    }

    async fn declare_quorum(&self, queue: &str) {
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        self.channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args,
            )
            .await
            .unwrap();
    }

    /// Publishes at `rate` per second in 10 ms ticks, stamping `occurred_at` at send time.
    async fn paced_publish(&self, events: &[(String, Value)], rate: u64) -> usize {
        let per_tick = (rate / 100).max(1) as usize;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut confirms = Vec::with_capacity(events.len());
        for chunk in events.chunks(per_tick) {
            tick.tick().await;
            for (key, event) in chunk {
                let mut event = event.clone();
                event["occurred_at"] = Value::String(
                    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                );
                let props = json_properties(event["event_id"].as_str());
                let body = serde_json::to_vec(&event).unwrap();
                confirms.push(
                    self.channel
                        .basic_publish(
                            self.topology.events_exchange.as_str().into(),
                            key.as_str().into(),
                            BasicPublishOptions::default(),
                            &body,
                            props,
                        )
                        .await
                        .unwrap(),
                );
            }
        }
        for c in confirms {
            assert!(c.await.unwrap().is_ack());
        }
        events.len()
    }

    async fn assert_processed(&self, n: i64) {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM processed_events")
            .fetch_one(&self.pool)
            .await
            .unwrap();
        assert_eq!(count, n, "events committed, by the database's count");
    }

    async fn ready_messages(&self) -> u32 {
        let q = self
            .channel
            .queue_declare(
                self.topology.events_queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        q.message_count()
    }

    async fn teardown(self) {
        for q in [
            &self.topology.events_queue,
            &self.topology.commands_queue,
            &self.topology.dead_letter_queue,
        ] {
            let _ = self
                .channel
                .queue_delete(q.as_str().into(), Default::default())
                .await;
        }
        for x in [
            &self.topology.events_exchange,
            &self.topology.commands_exchange,
            &self.topology.dead_letter_exchange,
        ] {
            let _ = self
                .channel
                .exchange_delete(x.as_str().into(), Default::default())
                .await;
        }
        self.pool.close().await;
        let root = std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let admin = PgPool::connect(&format!("{root}/postgres")).await.unwrap();
        for db in [
            format!("bench_{}", self.id),
            format!("bench_{}_lean", self.id),
        ] {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
            )))
            .execute(&admin)
            .await;
        }
    }
}

/// Waits until the worker reports `n` acked deliveries (progress is logged every second).
async fn wait_for_acked(acked: &AtomicU64, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(900);
    while acked.load(Ordering::Relaxed) < n {
        let now = acked.load(Ordering::Relaxed);
        assert!(Instant::now() < deadline, "drain stalled at {now} of {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// (busy, total) jiffies of the whole machine, from /proc/stat.
fn machine_cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: f64 = cpu.iter().sum();
    let idle = cpu.get(3).copied().unwrap_or(0.0) + cpu.get(4).copied().unwrap_or(0.0);
    (total - idle, total)
}

/// User plus system CPU seconds a process has used so far.
fn process_cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_comm = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

fn json_field(line: &str, field: &str) -> Option<u64> {
    let v: Value = serde_json::from_str(line).ok()?;
    v["fields"][field].as_u64()
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
