//! What the reconcile and nightly benchmarks share: the generated customer base, its facts in
//! PostgreSQL and its delegations in the simulator's world (both in bulk, without a call to
//! Altinn), and the worker as a process.
#![allow(dead_code)] // each bench uses its own part

#[path = "../../tests/common/workload.rs"]
pub mod workload;

use std::process::Stdio;
use std::time::Duration;

use rand::RngExt;
use serde_json::json;
use sqlx::PgPool;
use tokio::process::{Child, Command};
use uuid::Uuid;

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub const SCOPES: &str = "altinn:accessmanagement/authorizedparties \
                      altinn:clientdelegations.read altinn:clientdelegations.write";
pub const ROLE: &str = "AccountantWithSigningRights";
pub const PACKAGE: &str = "regnskapsforer-med-signeringsrettighet";

pub struct Shape {
    pub firms: u32,
    pub employees: u32,
    pub clients: u32,
    pub per_employee: u32,
    pub drift: f64,
}

/// One generated employee: who, in which firm, and the client indexes they work for.
pub struct Employee {
    pub firm: usize,
    pub person: workload::Person,
    pub party: Uuid,
    pub clients: Vec<usize>,
}

pub struct Generated {
    pub firm_orgs: Vec<String>,
    pub firm_parties: Vec<Uuid>,
    /// Per firm: (org number, party) of each client.
    pub clients: Vec<Vec<(String, Uuid)>>,
    pub employees: Vec<Employee>,
}

pub fn generate(shape: &Shape) -> Generated {
    let firm_orgs: Vec<String> = (0..shape.firms).map(workload::org_number).collect();
    let firm_parties = (0..shape.firms).map(|_| Uuid::new_v4()).collect();
    let clients = (0..shape.firms)
        .map(|f| {
            (0..shape.clients)
                .map(|c| {
                    let org = workload::org_number(1_000_000 + f * shape.clients + c);
                    (org, Uuid::new_v4())
                })
                .collect()
        })
        .collect();
    let mut employees = Vec::new();
    for f in 0..shape.firms {
        for e in 0..shape.employees {
            let clients = (0..shape.per_employee)
                .map(|k| ((e * 7 + k) % shape.clients) as usize)
                .collect();
            employees.push(Employee {
                firm: f as usize,
                person: workload::Person::new(f * shape.employees + e),
                party: Uuid::new_v4(),
                clients,
            });
        }
    }
    Generated {
        firm_orgs,
        firm_parties,
        clients,
        employees,
    }
}

/// The facts, set-based, then `desired_grants` built the way the worker builds it.
pub async fn load_facts(pool: &PgPool, g: &Generated) {
    sqlx::query("INSERT INTO firms (org_number, high_water_sequence) SELECT unnest($1::text[]), 1")
        .bind(&g.firm_orgs)
        .execute(pool)
        .await
        .unwrap();
    for chunk in g.employees.chunks(10_000) {
        let firms: Vec<&str> = chunk.iter().map(|e| g.firm_orgs[e.firm].as_str()).collect();
        let ids: Vec<Uuid> = chunk.iter().map(|e| e.person.id).collect();
        let nins: Vec<&str> = chunk.iter().map(|e| e.person.nin.as_str()).collect();
        let names: Vec<&str> = chunk.iter().map(|e| e.person.last_name.as_str()).collect();
        sqlx::query(
            r#"INSERT INTO employee_identities (firm, employee_id, national_identity_number,
                                               last_name, sequence)
               SELECT *, 1 FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[])"#,
        )
        .bind(&firms)
        .bind(&ids)
        .bind(&nins)
        .bind(&names)
        .execute(pool)
        .await
        .unwrap();
        sqlx::query(
            r#"INSERT INTO employee_roles (firm, employee_id, roles, sequence)
               SELECT f, e, ARRAY[$3], 1 FROM unnest($1::text[], $2::uuid[]) AS t(f, e)"#,
        )
        .bind(&firms)
        .bind(&ids)
        .bind(ROLE)
        .execute(pool)
        .await
        .unwrap();
        let (mut af, mut ae, mut ac) = (Vec::new(), Vec::new(), Vec::new());
        for e in chunk {
            for &c in &e.clients {
                af.push(g.firm_orgs[e.firm].as_str());
                ae.push(e.person.id);
                ac.push(g.clients[e.firm][c].0.as_str());
            }
        }
        sqlx::query(
            r#"INSERT INTO assignments (firm, employee_id, client_org_number, active, sequence)
               SELECT *, true, 1 FROM unnest($1::text[], $2::uuid[], $3::text[])"#,
        )
        .bind(&af)
        .bind(&ae)
        .bind(&ac)
        .execute(pool)
        .await
        .unwrap();
    }
    let mapping = altinn_sync::policy::RoleMapping::default();
    altinn_sync::state::align_role_mapping(pool, &mapping, altinn_sync::state::Rebuild::Always)
        .await
        .unwrap();
}

/// What Altinn and the worker already know in the steady-state case: every agent, and the
/// desired delegations minus the missing ones plus some extra ones. Returns (missing, extra).
pub async fn steady_state(
    pool: &PgPool,
    g: &Generated,
    shape: &Shape,
) -> (Vec<serde_json::Value>, u64, u64) {
    let mut rng = rand::rng();
    let (mut missing, mut extra) = (0, 0);
    let mut held = Vec::with_capacity(g.employees.len());
    for e in &g.employees {
        let mut parties = Vec::with_capacity(e.clients.len() + 1);
        for &c in &e.clients {
            if rng.random::<f64>() < shape.drift / 2.0 {
                missing += 1;
            } else {
                parties.push(g.clients[e.firm][c].1);
            }
        }
        // An extra package on a client the employee does not work for.
        if rng.random::<f64>() < shape.drift / 2.0 * shape.per_employee as f64 {
            let other = (0..shape.clients as usize).find(|c| !e.clients.contains(c));
            if let Some(c) = other {
                parties.push(g.clients[e.firm][c].1);
                extra += 1;
            }
        }
        held.push(json!({
            "firmOrgNumber": g.firm_orgs[e.firm], "agentParty": e.party,
            "role": "regnskapsforer", "package": PACKAGE, "clientParties": parties,
        }));
    }
    // The worker made them agents and delivered every desired grant in earlier flushes.
    for chunk in g.employees.chunks(10_000) {
        let firms: Vec<&str> = chunk.iter().map(|e| g.firm_orgs[e.firm].as_str()).collect();
        let ids: Vec<Uuid> = chunk.iter().map(|e| e.person.id).collect();
        let parties: Vec<Uuid> = chunk.iter().map(|e| e.party).collect();
        sqlx::query(
            r#"INSERT INTO altinn_agents (firm, employee_id, agent_party)
               SELECT * FROM unnest($1::text[], $2::uuid[], $3::uuid[])"#,
        )
        .bind(&firms)
        .bind(&ids)
        .bind(&parties)
        .execute(pool)
        .await
        .unwrap();
    }
    sqlx::query(
        r#"INSERT INTO applied_grants (firm, employee_id, client_org_number, package)
           SELECT firm, employee_id, client_org_number, package FROM desired_grants"#,
    )
    .execute(pool)
    .await
    .unwrap();
    // The outbox keeps the delivered changes (it is never pruned): the reconcile checks each
    // key against them.
    sqlx::query(
        r#"INSERT INTO outbox (firm, employee_id, client_org_number, package, action, generation,
                               idempotency_key, cause, status, attempts, created_at, finished_at)
           SELECT firm, employee_id, client_org_number, package, 'grant', 1,
                  concat_ws('/', firm, employee_id, client_org_number, package, 'grant', 1),
                  gen_random_uuid(), 'delivered', 1, now() - interval '2 days',
                  now() - interval '2 days'
           FROM desired_grants"#,
    )
    .execute(pool)
    .await
    .unwrap();
    (held, missing, extra)
}

pub fn world(g: &Generated, held: Vec<serde_json::Value>) -> serde_json::Value {
    let demo: serde_json::Value =
        serde_json::from_str(include_str!("../../deploy/sim/demo-world.json")).unwrap();
    let firms: Vec<_> = g
        .firm_orgs
        .iter()
        .zip(&g.firm_parties)
        .map(|(org, party)| json!({"orgNumber": org, "partyUuid": party, "name": "Firm"}))
        .collect();
    let mut clients = Vec::new();
    for (f, list) in g.clients.iter().enumerate() {
        for (org, party) in list {
            clients.push(
                json!({"partyUuid": party, "orgNumber": org, "name": "Client AS",
                "firmRoles": [{"firmOrgNumber": g.firm_orgs[f], "role": "regnskapsforer"}]}),
            );
        }
    }
    let persons: Vec<_> = g
        .employees
        .iter()
        .map(|e| {
            json!({"partyUuid": e.party, "nationalIdentityNumber": e.person.nin,
                        "lastName": e.person.last_name, "name": "Bench"})
        })
        .collect();
    json!({
        "maskinportenClients": demo["maskinportenClients"],
        "firms": firms, "clients": clients, "persons": persons, "held": held,
        "altinnTokenLifetimeSecs": 3600,
    })
}

pub fn worker(database_url: &str, id: &str, port: u16) -> Child {
    worker_command(database_url, id, port)
        .spawn()
        .expect("worker binary")
}

/// The worker against `database_url` and the simulator on `port`, with its own topology.
pub fn worker_command(database_url: &str, id: &str, port: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_altinn-sync"));
    command
        .arg("run")
        // A free port: several workers run side by side.
        .env("ADMIN_LISTEN", "127.0.0.1:0")
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
        .env("RUST_LOG", worker_log())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    command
}

/// The simulator in its own process on `port`, loading `world_file`, with `args` (capacity,
/// faults) after.
pub fn simulator(port: u16, world_file: &std::path::Path, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_altinn-sync"))
        .args(["altinn-sim", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--world")
        .arg(world_file)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// The worker's `RUST_LOG`: `BENCH_WORKER_LOG`, or warnings only, so logging costs nothing.
/// `BENCH_WORKER_LOG=info,sqlx::query=debug` shows where the time goes, statement by statement.
pub fn worker_log() -> String {
    std::env::var("BENCH_WORKER_LOG").unwrap_or_else(|_| "warn".into())
}

pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

pub async fn wait_for_port(port: u16) {
    for _ in 0..1200 {
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
