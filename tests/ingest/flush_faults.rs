//! The flush under Altinn's bad days: 429 storms with `Retry-After`, timeouts, and a worker
//! killed mid-flush. Every change converges, and nothing is sent again once it went through.

use std::collections::{BTreeSet, HashMap};
use std::process::Stdio;

use altinn_sync::altinn::AltinnSettings;
use altinn_sync::sim::{self, Client, Faults, FirmRole, Person, Simulator, World};
use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::common::{workload, TestApp};
use crate::flush::{flushed, maskinporten_client, serve, sync_now, FIRM, MED, SCOPES};

const PEOPLE: u32 = 5;
const CLIENTS: u32 = 10;

/// A simulator with a journal, the firm, `CLIENTS` clients that registered it and `PEOPLE`
/// employees.
struct Office {
    sim: Simulator,
    settings: AltinnSettings,
    /// (employee id, party, person) per employee.
    people: Vec<(Uuid, Uuid, workload::Person)>,
    /// (org number, party) per client.
    clients: Vec<(String, Uuid)>,
    shutdown: CancellationToken,
}

impl Drop for Office {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn office(request_timeout_ms: u64) -> Office {
    let people: Vec<(Uuid, Uuid, workload::Person)> = (0..PEOPLE)
        .map(|n| {
            let person = workload::Person::new(900 + n);
            (person.id, Uuid::new_v4(), person)
        })
        .collect();
    let clients: Vec<(String, Uuid)> = (0..CLIENTS)
        .map(|n| (workload::org_number(1_500_000 + n), Uuid::new_v4()))
        .collect();
    let world = World {
        maskinporten_clients: vec![maskinporten_client()],
        maskinporten_issuer: None,
        firms: vec![sim::Firm {
            org_number: FIRM.into(),
            party_uuid: Uuid::new_v4(),
            name: "Demo Regnskap AS".into(),
            system_user_approved: true,
        }],
        clients: clients
            .iter()
            .map(|(org, party)| Client {
                party_uuid: *party,
                org_number: org.clone(),
                name: "Klient AS".into(),
                firm_roles: vec![FirmRole {
                    firm_org_number: FIRM.into(),
                    role: "regnskapsforer".into(),
                }],
            })
            .collect(),
        persons: people
            .iter()
            .map(|(_, party, p)| Person {
                party_uuid: *party,
                national_identity_number: p.nin.clone(),
                last_name: p.last_name.clone(),
                name: "Test".into(),
            })
            .collect(),
        altinn_token_lifetime_secs: None,
        held: Vec::new(),
    };
    let sim = Simulator::with_journal();
    let (settings, shutdown) = serve(world, sim.clone(), request_timeout_ms).await;
    Office {
        sim,
        settings,
        people,
        clients,
        shutdown,
    }
}

impl Office {
    /// Every employee becomes an accountant with signing rights on every client: one
    /// `regnskapsforer-med-signeringsrettighet` grant per (client, employee). Returns the last
    /// sequence.
    async fn publish_story(&self, app: &TestApp) -> i64 {
        let mut sequence = 0;
        let mut event = |event_type: &str, data: serde_json::Value| {
            sequence += 1;
            json!({
                "event_id": Uuid::new_v4(), "event_type": event_type,
                "occurred_at": "2026-11-24T09:00:00Z", "firm": {"org_number": FIRM},
                "sequence": sequence, "data": data,
            })
        };
        let mut events = Vec::new();
        for (_, _, person) in &self.people {
            events.push(event(
                "RoleChanged",
                json!({"employee": person.json(), "roles": ["AccountantWithSigningRights"]}),
            ));
            for (org, _) in &self.clients {
                events.push(event(
                    "ClientAssigned",
                    json!({"employee": person.json(),
                           "client": {"org_number": org, "name": "Klient AS"}}),
                ));
            }
        }
        let events: Vec<(String, serde_json::Value)> = events
            .into_iter()
            .map(|e| (e["event_type"].as_str().unwrap().to_owned(), e))
            .collect();
        app.publish_all(&events).await;
        sequence
    }

    /// Every (agent, client) pair, as the story wants them.
    fn expected(&self) -> BTreeSet<(Uuid, Uuid)> {
        self.people
            .iter()
            .flat_map(|(_, agent, _)| self.clients.iter().map(|(_, c)| (*agent, *c)))
            .collect()
    }

    /// (agent, client) pairs holding exactly the story's package, as the simulator has them.
    async fn held(&self) -> BTreeSet<(Uuid, Uuid)> {
        self.sim
            .delegations()
            .await
            .into_iter()
            .filter(|d| !d.packages.is_empty())
            .map(|d| {
                assert_eq!(d.packages, [MED], "only the story's package");
                (d.agent_party, d.client_party)
            })
            .collect()
    }

    /// Asserts that once the worker recorded a delivery, Altinn never heard of that change
    /// again. Returns how many delegation calls Altinn answered with 200 per change.
    async fn no_call_after_success(&self, app: &TestApp) -> HashMap<(Uuid, Uuid), usize> {
        let agent_of: HashMap<Uuid, Uuid> = self.people.iter().map(|(e, a, _)| (*e, *a)).collect();
        let client_of: HashMap<&str, Uuid> =
            self.clients.iter().map(|(o, c)| (o.as_str(), *c)).collect();
        let delivered: Vec<(Uuid, String, DateTime<Utc>)> = sqlx::query_as(
            r#"SELECT employee_id, client_org_number, at FROM audit
               WHERE outcome = 'delivered' AND action = 'grant'"#,
        )
        .fetch_all(&app.pool)
        .await
        .unwrap();
        assert_eq!(
            delivered.len(),
            (PEOPLE * CLIENTS) as usize,
            "each change delivered exactly once"
        );
        let delivered: HashMap<(Uuid, Uuid), DateTime<Utc>> = delivered
            .into_iter()
            .map(|(e, c, at)| ((agent_of[&e], client_of[c.as_str()]), at))
            .collect();
        let mut answered: HashMap<(Uuid, Uuid), usize> = HashMap::new();
        for e in self.sim.journal() {
            if !(e.method == "POST" && e.path.ends_with("/agents/accesspackages")) {
                continue;
            }
            let param = |name: &str| {
                e.query
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.parse::<Uuid>().unwrap())
                    .unwrap()
            };
            let key = (param("to"), param("from"));
            let recorded = delivered[&key];
            assert!(
                e.at <= recorded,
                "Altinn was called for {key:?} at {} after the delivery was recorded at {recorded}",
                e.at
            );
            if e.status == 200 {
                *answered.entry(key).or_default() += 1;
            }
        }
        answered
    }
}

/// Flushes the story with a worker in this process while Altinn has `faults`, and checks that
/// Altinn ends up holding exactly what the story wants.
async fn flushed_under(faults: Faults, request_timeout_ms: u64) -> (Office, TestApp) {
    let office = office(request_timeout_ms).await;
    let mut app = TestApp::without_worker().await;
    app.settings.altinn = office.settings.clone();
    app.start_worker().await;
    office.sim.set_faults(faults).await;
    let last = office.publish_story(&app).await;
    sync_now(&app, last).await;
    flushed(&app, 1).await;
    assert_eq!(office.held().await, office.expected());
    (office, app)
}

#[tokio::test]
async fn a_429_storm_is_waited_out_as_altinn_asks_and_every_change_arrives_once() {
    let storm = Faults {
        too_many_requests_share: 0.6,
        retry_after_secs: 1,
        ..Faults::default()
    };
    let (office, app) = flushed_under(storm, 5_000).await;

    // Each change went through once: no duplicate after success, and no second success.
    let answered = office.no_call_after_success(&app).await;
    assert_eq!(answered.len(), (PEOPLE * CLIENTS) as usize);
    assert!(answered.values().all(|n| *n == 1), "{answered:?}");
    // The storm happened, and each retry waited the second Altinn asked for (the backoff
    // alone would have waited 20 ms).
    let gaps: Vec<(String, f64)> = sqlx::query_as(
        r#"SELECT outcome, extract(epoch FROM lead(at) OVER (PARTITION BY outbox_id ORDER BY id) - at)::float8
           FROM audit WHERE outbox_id IS NOT NULL ORDER BY id"#,
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
    .into_iter()
    .filter_map(|(outcome, gap): (String, Option<f64>)| gap.map(|g| (outcome, g)))
    .collect();
    assert!(
        !gaps.is_empty(),
        "no delivery was refused: the storm did not happen"
    );
    for (outcome, gap) in &gaps {
        assert_eq!(outcome, "retry");
        assert!(
            *gap >= 0.95,
            "a retry came {gap:.3} s after a 429 with Retry-After: 1"
        );
    }
    app.teardown().await;
}

#[tokio::test]
async fn timeouts_are_retried_and_converge_without_a_second_delivery() {
    // Altinn takes longer than the worker waits for a third of the calls, and applies them
    // anyway: the retry must be harmless (`changed=false`) and then stop.
    let slow = Faults {
        hang_share: 0.3,
        hang_ms: 600,
        ..Faults::default()
    };
    let (office, app) = flushed_under(slow, 300).await;
    let answered = office.no_call_after_success(&app).await;
    assert_eq!(answered.len(), (PEOPLE * CLIENTS) as usize);
    let timed_out = app
        .count("SELECT count(*) FROM audit WHERE outcome = 'retry' AND detail LIKE '%timed out%'")
        .await;
    assert!(timed_out > 0, "no call timed out: the fault did not happen");
    // A change answered twice was one whose first answer the worker never saw.
    let twice = answered.values().filter(|n| **n > 1).count() as i64;
    assert!(
        twice <= timed_out,
        "{twice} changes answered twice, {timed_out} timeouts"
    );
    app.teardown().await;
}

/// `altinn-sync run` as its own process, against `office` with added latency.
fn worker_process(app: &TestApp, office: &Office) -> Child {
    let s = &app.settings;
    let a = &office.settings;
    Command::new(env!("CARGO_BIN_EXE_altinn-sync"))
        .arg("run")
        .env("DATABASE_URL", &s.db.database_url)
        .env("AMQP_URL", &s.broker.amqp_url)
        .env("TOPOLOGY_PREFIX", &s.ingest.topology_prefix)
        .env("EVENTS_EXCHANGE", &s.ingest.events_exchange)
        .env("ALTINN_BASE_URL", a.altinn_base_url.as_deref().unwrap())
        .env("MASKINPORTEN_URL", a.maskinporten_url.as_deref().unwrap())
        .env(
            "MASKINPORTEN_CLIENT_ID",
            a.maskinporten_client_id.as_deref().unwrap(),
        )
        .env("MASKINPORTEN_KID", a.maskinporten_kid.as_deref().unwrap())
        .env(
            "MASKINPORTEN_KEY_FILE",
            a.maskinporten_key_file.as_ref().unwrap(),
        )
        .env("MASKINPORTEN_SCOPES", SCOPES)
        .env("FLUSH_LEASE_SECS", "2")
        .env("FLUSH_CONCURRENCY", "2")
        .env("FLUSH_CONCURRENCY_PER_FIRM", "2")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the worker binary")
}

#[tokio::test]
async fn a_worker_killed_mid_flush_leaves_nothing_behind() {
    let office = office(5_000).await;
    office
        .sim
        .set_faults(Faults {
            latency_ms: 40,
            ..Faults::default()
        })
        .await;
    let app = TestApp::without_worker().await;
    let mut first = worker_process(&app, &office);
    let last = office.publish_story(&app).await;
    sync_now(&app, last).await;
    let pool = app.pool.clone();
    let delivered = || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox WHERE status = 'delivered'")
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    app.wait_until("a few deliveries", || async { delivered().await >= 10 })
        .await;
    first.kill().await.unwrap();
    let held_by_the_dead: i64 = app
        .count("SELECT count(*) FROM outbox WHERE status = 'pending' AND lease_until > now()")
        .await;
    let left = (PEOPLE * CLIENTS) as i64 - delivered().await;
    assert!(left > 0, "the flush finished before the kill");

    let mut second = worker_process(&app, &office);
    app.wait_until("every change delivered", || async {
        delivered().await == (PEOPLE * CLIENTS) as i64
    })
    .await;
    second.kill().await.unwrap();

    assert_eq!(office.held().await, office.expected());
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE status <> 'delivered'")
            .await,
        0,
        "nothing lost, parked or left pending"
    );
    // The rows the dead worker held were taken over once their lease ran out.
    let retaken = app
        .count("SELECT count(*) FROM outbox WHERE attempts > 1")
        .await;
    assert!(
        retaken >= held_by_the_dead,
        "{held_by_the_dead} rows were leased at the kill, {retaken} were attempted again"
    );
    let answered = office.no_call_after_success(&app).await;
    // Only a change in flight at the kill can have reached Altinn twice.
    let twice = answered.values().filter(|n| **n > 1).count() as i64;
    assert!(twice <= held_by_the_dead, "{twice} changes answered twice");
    app.teardown().await;
}
