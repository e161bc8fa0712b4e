//! Flush benchmark: package changes per second from the outbox to the Altinn simulator.
//!
//! `cargo bench --bench flush` (needs the local PostgreSQL; RabbitMQ for the worker's ingest).
//! Settings: BENCH_FIRMS (default 200), BENCH_EMPLOYEES (per firm, 20), BENCH_CLIENTS (per
//! firm, 20), BENCH_ASSIGNMENTS (clients per employee, 5), BENCH_LATENCY_MS (added by the
//! simulator, 0), BENCH_RATE_LIMIT (the simulator's requests/s, 0 = none), FLUSH_CONCURRENCY
//! (unset: the worker's adaptive limit; set: that fixed limit), FLUSH_CONCURRENCY_PER_FIRM (4),
//! BENCH_REPLICAS (worker processes on the same database, 1; the settings are per replica).
//!
//! The baseline is a bare `AltinnClient` re-sending the same delegations in the same run, at 16
//! calls in flight and at the limit the worker used (its peak, read from `/metrics`). The last
//! line is one JSON object with every figure. Behind BENCH_RATE_LIMIT the baseline is that
//! limit: `calls_ratio` is the share of Altinn's capacity the worker used.
#![allow(
    // Tests and benchmarks report failure by panicking, and count in small numbers.
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

#[path = "../tests/common/workload.rs"]
mod workload;

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::PgPool;
use tokio::process::{Child, Command};
use uuid::Uuid;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const SCOPES: &str = "altinn:accessmanagement/authorizedparties \
                      altinn:clientdelegations.read altinn:clientdelegations.write";

#[tokio::main]
async fn main() {
    let firms: u32 = env_or("BENCH_FIRMS", 200);
    let employees: u32 = env_or("BENCH_EMPLOYEES", 20);
    let clients: u32 = env_or("BENCH_CLIENTS", 20);
    let per_employee: u32 = env_or("BENCH_ASSIGNMENTS", 5);
    let latency_ms: u64 = env_or("BENCH_LATENCY_MS", 0);
    let replicas: usize = env_or("BENCH_REPLICAS", 1);
    let rate_limit: u64 = env_or("BENCH_RATE_LIMIT", 0);
    let fixed: Option<usize> = std::env::var("FLUSH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok());
    let per_firm: usize = env_or("FLUSH_CONCURRENCY_PER_FIRM", 4);

    let id = Uuid::new_v4().simple().to_string()[..12].to_owned();
    let root = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let database_url = format!("{root}/bench_{id}");
    let db = altinn_sync::state::DbSettings {
        database_url: database_url.clone(),
        database_max_connections: 4,
    };
    let pool = altinn_sync::state::connect(&db).await.unwrap();
    altinn_sync::state::migrate(&pool).await.unwrap();

    eprintln!("building {firms} firms x {employees} employees x {per_employee} clients…");
    let mut world_firms = Vec::new();
    let mut world_clients = Vec::new();
    let mut world_persons = Vec::new();
    for f in 0..firms {
        let firm = workload::org_number(f);
        world_firms.push(json!({"orgNumber": firm, "partyUuid": Uuid::new_v4(),
                                "name": format!("Firm {f}"), "systemUserApproved": true}));
        let client_orgs: Vec<String> = (0..clients)
            .map(|c| workload::org_number(1_000_000 + f * clients + c))
            .collect();
        for org in &client_orgs {
            world_clients.push(json!({"partyUuid": Uuid::new_v4(), "orgNumber": org,
                "name": "Client AS", "firmRoles": [{"firmOrgNumber": firm, "role": "regnskapsforer"}]}));
        }
        for e in 0..employees {
            let person = workload::Person::new(f * employees + e);
            world_persons.push(json!({"partyUuid": Uuid::new_v4(),
                "nationalIdentityNumber": person.nin, "lastName": person.last_name, "name": "Bench"}));
            insert_employee(&pool, &firm, &person, &client_orgs, e, per_employee).await;
        }
    }
    let mapping = altinn_sync::policy::RoleMapping::default();
    altinn_sync::state::align_role_mapping(&pool, &mapping, altinn_sync::state::Rebuild::Always)
        .await
        .unwrap();
    let grants: i64 = sqlx::query_scalar("SELECT count(*) FROM desired_grants")
        .fetch_one(&pool)
        .await
        .unwrap();

    let public_key = include_str!("../deploy/sim/demo-world.json");
    let demo: serde_json::Value = serde_json::from_str(public_key).unwrap();
    let world = json!({
        "maskinportenClients": demo["maskinportenClients"],
        "firms": world_firms, "clients": world_clients, "persons": world_persons,
    });
    let world_file = std::env::temp_dir().join(format!("bench-world-{id}.json"));
    std::fs::write(&world_file, serde_json::to_vec(&world).unwrap()).unwrap();
    let port = 20_000 + (std::process::id() % 10_000) as u16;
    let mut sim = Command::new(env!("CARGO_BIN_EXE_altinn-sync"));
    sim.args(["altinn-sim", "--listen", &format!("127.0.0.1:{port}")]);
    if rate_limit > 0 {
        sim.args(["--rate-limit", &rate_limit.to_string()]);
    }
    let mut sim = sim
        .arg("--world")
        .arg(&world_file)
        .args(["--latency-ms", &latency_ms.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for_port(port).await;

    // One SyncNow per firm, recorded as the ingest would record it.
    sqlx::query(
        r#"INSERT INTO commands (command_id, command_type, firm, requested_at)
           SELECT gen_random_uuid(), 'SyncNow', org_number, now() FROM
           (SELECT DISTINCT firm AS org_number FROM desired_grants) f"#,
    )
    .execute(&pool)
    .await
    .unwrap();

    let mode = fixed.map_or_else(|| "adaptive".to_owned(), |n| format!("fixed {n}"));
    eprintln!(
        "flushing {grants} grants (latency {latency_ms} ms, rate limit {rate_limit}/s, concurrency {mode}, {per_firm} per firm)…"
    );
    // The setup's statements are counted when the connections that made them end.
    pool.close().await;
    let pool = altinn_sync::state::connect(&db).await.unwrap();
    let transactions_before = transactions(&pool).await;
    let started = Instant::now();
    let admin_port = port + 1;
    let mut workers: Vec<Child> = (0..replicas.max(1))
        .map(|i| {
            // The first replica's /metrics is read for the limit, the 429s and the calls.
            let admin = if i == 0 { admin_port } else { 0 };
            worker(&database_url, &id, (port, admin), fixed, per_firm)
        })
        .collect();
    let mut delivered = 0;
    let mut peak_limit = 0.0_f64;
    let mut scrape = Scrape::default();
    while delivered < grants {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(now) = Scrape::read(admin_port).await {
            peak_limit = peak_limit.max(now.limit);
            scrape = now;
        }
        delivered = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE status = 'delivered'")
            .fetch_one(&pool)
            .await
            .unwrap();
        let parked: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE status = 'parked'")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(parked, 0, "nothing should be refused");
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "flush stalled at {delivered}"
        );
    }
    let (first, last): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT min(created_at), max(finished_at) FROM outbox")
            .fetch_one(&pool)
            .await
            .unwrap();
    let elapsed = (last - first).to_std().unwrap().as_secs_f64();
    let agents: i64 = sqlx::query_scalar("SELECT count(*) FROM altinn_agents")
        .fetch_one(&pool)
        .await
        .unwrap();
    // + token, exchange, parties and clients per firm and replica, at most.
    let calls = delivered + agents + 4 * firms as i64 * replicas as i64;
    let retries: i64 = sqlx::query_scalar("SELECT count(*) FROM audit WHERE outcome = 'retry'")
        .fetch_one(&pool)
        .await
        .unwrap();
    if let Some(now) = Scrape::read(admin_port).await {
        peak_limit = peak_limit.max(now.limit);
        scrape = now;
    }
    let rss_mib = workers
        .first()
        .and_then(Child::id)
        .and_then(peak_rss_mib)
        .unwrap_or(0.0);
    for worker in &mut workers {
        let _ = worker.kill().await;
    }
    // Counted by PostgreSQL for the bench's database: the workers' transactions (a statement
    // outside one is one) and this loop's polls, per change. A killed worker's connections
    // report theirs as they end.
    let transactions_per_change =
        (transactions(&pool).await - transactions_before) as f64 / delivered.max(1) as f64;
    let used = fixed.unwrap_or(peak_limit as usize).max(1);
    // Behind a rate limit the ceiling is the limit itself; a bare client would only be refused.
    let (baseline_16, baseline) = if rate_limit > 0 {
        (rate_limit as f64, rate_limit as f64)
    } else {
        eprintln!(
            "baseline: the same delegations again, straight from the client (no database), at 16 and {used}…"
        );
        let at_16 = raw_client_rate(&pool, port, 16).await;
        let at_used = if used == 16 {
            at_16
        } else {
            raw_client_rate(&pool, port, used).await
        };
        (at_16, at_used)
    };
    let _ = sim.start_kill();
    let changes_per_s = delivered as f64 / elapsed;
    let calls_per_s = scrape.calls / elapsed;

    println!();
    println!("## Flush benchmark (2 cores; simulator, worker and PostgreSQL on the same machine)");
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| firms / package changes | {firms} / {delivered} |");
    println!("| added Altinn latency | {latency_ms} ms |");
    println!("| worker replicas | {replicas} |");
    println!("| simulator rate limit | {rate_limit} requests/s (0: none) |");
    println!(
        "| concurrency overall / per firm, per replica | {mode} (peak {peak_limit:.0}) / {per_firm} |"
    );
    println!("| from planning to the last delivery | {elapsed:.1} s |");
    println!("| package changes/s | {:.0} |", delivered as f64 / elapsed);
    println!("| deliveries retried (audit) | {retries} |");
    println!(
        "| Altinn calls/s (delegations + agents + 4 per firm, estimated) | {:.0} |",
        calls as f64 / elapsed
    );
    println!(
        "| Altinn calls/s (first replica's /metrics) / answered 429 | {calls_per_s:.0} / {:.0} |",
        scrape.refused
    );
    println!("| peak RSS of the first replica | {rss_mib:.1} MiB |");
    println!(
        "| database transactions per change (all replicas and the bench's polls) | {transactions_per_change:.3} |"
    );
    println!(
        "| baseline, same run: the client alone re-sending every delegation (changed=false) at 16 / at {used} | {baseline_16:.0} / {baseline:.0} calls/s |"
    );
    println!(
        "{}",
        json!({
            "bench": "flush", "latency_ms": latency_ms, "rate_limit": rate_limit,
            "concurrency": mode, "peak_limit": peak_limit, "replicas": replicas,
            "changes": delivered, "seconds": elapsed, "changes_per_s": changes_per_s,
            "calls_per_s": calls_per_s, "calls_429": scrape.refused,
            "share_429": if scrape.calls > 0.0 { scrape.refused / scrape.calls } else { 0.0 },
            "retries": retries, "rss_mib": rss_mib,
            "transactions_per_change": transactions_per_change,
            "baseline_calls_per_s_16": baseline_16, "baseline_calls_per_s": baseline,
            "ratio": changes_per_s / baseline,
            "calls_ratio": calls_per_s / baseline,
        })
    );

    pool.close().await;
    let admin = PgPool::connect(&format!("{root}/postgres")).await.unwrap();
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS bench_{id} WITH (FORCE)"
    )))
    .execute(&admin)
    .await;
    let _ = std::fs::remove_file(world_file);
}

/// The ceiling without the outbox: every delivered delegation sent again by a bare
/// `AltinnClient`, as fast as the concurrency allows. Altinn answers `changed=false`.
async fn raw_client_rate(pool: &PgPool, port: u16, concurrency: usize) -> f64 {
    use altinn_sync::altinn::{AltinnClient, AltinnSettings, wire::DelegationBatch};
    use futures_util::StreamExt;
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
    let client = AltinnClient::new(settings.validate().unwrap().unwrap())
        .unwrap()
        .with_concurrency(altinn_sync::altinn::Concurrency::Fixed(concurrency));
    let rows: Vec<(String, String, Uuid)> = sqlx::query_as(
        r#"SELECT o.firm, o.client_org_number, a.agent_party FROM outbox o
           JOIN altinn_agents a ON a.firm = o.firm AND a.employee_id = o.employee_id
           WHERE o.status = 'delivered'"#,
    )
    .fetch_all(pool)
    .await
    .unwrap();
    // Parties first, outside the timing, as the worker caches them too.
    let mut parties = std::collections::HashMap::new();
    for (firm, _, _) in &rows {
        if !parties.contains_key(firm) {
            let party = client.firm_party(firm).await.unwrap();
            let clients: std::collections::HashMap<String, Uuid> = client
                .clients(&party)
                .await
                .unwrap()
                .into_iter()
                .filter_map(|c| Some((c.client.organization_identifier?, c.client.id)))
                .collect();
            parties.insert(firm.clone(), (party, clients));
        }
    }
    let batch = DelegationBatch::for_role(
        "regnskapsforer",
        ["urn:altinn:accesspackage:regnskapsforer-med-signeringsrettighet"],
    );
    let started = Instant::now();
    let n = rows.len();
    futures_util::stream::iter(rows)
        .map(|(firm, client_org, agent)| {
            let (party, clients) = &parties[&firm];
            let (client, batch) = (&client, &batch);
            async move {
                client
                    .delegate(party, clients[&client_org], agent, batch)
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
    n as f64 / started.elapsed().as_secs_f64()
}

/// Transactions committed in the bench's database so far, as PostgreSQL's statistics have them
/// (a backend reports its counts at most once a second, and as it ends).
async fn transactions(pool: &PgPool) -> i64 {
    // Time for ended connections to report.
    tokio::time::sleep(Duration::from_millis(500)).await;
    sqlx::query_scalar(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn insert_employee(
    pool: &PgPool,
    firm: &str,
    person: &workload::Person,
    clients: &[String],
    index: u32,
    per_employee: u32,
) {
    sqlx::query(
        "INSERT INTO firms (org_number, high_water_sequence) VALUES ($1, 1) ON CONFLICT DO NOTHING",
    )
    .bind(firm)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        r#"INSERT INTO employee_identities (firm, employee_id, national_identity_number, last_name, sequence)
           VALUES ($1, $2, $3, $4, 1)"#,
    )
    .bind(firm)
    .bind(person.id)
    .bind(&person.nin)
    .bind(&person.last_name)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO employee_roles (firm, employee_id, roles, sequence) VALUES ($1, $2, $3, 1)",
    )
    .bind(firm)
    .bind(person.id)
    .bind(vec!["AccountantWithSigningRights".to_owned()])
    .execute(pool)
    .await
    .unwrap();
    let mine: Vec<String> = (0..per_employee)
        .map(|k| clients[((index + k) as usize) % clients.len()].clone())
        .collect();
    sqlx::query(
        r#"INSERT INTO assignments (firm, employee_id, client_org_number, active, sequence)
           SELECT $1, $2, c, true, 1 FROM unnest($3::text[]) AS c"#,
    )
    .bind(firm)
    .bind(person.id)
    .bind(mine)
    .execute(pool)
    .await
    .unwrap();
}

fn worker(
    database_url: &str,
    id: &str,
    (port, admin_port): (u16, u16),
    fixed: Option<usize>,
    per_firm: usize,
) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_altinn-sync"));
    if let Some(n) = fixed {
        command.env("FLUSH_CONCURRENCY", n.to_string());
    } else {
        command.env_remove("FLUSH_CONCURRENCY");
    }
    command
        .arg("run")
        // 0 is a free port: several workers run side by side.
        .env("ADMIN_LISTEN", format!("127.0.0.1:{admin_port}"))
        .env("DATABASE_URL", database_url)
        .env("TOPOLOGY_PREFIX", format!("bench-{id}"))
        .env("EVENTS_EXCHANGE", format!("bench-{id}.adminflow.events"))
        .env("ALTINN_BASE_URL", format!("http://127.0.0.1:{port}"))
        .env("MASKINPORTEN_URL", format!("http://127.0.0.1:{port}/"))
        .env("MASKINPORTEN_CLIENT_ID", "demo-client")
        .env("MASKINPORTEN_KID", "demo-kid")
        .env(
            "MASKINPORTEN_KEY_FILE",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/deploy/sim/test-only-maskinporten-key.pem"
            ),
        )
        .env("MASKINPORTEN_SCOPES", SCOPES)
        .env("FLUSH_CONCURRENCY_PER_FIRM", per_firm.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("worker binary")
}

async fn wait_for_port(port: u16) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the simulator did not start");
}

/// What the first replica's `/metrics` says.
#[derive(Debug, Default, Clone, Copy)]
struct Scrape {
    limit: f64,
    /// Calls to Altinn's access management (not Maskinporten or the token exchange).
    calls: f64,
    refused: f64,
}

impl Scrape {
    async fn read(admin_port: u16) -> Option<Self> {
        let text = reqwest::get(format!("http://127.0.0.1:{admin_port}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let mut scrape = Self::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let value: f64 = value.parse().unwrap_or(0.0);
            if series == "altinn_sync_altinn_concurrency_limit" {
                scrape.limit = value;
            } else if series.starts_with("altinn_sync_altinn_requests_total{")
                && !series.contains("maskinporten_token")
                && !series.contains("token_exchange")
            {
                scrape.calls += value;
                if series.contains("status=\"429\"") {
                    scrape.refused += value;
                }
            }
        }
        Some(scrape)
    }
}

/// The process's peak resident set (`VmHWM`), in MiB.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}
