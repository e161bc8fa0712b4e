//! Adoption of access given by hand: the reconcile takes over the agents who are known
//! employees, leaves persons AdminFlow does not know alone, and goes through the guard.

use serde_json::json;
use uuid::Uuid;

use crate::common::TestApp;
use crate::common::altinn::{ClientsAltinn, FIRM, MED, SIGNING};
use crate::common::steps::{app_with, flushed, publish};
use crate::common::workload::{FirmEvents, Person};

/// Outside the mapping these tests run with.
const UTEN: &str = "regnskapsforer-uten-signeringsrettighet";
const LONN: &str = "regnskapsforer-lonn";

/// Publishes a `NightlyReconcile` of the firm as the `commands`th command, waits for it and
/// the deliveries after it, and returns its outcome.
async fn nightly(app: &TestApp, commands: i64) -> String {
    let id = Uuid::new_v4();
    app.publish_command(&json!({
        "command_id": id, "command_type": "NightlyReconcile",
        "requested_at": "2026-11-24T02:00:00Z", "firm": {"org_number": FIRM}
    }))
    .await;
    flushed(app, commands).await;
    sqlx::query_scalar("SELECT outcome FROM commands WHERE command_id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_known_employee_given_access_by_hand_is_adopted_and_a_stranger_left_alone() {
    let (kari, ola) = (Person::new(1), Person::new(2));
    // By hand, before the worker came: Kari holds the signing package on clients 0 to 2, the
    // payroll package on client 2, and a package outside the mapping on client 2; Ola, whom
    // AdminFlow does not know, holds the signing package on client 0.
    let altinn = ClientsAltinn::start(
        4,
        &[&kari, &ola],
        &[
            (0, MED, &[0, 1, 2]),
            (0, LONN, &[2]),
            (0, UTEN, &[2]),
            (1, MED, &[0]),
        ],
    )
    .await;
    let mut app = TestApp::without_worker().await;
    app.settings.altinn = altinn.settings.clone();
    app.settings.housekeeping.role_mapping =
        format!("AccountantWithSigningRights={MED},PayrollAccountant={LONN}")
            .parse()
            .unwrap();
    app.start_worker().await;
    // AdminFlow: Kari works with clients 0 and 1, with signing rights.
    let mut events = FirmEvents::new(FIRM);
    let batch = vec![
        events.role_changed(&kari, &[SIGNING]),
        events.client_assigned(&kari, &altinn.clients[0].1),
        events.client_assigned(&kari, &altinn.clients[1].1),
    ];
    publish(&app, batch).await;
    app.barrier().await;

    let outcome = nightly(&app, 1).await;
    let (kari_party, ola_party) = (altinn.parties[0], altinn.parties[1]);
    // Kept where desired, revoked where not; the package outside the mapping untouched.
    assert_eq!(altinn.holds(kari_party, MED).await, [0, 1]);
    assert!(altinn.holds(kari_party, LONN).await.is_empty());
    assert_eq!(altinn.holds(kari_party, UTEN).await, [2]);
    // Ola is left alone, and named by party and name only.
    assert_eq!(altinn.holds(ola_party, MED).await, [0]);
    assert!(
        outcome.contains("adopted 1 agents")
            && outcome.contains("0 missing and 2 extra grants drifted")
            && outcome.contains("1 packages on unknown persons left alone")
            && outcome.contains("planned 0 grants and 2 revokes")
            && outcome.contains(&format!(
                "persons AdminFlow does not know, left alone: party {ola_party} (Test {}) \
                 for firm {FIRM}",
                ola.last_name
            )),
        "{outcome}"
    );
    for nin in [&kari.nin, &ola.nin] {
        assert!(!outcome.contains(nin.as_str()), "{outcome}");
    }
    let agents: Vec<(Uuid, Uuid)> =
        sqlx::query_as("SELECT employee_id, agent_party FROM altinn_agents")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(agents, [(kari.id, kari_party)]);

    // Managed like the worker's own: a new client is granted to the adopted agent's party.
    let last = publish(
        &app,
        vec![events.client_assigned(&kari, &altinn.clients[3].1)],
    )
    .await;
    crate::common::steps::sync_now(&app, last).await;
    flushed(&app, 2).await;
    assert_eq!(altinn.holds(kari_party, MED).await, [0, 1, 3]);
    app.teardown().await;
}

#[tokio::test]
async fn the_first_reconcile_of_a_firm_goes_through_the_guard() {
    let kari = Person::new(1);
    let clients: Vec<usize> = (0..12).collect();
    let altinn = ClientsAltinn::start(12, &[&kari], &[(0, MED, &clients)]).await;
    let mut app = app_with(&altinn.settings, |_| {}).await;
    // AdminFlow knows Kari, but she works with none of these clients.
    let mut events = FirmEvents::new(FIRM);
    publish(&app, vec![events.role_changed(&kari, &[SIGNING])]).await;
    app.barrier().await;

    let outcome = nightly(&app, 1).await;
    assert!(
        outcome.contains("adopted 1 agents")
            && outcome.contains("12 revokes staged by the mass-revoke guard"),
        "{outcome}"
    );
    assert_eq!(altinn.holds(altinn.parties[0], MED).await, clients);
    assert_eq!(
        altinn_sync::sync::staged(&app.pool, FIRM)
            .await
            .unwrap()
            .len(),
        12
    );
    app.teardown().await;
}
