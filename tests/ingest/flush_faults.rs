//! The flush under Altinn's bad days: 429 storms with `Retry-After`, timeouts, and a worker
//! killed mid-flush. Every change converges to the desired state, and the simulator's journal
//! (which also holds the requests a fault answered) shows that no change was called for again
//! once the worker had heard it went through.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::process::Stdio;

use altinn_sync::altinn::AltinnSettings;
use altinn_sync::sim::{self, Client, Faults, FirmRole, JournalEntry, Person, Simulator, World};
use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::process::{Child, Command};
use tokio_util::sync::DropGuard;
use uuid::Uuid;

use crate::common::altinn::{FIRM, MED_URN, SCOPES, maskinporten_client, serve};
use crate::common::steps::{flushed, sync_now};
use crate::common::{TestApp, workload};

/// A journaling simulator with the firm, clients that registered it and employees.
pub(crate) struct Office {
    pub(crate) sim: Simulator,
    settings: AltinnSettings,
    /// (employee id, agent party, person) per employee.
    pub(crate) people: Vec<(Uuid, Uuid, workload::Person)>,
    /// (org number, party) per client.
    pub(crate) clients: Vec<(String, Uuid)>,
    _shutdown: DropGuard,
}

pub(crate) async fn office(people: u32, clients: u32, request_timeout_ms: u64) -> Office {
    let people: Vec<(Uuid, Uuid, workload::Person)> = (0..people)
        .map(|n| {
            let person = workload::Person::new(900 + n);
            (person.id, Uuid::new_v4(), person)
        })
        .collect();
    let clients: Vec<(String, Uuid)> = (0..clients)
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
                    packages: Vec::new(),
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
    let (settings, _shutdown) = serve(world, sim.clone(), request_timeout_ms).await;
    Office {
        sim,
        settings,
        people,
        clients,
        _shutdown,
    }
}

/// Whether Altinn answered a delegation call with success.
pub(crate) fn ok(call: &JournalEntry) -> bool {
    call.status == 200
}

/// Whether Altinn carried the change out on this call (`changed` in its answer).
pub(crate) fn changed(call: &JournalEntry) -> bool {
    let body = call.response_body.as_ref().expect("a delegation answer");
    let results = body.as_array().expect("a list of delegations");
    assert_eq!(results.len(), 1, "one package per call in these stories");
    results[0]["changed"].as_bool().expect("changed")
}

/// What the simulator and the worker's tables say about one change.
struct Change {
    outbox_id: i64,
    /// Every call for the change, in the order Altinn received them.
    calls: Vec<JournalEntry>,
    /// When the worker recorded the delivery.
    delivered_at: DateTime<Utc>,
    /// Attempts the worker gave up on for want of an answer in time.
    timed_out: usize,
    attempts: i32,
    leased_by: String,
}

impl Office {
    /// Every employee becomes an accountant with signing rights on every client: one
    /// `regnskapsforer-med-signeringsrettighet` grant per (client, employee). Returns the last
    /// sequence.
    pub(crate) async fn publish_story(&self, app: &TestApp) -> i64 {
        let mut sequence = 0;
        let mut event = |event_type: &str, data: serde_json::Value| {
            sequence += 1;
            let event = json!({
                "event_id": Uuid::new_v4(), "event_type": event_type,
                "occurred_at": "2026-11-24T09:00:00Z", "firm": {"org_number": FIRM},
                "sequence": sequence, "data": data,
            });
            (event_type.to_owned(), event)
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
        app.publish_all(&events).await;
        sequence
    }

    pub(crate) fn changes(&self) -> usize {
        self.people.len() * self.clients.len()
    }

    /// The desired grants, as (agent party, client party): asserted to be the whole story.
    async fn desired(&self, app: &TestApp) -> BTreeSet<(Uuid, Uuid)> {
        let agent_of: HashMap<Uuid, Uuid> = self.people.iter().map(|(e, a, _)| (*e, *a)).collect();
        let client_of: HashMap<&str, Uuid> =
            self.clients.iter().map(|(o, c)| (o.as_str(), *c)).collect();
        let desired: BTreeSet<(Uuid, Uuid)> = app
            .desired(FIRM)
            .await
            .into_iter()
            .map(|(employee, client, package)| {
                assert_eq!(format!("urn:altinn:accesspackage:{package}"), MED_URN);
                (agent_of[&employee], client_of[client.as_str()])
            })
            .collect();
        assert_eq!(desired.len(), self.changes(), "the whole story is desired");
        desired
    }

    /// (agent, client) pairs holding exactly the story's package, as the simulator has them.
    pub(crate) async fn held(&self) -> BTreeSet<(Uuid, Uuid)> {
        self.sim
            .delegations()
            .await
            .into_iter()
            .filter(|d| !d.packages.is_empty())
            .map(|d| {
                assert_eq!(d.packages, [MED_URN], "only the story's package");
                (d.agent_party, d.client_party)
            })
            .collect()
    }

    /// Altinn holds exactly the desired grants, and nothing is left in the outbox.
    async fn assert_converged(&self, app: &TestApp) {
        assert_eq!(self.held().await, self.desired(app).await);
        let statuses: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, count(*) FROM outbox GROUP BY status")
                .fetch_all(&app.pool)
                .await
                .unwrap();
        assert_eq!(
            statuses,
            [("delivered".to_owned(), self.changes() as i64)],
            "one row per change, each delivered: none lost, parked or left pending"
        );
        let unrecorded = app
            .count(
                r#"SELECT count(*) FROM (
                       (SELECT firm, employee_id, client_org_number, package FROM desired_grants
                        EXCEPT SELECT firm, employee_id, client_org_number, package
                               FROM applied_grants)
                       UNION ALL
                       (SELECT firm, employee_id, client_org_number, package FROM applied_grants
                        EXCEPT SELECT firm, employee_id, client_org_number, package
                               FROM desired_grants)) d"#,
            )
            .await;
        assert_eq!(
            unrecorded, 0,
            "applied_grants records exactly what was delivered"
        );
    }

    /// Every change with its calls, keyed by (agent, client). Checks what holds under any
    /// fault: each change was carried out by exactly one call (its first successful one), the
    /// worker's last call succeeded, and no call came after the worker recorded the delivery.
    /// `unseen(change)` is how many successful answers the worker can have missed for it (a
    /// timeout, a kill): beyond those, a call after a success is a duplicate.
    async fn calls(
        &self,
        app: &TestApp,
        unseen: impl Fn(&Change) -> usize,
    ) -> HashMap<(Uuid, Uuid), Change> {
        let employee_of: HashMap<Uuid, Uuid> =
            self.people.iter().map(|(e, a, _)| (*a, *e)).collect();
        let org_of: HashMap<Uuid, &str> =
            self.clients.iter().map(|(o, c)| (*c, o.as_str())).collect();
        type RowOut = (i64, Uuid, String, i32, String, DateTime<Utc>, i64);
        let rows: Vec<RowOut> = sqlx::query_as(
            r#"SELECT o.id, o.employee_id, o.client_org_number, o.attempts, o.leased_by,
                      (SELECT a.at FROM audit a
                       WHERE a.outbox_id = o.id AND a.outcome = 'delivered'),
                      (SELECT count(*) FROM audit a WHERE a.outbox_id = o.id
                         AND a.outcome = 'retry' AND a.detail LIKE '%timed out%')
               FROM outbox o WHERE o.status = 'delivered' AND o.action = 'grant'"#,
        )
        .fetch_all(&app.pool)
        .await
        .unwrap();
        let mut rows: HashMap<(Uuid, String), RowOut> =
            rows.into_iter().map(|r| ((r.1, r.2.clone()), r)).collect();
        let mut calls: HashMap<(Uuid, Uuid), Vec<JournalEntry>> = HashMap::new();
        for entry in self.sim.journal() {
            if !entry.path.ends_with("/agents/accesspackages") {
                continue;
            }
            assert_eq!(entry.method, "POST", "only grants in these stories");
            let param = |name: &str| {
                let (_, v) = entry.query.iter().find(|(k, _)| k == name).unwrap();
                v.parse::<Uuid>().unwrap()
            };
            let key = (param("to"), param("from"));
            calls.entry(key).or_default().push(entry);
        }
        assert_eq!(calls.len(), self.changes(), "Altinn heard of every change");
        let audited = app
            .count("SELECT count(*) FROM audit WHERE outcome = 'delivered'")
            .await;
        assert_eq!(audited, self.changes() as i64, "each delivery audited once");
        calls
            .into_iter()
            .map(|(key, mut calls)| {
                calls.sort_by_key(|c| c.received_at);
                let row = rows
                    .remove(&(employee_of[&key.0], org_of[&key.1].to_owned()))
                    .expect("a delivered outbox row for every change Altinn heard of");
                let change = Change {
                    outbox_id: row.0,
                    calls,
                    delivered_at: row.5,
                    timed_out: row.6 as usize,
                    attempts: row.3,
                    leased_by: row.4,
                };
                let last = change.calls.last().unwrap();
                assert!(
                    ok(last) && last.fault.is_none(),
                    "{key:?}: the worker's last call succeeded: {:?}",
                    last
                );
                for call in &change.calls {
                    assert!(
                        call.received_at <= change.delivered_at,
                        "{key:?}: Altinn was called at {} after the delivery was recorded at {}",
                        call.received_at,
                        change.delivered_at
                    );
                }
                let answered: Vec<&JournalEntry> = change.calls.iter().filter(|c| ok(c)).collect();
                assert!(
                    changed(answered[0]),
                    "{key:?}: the first success carried it out"
                );
                assert!(
                    answered[1..].iter().all(|c| !changed(c)),
                    "{key:?}: a later call found it done"
                );
                assert!(
                    answered.len() - 1 <= unseen(&change),
                    "{key:?}: {} successful calls, of which the worker can have missed only {}",
                    answered.len(),
                    unseen(&change)
                );
                (key, change)
            })
            .collect()
    }
}

/// A worker in this process that flushes to `office`.
async fn flushing_app(office: &Office) -> TestApp {
    let mut app = TestApp::without_worker().await;
    app.settings.altinn = office.settings.clone();
    app.start_worker().await;
    app
}

/// The number of outbox rows that satisfy `condition` (an SQL expression).
pub(crate) async fn rows_where(app: &TestApp, condition: &str) -> i64 {
    app.count(&format!("SELECT count(*) FROM outbox WHERE {condition}"))
        .await
}

#[tokio::test]
async fn a_429_storm_is_waited_out_as_altinn_asks_and_every_change_arrives_once() {
    let office = office(5, 10, 5_000).await;
    let app = flushing_app(&office).await;
    let too_many = |share| Faults {
        too_many_requests_share: share,
        retry_after_secs: 1,
        ..Faults::default()
    };
    let all = office.changes() as i64;
    // A storm: Altinn answers every request 429 with `Retry-After: 1` ...
    office.sim.set_faults(too_many(1.0)).await;
    let last = office.publish_story(&app).await;
    sync_now(&app, last).await;
    app.wait_until("every change refused", || async {
        rows_where(&app, "status = 'pending' AND last_error IS NOT NULL").await == all
    })
    .await;
    assert!(office.held().await.is_empty());
    // ... eases to every other request until half of the changes are through ...
    office.sim.set_faults(too_many(0.5)).await;
    app.wait_until("half of the changes delivered", || async {
        rows_where(&app, "status = 'delivered'").await >= all / 2
    })
    .await;
    // ... and passes.
    office.sim.set_faults(Faults::default()).await;
    flushed(&app, 1).await;
    office.assert_converged(&app).await;

    // Each change went through on exactly one call, the worker's last for it.
    let changes = office.calls(&app, |_| 0).await;
    let mut refused = 0;
    for (key, change) in &changes {
        for pair in change.calls.windows(2) {
            let (before, after) = (&pair[0], &pair[1]);
            assert_eq!(before.fault.as_deref(), Some("429"), "{key:?}: {before:?}");
            // Altinn asked for a second, and got it, however short the backoff (20 ms).
            let waited = (after.received_at - before.at).num_milliseconds();
            assert!(
                waited >= 995,
                "{key:?}: called again {waited} ms after a 429 with Retry-After: 1"
            );
            refused += 1;
        }
    }
    assert!(refused > 0, "no delegation call met the storm");
    // The same from the worker's side: every retry came at least a second after the refusal.
    let gaps: Vec<(i64, Option<f64>)> = sqlx::query_as(
        r#"SELECT outbox_id, extract(epoch FROM next_at - at)::float8 FROM (
               SELECT outbox_id, outcome, at, lead(at) OVER (PARTITION BY outbox_id ORDER BY id)
                      AS next_at
               FROM audit) a
           WHERE outcome = 'retry'"#,
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(
        gaps.len() >= changes.len(),
        "every change was refused at least once"
    );
    for (row, gap) in gaps {
        let gap = gap.expect("a retry is followed by another attempt");
        assert!(
            gap >= 1.0,
            "outbox row {row} was tried again {gap:.3} s after a 429 with Retry-After: 1"
        );
    }
    app.teardown().await;
}

#[tokio::test]
async fn timeouts_are_retried_and_converge_without_a_second_delivery() {
    // A slow spell: Altinn carries out a third of the calls but answers them only after the
    // worker has stopped waiting. A retry must find its change done (`changed=false`) and stop.
    const TIMEOUT_MS: u64 = 300;
    let office = office(5, 10, TIMEOUT_MS).await;
    office
        .sim
        .set_faults(Faults {
            hang_share: 0.3,
            hang_ms: 2 * TIMEOUT_MS,
            ..Faults::default()
        })
        .await;
    let app = flushing_app(&office).await;
    let last = office.publish_story(&app).await;
    sync_now(&app, last).await;
    let all = office.changes() as i64;
    app.wait_until("most changes delivered", || async {
        rows_where(&app, "status = 'delivered'").await >= all * 3 / 4
    })
    .await;
    // The spell passes (which spares the test a long tail of unlucky retries).
    office.sim.set_faults(Faults::default()).await;
    flushed(&app, 1).await;
    office.assert_converged(&app).await;

    let changes = office.calls(&app, |c| c.timed_out).await;
    let mut found_done = 0;
    for (key, change) in &changes {
        for pair in change.calls.windows(2) {
            let (before, after) = (&pair[0], &pair[1]);
            // Never a second call while the first might still be answered.
            let gap = (after.received_at - before.received_at).num_milliseconds();
            assert!(
                gap >= TIMEOUT_MS as i64 / 2,
                "{key:?}: called again {gap} ms after the last call, which the worker waits \
                 {TIMEOUT_MS} ms for"
            );
        }
        if change.calls.iter().filter(|c| ok(c)).count() > 1 {
            found_done += 1;
        }
    }
    let timed_out: usize = changes.values().map(|c| c.timed_out).sum();
    assert!(timed_out > 0, "no call timed out: the fault did not happen");
    assert!(
        found_done > 0,
        "no retry found its change carried out by a call that timed out"
    );
    app.teardown().await;
}

/// `altinn-sync run` as its own process, against `office`.
fn worker_process(app: &TestApp, office: &Office) -> Child {
    worker_process_with_lease(app, office, LEASE_SECS)
}

fn worker_process_with_lease(app: &TestApp, office: &Office, lease_secs: u64) -> Child {
    worker_command(app, office, lease_secs)
        .spawn()
        .expect("the worker binary")
}

/// The command [`worker_process`] spawns, for a test that needs more of it.
pub(crate) fn worker_command(app: &TestApp, office: &Office, lease_secs: u64) -> Command {
    worker_for(app, &office.settings, lease_secs)
}

/// A `run` process on the test's database and broker, flushing to the simulator of `a`.
pub(crate) fn worker_for(app: &TestApp, a: &AltinnSettings, lease_secs: u64) -> Command {
    let s = &app.settings;
    let mut command = Command::new(env!("CARGO_BIN_EXE_altinn-sync"));
    command
        .arg("run")
        // A free port: several workers run side by side.
        .env("ADMIN_LISTEN", "127.0.0.1:0")
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
        .env("FLUSH_LEASE_SECS", lease_secs.to_string())
        .env("FLUSH_RETRY_INITIAL_MS", "20")
        // Four calls at a time, and a per-firm limit above that, so that several lanes hold
        // rows of the one firm at once: a kill at any moment finds some leased.
        .env("FLUSH_CONCURRENCY", "4")
        .env("FLUSH_CONCURRENCY_PER_FIRM", "16")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true);
    command
}

const LEASE_SECS: u64 = 2;

/// The dispatcher a lease names (`dispatcher-UUID/claim`).
fn dispatcher(leased_by: &str) -> &str {
    leased_by.split('/').next().unwrap()
}

#[tokio::test]
async fn a_worker_killed_mid_flush_leaves_nothing_behind() {
    // Hundreds of changes, each call a little slow, so the kill finds the flush under way.
    let office = office(10, 30, 5_000).await;
    office
        .sim
        .set_faults(Faults {
            latency_ms: 20,
            ..Faults::default()
        })
        .await;
    let app = TestApp::without_worker().await;
    let mut first = worker_process(&app, &office);
    let last = office.publish_story(&app).await;
    sync_now(&app, last).await;
    let all = office.changes() as i64;
    app.wait_until("some deliveries, and rows leased", || async {
        rows_where(&app, "status = 'delivered'").await >= all / 5
            && rows_where(&app, "status = 'pending' AND lease_until > now()").await > 0
    })
    .await;
    first.kill().await.unwrap(); // SIGKILL, and reaped

    // What the dead worker held: rows it claimed and never finished.
    let held: Vec<(i64, String, DateTime<Utc>)> = sqlx::query_as(
        r#"SELECT id, leased_by, lease_until FROM outbox
           WHERE status = 'pending' AND lease_until > now()"#,
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(!held.is_empty(), "the kill found no row leased");
    let dead = dispatcher(&held[0].1).to_owned();
    assert!(held.iter().all(|(_, by, _)| dispatcher(by) == dead));
    let delivered_before = rows_where(&app, "status = 'delivered'").await;
    assert!(delivered_before < all, "the flush finished before the kill");

    let mut second = worker_process(&app, &office);
    app.wait_until("every change delivered", || async {
        rows_where(&app, "status = 'delivered'").await == all
    })
    .await;
    second.kill().await.unwrap();
    office.assert_converged(&app).await;

    // Only a change in flight at the kill can have been carried out without the worker
    // hearing of it; it was then called once more, and Altinn found it done.
    let in_flight: HashMap<i64, DateTime<Utc>> =
        held.iter().map(|(id, _, until)| (*id, *until)).collect();
    let changes = office
        .calls(&app, |c| usize::from(in_flight.contains_key(&c.outbox_id)))
        .await;
    let mut taken_over = HashSet::new();
    for (key, change) in &changes {
        match in_flight.get(&change.outbox_id) {
            Some(lease_until) => {
                // Taken over by the new worker once the lease ran out, never before.
                assert_ne!(dispatcher(&change.leased_by), dead, "{key:?}");
                assert!(change.attempts >= 2, "{key:?}: {}", change.attempts);
                assert!(
                    change.delivered_at >= *lease_until,
                    "{key:?}: delivered at {} while the dead worker's lease ran to {lease_until}",
                    change.delivered_at
                );
                taken_over.insert(change.outbox_id);
            }
            None => assert_eq!(change.calls.len(), 1, "{key:?}: called once"),
        }
    }
    assert_eq!(
        taken_over.len(),
        in_flight.len(),
        "every leased row taken over"
    );
    app.teardown().await;
}

#[tokio::test]
async fn an_absurd_retry_after_is_capped_and_the_worker_carries_on() {
    let office = office(1, 2, 5_000).await;
    let mut app = TestApp::without_worker().await;
    app.settings.altinn = office.settings.clone();
    app.settings.flush.flush_retry_max_secs = 2;
    app.start_worker().await;
    // Altinn asks to be left alone for about 31,700 years.
    office
        .sim
        .set_faults(Faults {
            too_many_requests_share: 1.0,
            retry_after_secs: 1_000_000_000_000,
            ..Faults::default()
        })
        .await;
    let last = office.publish_story(&app).await;
    sync_now(&app, last).await;
    let all = office.changes() as i64;
    app.wait_until("every change refused", || async {
        rows_where(&app, "status = 'pending' AND last_error IS NOT NULL").await == all
    })
    .await;
    assert_eq!(
        rows_where(
            &app,
            "next_attempt_at > now() + interval '2 seconds' + interval '1 second'"
        )
        .await,
        0,
        "every retry is due within FLUSH_RETRY_MAX_SECS"
    );
    // Once Altinn recovers, the same worker delivers everything.
    office.sim.set_faults(Faults::default()).await;
    flushed(&app, 1).await;
    office.assert_converged(&app).await;
    app.teardown().await;
}

#[tokio::test]
async fn a_fatal_ingest_error_stops_the_flush_and_the_worker_with_an_error() {
    let office = office(1, 1, 5_000).await;
    let mut app = TestApp::without_worker().await;
    app.settings.altinn = office.settings.clone();
    // The queues exist with another delivery limit, so the broker refuses the worker's
    // declaration: a fault no reconnect can fix.
    app.settings.ingest.delivery_limit = 7;
    app.start_worker().await;
    let ended = app.worker_ended().await;
    assert!(
        matches!(ended, Err(altinn_sync::worker::Error::Ingest(_))),
        "the worker ends with ingest's error, flush and all: {ended:?}"
    );
    app.teardown().await;
}

#[tokio::test]
async fn a_fatal_flush_error_stops_ingest_and_the_worker_with_an_error() {
    let office = office(1, 1, 5_000).await;
    let mut app = flushing_app(&office).await;
    app.barrier().await;
    // A table gone from under the worker: no retry can fix it.
    sqlx::query("ALTER TABLE outbox RENAME TO outbox_gone")
        .execute(&app.pool)
        .await
        .unwrap();
    let ended = app.worker_ended().await;
    assert!(
        matches!(ended, Err(altinn_sync::worker::Error::Flush(_))),
        "the worker ends with the flush's error, ingest and all: {ended:?}"
    );
    app.teardown().await;
}

#[tokio::test]
async fn sigterm_stops_a_drain_within_the_grace_period_and_releases_its_leases() {
    // Slow Altinn, a long queue: the drain would take about half a minute.
    let office = office(4, 25, 5_000).await;
    let mut app = TestApp::without_worker().await;
    app.settings.altinn = office.settings.clone();
    app.settings.flush.flush_concurrency = Some(4);
    app.settings.housekeeping.shutdown_grace_secs = 2;
    office
        .sim
        .set_faults(Faults {
            latency_ms: 1_000,
            ..Faults::default()
        })
        .await;
    app.start_worker().await;
    let last = office.publish_story(&app).await;
    sync_now(&app, last).await;
    app.wait_until("deliveries in flight", || async {
        rows_where(&app, "status = 'pending' AND lease_until > now()").await > 0
    })
    .await;
    let stopping = std::time::Instant::now();
    app.stop_worker().await;
    let took = stopping.elapsed();
    assert!(
        took < std::time::Duration::from_secs(4),
        "stopped {took:?} after SIGTERM, with a grace period of 2 s"
    );
    assert!(
        rows_where(&app, "status = 'pending'").await > 0,
        "the drain was stopped, not finished"
    );
    assert_eq!(
        rows_where(&app, "status = 'pending' AND lease_until > now()").await,
        0,
        "no lease outlives the worker"
    );
    app.teardown().await;
}

#[tokio::test]
async fn three_replicas_behave_like_one() {
    // Hundreds of changes under server errors and latency, three `run` processes on one broker
    // and one database.
    let office = office(8, 25, 5_000).await;
    office
        .sim
        .set_faults(Faults {
            server_error_share: 0.1,
            latency_ms: 5,
            ..Faults::default()
        })
        .await;
    let app = TestApp::without_worker().await;
    let mut replicas: Vec<Child> = (0..3)
        .map(|_| worker_process_with_lease(&app, &office, 30))
        .collect();
    let last = office.publish_story(&app).await;
    sync_now(&app, last).await;
    let all = office.changes() as i64;
    app.wait_until("every change delivered", || async {
        rows_where(&app, "status = 'delivered'").await == all
    })
    .await;

    // The same desired state and the same delegations as one worker would leave, each change
    // carried out by exactly one call and never called again once its delivery was recorded.
    office.assert_converged(&app).await;
    let changes = office.calls(&app, |_| 0).await;
    let replicas_that_delivered: HashSet<&str> =
        changes.values().map(|c| dispatcher(&c.leased_by)).collect();
    assert!(
        replicas_that_delivered.len() > 1,
        "the replicas shared the work: {replicas_that_delivered:?}"
    );

    // One reconcile per command, whichever replica runs it: Altinn's agents are read once.
    office.sim.set_faults(Faults::default()).await;
    let agent_reads = || {
        office
            .sim
            .journal()
            .iter()
            .filter(|e| e.method == "GET" && e.path.ends_with("/clientdelegations/agents"))
            .count()
    };
    let before = agent_reads();
    let command = json!({
        "command_id": Uuid::new_v4(), "command_type": "NightlyReconcile",
        "requested_at": "2026-11-24T02:00:00Z", "requested_by": "scheduler",
        "firm": {"org_number": FIRM}
    });
    app.publish_command(&command).await;
    app.wait_until("the reconcile handled", || async {
        app.count(
            "SELECT count(*) FROM commands WHERE command_type = 'NightlyReconcile' \
             AND handled_at IS NOT NULL",
        )
        .await
            == 1
    })
    .await;
    assert_eq!(agent_reads() - before, 1, "one replica read Altinn for it");
    let outcome: String =
        sqlx::query_scalar("SELECT outcome FROM commands WHERE command_type = 'NightlyReconcile'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(outcome.contains("0 missing and 0 extra"), "{outcome}");
    for replica in &mut replicas {
        replica.kill().await.unwrap();
    }
    app.teardown().await;
}

#[tokio::test]
async fn sigterm_stops_a_long_nightly_reconcile_within_the_grace_period_and_it_runs_again() {
    use tokio::io::AsyncBufReadExt;
    // Every Altinn call takes a minute, and the worker waits two for an answer: the
    // reconcile's reads hang for as long as the test needs.
    let office = office(1, 2, 120_000).await;
    office
        .sim
        .set_faults(Faults {
            latency_ms: 60_000,
            ..Faults::default()
        })
        .await;
    let app = TestApp::without_worker().await;
    let grace = std::time::Duration::from_secs(3);
    let mut first = worker_command(&app, &office, LEASE_SECS)
        .env("SHUTDOWN_GRACE_SECS", grace.as_secs().to_string())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .expect("the worker binary");
    let mut log = tokio::io::BufReader::new(first.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut wait_for_line = async |what: &str| {
        tokio::time::timeout(crate::common::WAIT, async {
            while let Some(line) = log.next_line().await.unwrap() {
                let found = line.contains(what);
                seen.push(line);
                if found {
                    return;
                }
            }
            panic!("the worker's log ended before {what:?}: {seen:#?}");
        })
        .await
        .unwrap_or_else(|_| panic!("no {what:?} in the worker's log"));
    };
    // The firm and its people, known to the worker.
    office.publish_story(&app).await;
    let id = Uuid::new_v4();
    app.publish_command(&json!({
        "command_id": id, "command_type": "NightlyReconcile",
        "requested_at": "2026-11-24T02:00:00Z", "firm": {"org_number": FIRM}
    }))
    .await;
    wait_for_line("nightly reconcile started").await;

    let stopping = std::time::Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &first.id().unwrap().to_string()])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(crate::common::WAIT, first.wait())
        .await
        .expect("the worker exits after SIGTERM")
        .unwrap();
    let took = stopping.elapsed();
    assert!(
        took < grace + std::time::Duration::from_secs(2),
        "stopped {took:?} after SIGTERM, with a grace period of {grace:?}"
    );
    assert!(status.success(), "a graceful stop: {status:?}");
    // The reconcile itself stopped; the grace period did not have to abandon it.
    while let Some(line) = log.next_line().await.unwrap() {
        seen.push(line);
    }
    assert!(
        seen.iter()
            .any(|l| l.contains("nightly reconcile interrupted by shutdown")),
        "{seen:#?}"
    );
    assert!(
        !seen.iter().any(|l| l.contains("grace period ran out")),
        "{seen:#?}"
    );
    let unhandled = || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT handled_at IS NULL FROM commands WHERE command_id = $1",
        )
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
    };
    assert!(unhandled().await, "the interrupted reconcile stays to do");

    // The next start runs it again, to its end.
    office.sim.set_faults(Faults::default()).await;
    let mut second = worker_process(&app, &office);
    app.wait_until("the reconcile handled at the next start", || async {
        !unhandled().await
    })
    .await;
    second.kill().await.unwrap();
    app.teardown().await;
}

#[tokio::test]
async fn a_change_that_waits_past_its_lease_for_a_place_still_goes_out_once() {
    // One call at a time, each slow, and four lanes claiming two rows each: a round's last
    // rows wait for a place in the limit longer than the one-second lease. Were the lease
    // checked only before that wait, another lane would claim them once it ran out, and both
    // would send them.
    const LEASE_SECS: u64 = 1;
    let office = office(3, 8, 5_000).await;
    office
        .sim
        .set_faults(Faults {
            latency_ms: 400,
            ..Faults::default()
        })
        .await;
    let app = TestApp::without_worker().await;
    let mut worker = worker_command(&app, &office, LEASE_SECS)
        .env("FLUSH_CONCURRENCY", "1")
        .spawn()
        .expect("the worker binary");
    let last = office.publish_story(&app).await;
    sync_now(&app, last).await;
    let all = office.changes() as i64;
    app.wait_until("every change delivered", || async {
        rows_where(&app, "status = 'delivered'").await == all
    })
    .await;
    worker.kill().await.unwrap();
    office.assert_converged(&app).await;

    // Each change carried out by exactly one call (`calls` checks it), by the claim that
    // first took it.
    let changes = office.calls(&app, |_| 0).await;
    for (key, change) in &changes {
        assert_eq!(change.calls.len(), 1, "{key:?}: called once");
        assert_eq!(change.attempts, 1, "{key:?}: claimed once");
    }
    // The premise: the first round's four claims, made together as the drain began, sent
    // their rows over more than a lease, one call at a time.
    let claim = |c: &Change| -> u64 { c.leased_by.rsplit('/').next().unwrap().parse().unwrap() };
    let mut claims: Vec<u64> = changes.values().map(claim).collect();
    claims.sort_unstable();
    claims.dedup();
    let first_round: Vec<&Change> = changes
        .values()
        .filter(|c| claims[..4].contains(&claim(c)))
        .collect();
    let sent = first_round.iter().map(|c| c.calls[0].received_at);
    let spread = sent.clone().max().unwrap() - sent.min().unwrap();
    assert!(
        spread.num_milliseconds() > 1_000 * LEASE_SECS as i64,
        "the first round's calls spread over {spread}: none waited past its lease"
    );
    app.teardown().await;
}
