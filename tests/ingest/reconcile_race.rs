//! The nightly reconcile beside a flush on three replicas: what another replica delivers after
//! the reconcile read Altinn is not planned again (issue 16, step 7). Altinn's journal is the
//! judge: no grant it already held, no revoke of a delegation it no longer had.

use std::collections::BTreeSet;

use altinn_sync::sim::{Faults, JournalEntry};
use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::process::Child;
use uuid::Uuid;

use crate::common::TestApp;
use crate::common::altinn::FIRM;
use crate::common::steps::sync_now;
use crate::flush_faults::{Office, changed, office, ok, rows_where, worker_command};

/// Every Altinn call takes this long, so deliveries overlap the reconcile's read and its plan.
const LATENCY_MS: u64 = 50;

#[tokio::test]
async fn a_reconcile_during_a_three_replica_flush_sends_nothing_altinn_already_holds() {
    // 300 grants, then 150 revokes, each flush on three `run` processes.
    let office = office(10, 30, 5_000).await;
    office
        .sim
        .set_faults(Faults {
            latency_ms: LATENCY_MS,
            ..Faults::default()
        })
        .await;
    let app = TestApp::without_worker().await;
    let mut replicas: Vec<Child> = (0..3)
        .map(|_| {
            worker_command(&app, &office, 30)
                // Half of every person's clients go at once: not a mass revoke here.
                .env("REVOKE_GUARD_MIN", "100000")
                .spawn()
                .expect("the worker binary")
        })
        .collect();

    // Grants: the reconcile reads while the other replicas deliver.
    let last = office.publish_story(&app).await;
    sync_now(&app, last).await;
    let grants = office.changes() as i64;
    reconcile_during(&app, &office, "action = 'grant'", grants).await;
    assert_converged(&app, &office).await;

    // Revokes: half of each person's clients are removed, and reconciled during their flush.
    let removed = remove_half_the_clients(&app, &office, last).await;
    reconcile_during(&app, &office, "action = 'revoke'", removed).await;
    assert_converged(&app, &office).await;

    for replica in &mut replicas {
        replica.kill().await.unwrap();
    }
    app.teardown().await;
}

/// Runs nightly reconciles while the `total` changes selected by `which` are delivered: two at
/// once (on two replicas) once a tenth is through, and one more at two fifths. Waits for the
/// flush to finish, then checks the journal: every call changed Altinn, and the reconciles'
/// reads overlapped deliveries.
async fn reconcile_during(app: &TestApp, office: &Office, which: &str, total: i64) {
    let delivered = format!("status = 'delivered' AND {which}");
    let earlier = office.sim.journal().len();
    let mut handled_at = Vec::new();
    for (share, at_once) in [(10, 2), (40, 1)] {
        app.wait_until("part of the flush delivered", || async {
            rows_where(app, &delivered).await >= total * share / 100
        })
        .await;
        let commands: Vec<Uuid> = (0..at_once).map(|_| Uuid::new_v4()).collect();
        for command in &commands {
            app.publish_command(&json!({
                "command_id": command, "command_type": "NightlyReconcile",
                "requested_at": "2026-11-24T02:00:00Z", "requested_by": "scheduler",
                "firm": {"org_number": FIRM}
            }))
            .await;
        }
        for command in commands {
            handled_at.push(wait_handled(app, command).await);
        }
    }
    let handled_at = handled_at.into_iter().max().unwrap();
    app.wait_until("the flush", || async {
        rows_where(app, &delivered).await >= total
            && rows_where(app, "status = 'pending'").await == 0
    })
    .await;

    let journal = office.sim.journal().split_off(earlier);
    let packages = |e: &&JournalEntry| e.path.ends_with("/agents/accesspackages");
    // Only a reconcile reads an agent's packages.
    let read_at = journal
        .iter()
        .find(|e| packages(e) && e.method == "GET")
        .expect("the reconciles read the agents' packages")
        .received_at;
    let calls: Vec<&JournalEntry> = journal
        .iter()
        .filter(|e| packages(e) && e.method != "GET" && ok(e) && e.fault.is_none())
        .collect();
    // Carried out after the first reconcile began to read, and before the last one planned.
    let overlapped = calls
        .iter()
        .filter(|c| c.at >= read_at && c.at <= handled_at)
        .count();
    assert!(
        overlapped > 0,
        "no delivery between the reconcile's read and its plan: the test proves nothing"
    );
    let repeated: Vec<String> = calls
        .iter()
        .filter(|c| !changed(c))
        .map(|c| format!("{} {:?} at {}", c.method, c.query, c.received_at))
        .collect();
    let outcomes: Vec<String> = sqlx::query_scalar(
        "SELECT outcome FROM commands WHERE command_type = 'NightlyReconcile' ORDER BY handled_at",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    eprintln!("{which}: reconciles: {outcomes:#?}");
    eprintln!(
        "{which}: {} calls, {overlapped} during the reconciles, {} repeated",
        calls.len(),
        repeated.len()
    );
    assert!(
        repeated.is_empty(),
        "{} of {} calls found Altinn already as asked ({overlapped} delivered during the \
         reconcile): {repeated:#?}",
        repeated.len(),
        calls.len()
    );
    // Every change was on its way or delivered when the reconciles planned: nothing to add.
    for outcome in &outcomes {
        assert!(
            outcome.contains("planned 0 grants and 0 revokes"),
            "{outcome}"
        );
    }
}

/// Waits until the command is handled; returns when, by the database's clock.
async fn wait_handled(app: &TestApp, command: Uuid) -> DateTime<Utc> {
    let handled = || async {
        sqlx::query_scalar::<_, Option<DateTime<Utc>>>(
            "SELECT handled_at FROM commands WHERE command_id = $1",
        )
        .bind(command)
        .fetch_optional(&app.pool)
        .await
        .unwrap()
        .flatten()
    };
    app.wait_until("the reconcile handled", || async {
        handled().await.is_some()
    })
    .await;
    handled().await.unwrap()
}

/// Removes the first half of the clients from every person, and asks for a sync. Returns how
/// many grants go.
async fn remove_half_the_clients(app: &TestApp, office: &Office, mut sequence: i64) -> i64 {
    let half = office.clients.len() / 2;
    let mut events = Vec::new();
    for (employee, _, _) in &office.people {
        for (org, _) in &office.clients[..half] {
            sequence += 1;
            events.push((
                "ClientRemoved".to_owned(),
                json!({
                    "event_id": Uuid::new_v4(), "event_type": "ClientRemoved",
                    "occurred_at": "2026-11-24T10:00:00Z", "firm": {"org_number": FIRM},
                    "sequence": sequence,
                    "data": {"employee_id": employee, "client_org_number": org},
                }),
            ));
        }
    }
    app.publish_all(&events).await;
    sync_now(app, sequence).await;
    (office.people.len() * half) as i64
}

/// Altinn holds exactly the desired grants, `applied_grants` says so, and nothing is open.
async fn assert_converged(app: &TestApp, office: &Office) {
    let party_of = |employee: Uuid| {
        office
            .people
            .iter()
            .find(|p| p.0 == employee)
            .expect("a person of the story")
            .1
    };
    let client_of = |org: &str| {
        office
            .clients
            .iter()
            .find(|c| c.0 == org)
            .expect("a client of the story")
            .1
    };
    let desired: BTreeSet<(Uuid, Uuid)> = app
        .desired(FIRM)
        .await
        .into_iter()
        .map(|(employee, client, _)| (party_of(employee), client_of(&client)))
        .collect();
    assert!(!desired.is_empty());
    assert_eq!(office.held().await, desired, "Altinn holds what is desired");
    let open = rows_where(app, "status IN ('pending', 'parked', 'staged')").await;
    assert_eq!(open, 0, "nothing left open in the outbox");
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
    assert_eq!(unrecorded, 0, "applied_grants is what Altinn holds");
}
