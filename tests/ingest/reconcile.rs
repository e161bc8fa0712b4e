//! The nightly reconcile end to end: what it promises about parked changes and about keys a
//! dispatcher is delivering while Altinn is read.

use altinn_sync::altinn::AltinnClient;
use altinn_sync::altinn::wire::DelegationBatch;
use altinn_sync::sim::{Simulator, World};
use serde_json::json;
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

use crate::common::TestApp;
use crate::common::altinn::{FIRM, MED_URN, maskinporten_client, serve};
use crate::common::steps::{demo, flushing_app};

/// Registered the firm as its accountant in ER.
const CLIENT_A: &str = "998877660";
/// Registered the firm too, unless a test says otherwise.
const CLIENT_B: &str = "998877679";
const KARI: &str = "3f2c8a1e-6b4d-4e7a-9c1f-0a5b7d2e8c41";
const PACKAGE: &str = "regnskapsforer-med-signeringsrettighet";

/// The simulator with the demo firm, clients A and B and Kari; the parties stay the same when
/// the world is loaded again.
struct Altinn {
    sim: Simulator,
    settings: altinn_sync::altinn::AltinnSettings,
    firm: Uuid,
    a: Uuid,
    b: Uuid,
    kari: Uuid,
    _shutdown: DropGuard,
}

impl Altinn {
    async fn start(b_registered: bool) -> Self {
        let (firm, a, b, kari) = (
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
        );
        let mut altinn = Altinn {
            sim: Simulator::new(),
            settings: Default::default(),
            firm,
            a,
            b,
            kari,
            _shutdown: CancellationToken::new().drop_guard(),
        };
        let world = altinn.world(b_registered, &[]);
        let (settings, shutdown) = serve(world, altinn.sim.clone(), 5_000).await;
        altinn.settings = settings;
        altinn._shutdown = shutdown;
        altinn
    }

    /// The world, with Kari already holding the package on `held` (the simulator's bulk load).
    fn world(&self, b_registered: bool, held: &[Uuid]) -> World {
        let registered = json!([{"firmOrgNumber": FIRM, "role": "regnskapsforer"}]);
        let world = json!({
            "firms": [{"orgNumber": FIRM, "partyUuid": self.firm, "name": "Demo Regnskap AS"}],
            "clients": [
                {"partyUuid": self.a, "orgNumber": CLIENT_A, "name": "Fjordkraft Regnskap AS",
                 "firmRoles": registered},
                {"partyUuid": self.b, "orgNumber": CLIENT_B, "name": "Bølgen AS",
                 "firmRoles": if b_registered { registered.clone() } else { json!([]) }},
            ],
            "persons": [{"partyUuid": self.kari, "nationalIdentityNumber": "15038512363",
                         "lastName": "Nordmann", "name": "Kari Nordmann"}],
            "held": if held.is_empty() { json!([]) } else {
                json!([{"firmOrgNumber": FIRM, "agentParty": self.kari,
                        "role": "regnskapsforer", "package": PACKAGE, "clientParties": held}])
            },
        });
        let mut world: World = serde_json::from_value(world).unwrap();
        world.maskinporten_clients = vec![maskinporten_client()];
        world
    }

    /// The clients Kari holds the package on, A before B.
    async fn kari_holds(&self) -> Vec<&'static str> {
        let rows = self.sim.delegations().await;
        let holds = |client: Uuid| {
            rows.iter().any(|d| {
                d.agent_party == self.kari && d.client_party == client && d.packages == [MED_URN]
            })
        };
        [(self.a, CLIENT_A), (self.b, CLIENT_B)]
            .into_iter()
            .filter(|(party, _)| holds(*party))
            .map(|(_, org)| org)
            .collect()
    }

    /// Revokes Kari's package on `client` as a person in the portal would.
    async fn revoke_by_hand(&self, client: Uuid) {
        let by_hand = AltinnClient::new(self.settings.validate().unwrap().unwrap()).unwrap();
        let firm = by_hand.firm_party(FIRM).await.unwrap();
        let batch = DelegationBatch::for_role("regnskapsforer", [MED_URN]);
        by_hand
            .revoke(&firm, client, self.kari, &batch)
            .await
            .unwrap();
    }
}

/// Kari (signing rights) on clients A and B, sequences 1001 to 1003.
async fn kari_on_a_and_b(app: &TestApp) {
    app.publish_event(&demo("01-kari-role-changed.json")).await;
    let on_a = demo("02-kari-client-assigned.json");
    app.publish_event(&on_a).await;
    let mut on_b = on_a;
    on_b["event_id"] = json!(Uuid::new_v4());
    on_b["sequence"] = json!(1003);
    on_b["data"]["client"]["org_number"] = json!(CLIENT_B);
    on_b["data"]["client"]["name"] = json!("Bølgen AS");
    app.publish_event(&on_b).await;
}

async fn sync_now(app: &TestApp, after_sequence: i64) {
    app.publish_command(&json!({
        "command_id": Uuid::new_v4(), "command_type": "SyncNow",
        "requested_at": "2026-11-24T08:00:00Z", "firm": {"org_number": FIRM},
        "after_sequence": after_sequence
    }))
    .await;
}

/// Publishes a `NightlyReconcile` (for `firm`, or every firm) and returns its id.
async fn nightly(app: &TestApp, firm: Option<&str>) -> Uuid {
    let id = Uuid::new_v4();
    app.publish_command(&json!({
        "command_id": id, "command_type": "NightlyReconcile",
        "requested_at": "2026-11-24T02:00:00Z",
        "firm": firm.map(|f| json!({"org_number": f}))
    }))
    .await;
    id
}

/// Waits until `commands` commands are recorded and handled and nothing is left to deliver
/// but rows leased by `other` (another replica's dispatcher, which this test plays).
async fn settled(app: &TestApp, commands: i64, other: &str) {
    let pool = app.pool.clone();
    let other = other.to_owned();
    app.wait_until("the commands handled and the outbox delivered", || {
        let (pool, other) = (pool.clone(), other.clone());
        async move {
            let (recorded, unhandled, pending): (i64, i64, i64) = sqlx::query_as(
                r#"SELECT (SELECT count(*) FROM commands),
                          (SELECT count(*) FROM commands WHERE handled_at IS NULL),
                          (SELECT count(*) FROM outbox WHERE status = 'pending'
                             AND leased_by IS DISTINCT FROM $1)"#,
            )
            .bind(&other)
            .fetch_one(&pool)
            .await
            .unwrap();
            recorded == commands && unhandled == 0 && pending == 0
        }
    })
    .await;
}

async fn outcome(app: &TestApp, command: Uuid) -> String {
    sqlx::query_scalar("SELECT outcome FROM commands WHERE command_id = $1")
        .bind(command)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Kari's clients in `applied_grants`, with when each was recorded.
async fn applied(app: &TestApp) -> Vec<(String, chrono::DateTime<chrono::Utc>)> {
    sqlx::query_as(
        r#"SELECT client_org_number, applied_at FROM applied_grants
           WHERE firm = $1 AND employee_id = $2 AND package = $3 ORDER BY client_org_number"#,
    )
    .bind(FIRM)
    .bind(Uuid::parse_str(KARI).unwrap())
    .bind(PACKAGE)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_parked_change_is_retried_by_the_nightly_reconcile_and_goes_through_once_fixed() {
    // Client B has not registered the firm as its accountant yet.
    let altinn = Altinn::start(false).await;
    let app = flushing_app(&altinn.settings).await;
    kari_on_a_and_b(&app).await;
    sync_now(&app, 1003).await;
    settled(&app, 1, "").await;
    assert_eq!(altinn.kari_holds().await, [CLIENT_A]);
    let (parked_id, attempts, explanation): (i64, i32, String) = sqlx::query_as(
        "SELECT id, attempts, explanation FROM outbox WHERE status = 'parked' AND client_org_number = $1",
    )
    .bind(CLIENT_B)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(attempts, 1);
    assert!(
        explanation.contains("Register of Legal Entities"),
        "{explanation}"
    );

    // During the day client B registers the firm in ER; Altinn still holds Kari's package on A.
    altinn.sim.load(altinn.world(true, &[altinn.a])).await;
    assert_eq!(altinn.kari_holds().await, [CLIENT_A]);

    // The nightly run for this firm tries the refused change again, and now it goes through.
    let command = nightly(&app, Some(FIRM)).await;
    settled(&app, 2, "").await;
    let outcome = outcome(&app, command).await;
    assert!(
        outcome.contains("reconciled 1 firms")
            && outcome.contains("1 missing and 0 extra grants drifted")
            && outcome.contains("1 parked changes retried")
            // The parked row itself is retried; no second row is planned for the key.
            && outcome.contains("planned 0 grants and 0 revokes"),
        "{outcome}"
    );
    assert_eq!(altinn.kari_holds().await, [CLIENT_A, CLIENT_B]);
    let retried: (String, i32) =
        sqlx::query_as("SELECT status, attempts FROM outbox WHERE id = $1")
            .bind(parked_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(retried, ("delivered".to_owned(), 2));
    let audit: Vec<String> =
        sqlx::query_scalar("SELECT outcome FROM audit WHERE outbox_id = $1 ORDER BY id")
            .bind(parked_id)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    // The re-queue is audited too, by the worker itself.
    assert_eq!(audit, ["parked", "requeued", "delivered"]);
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE status = 'parked'")
            .await,
        0
    );
    assert_eq!(
        applied(&app)
            .await
            .into_iter()
            .map(|(c, _)| c)
            .collect::<Vec<_>>(),
        [CLIENT_A, CLIENT_B]
    );
    app.teardown().await;
}

#[tokio::test]
async fn the_reconcile_leaves_a_key_another_dispatcher_is_delivering_to_that_dispatcher() {
    let altinn = Altinn::start(true).await;
    let app = flushing_app(&altinn.settings).await;
    kari_on_a_and_b(&app).await;
    sync_now(&app, 1003).await;
    settled(&app, 1, "").await;
    assert_eq!(altinn.kari_holds().await, [CLIENT_A, CLIENT_B]);
    let before = applied(&app).await;
    assert_eq!(before.len(), 2);

    // Kari leaves client A. Another replica's dispatcher has claimed the revoke and Altinn has
    // carried it out, but the replica has not recorded the outcome yet: its lease runs.
    let mut removed = demo("05-kari-client-removed.json");
    removed["sequence"] = json!(1004);
    app.publish_event(&removed).await;
    let pool = app.pool.clone();
    app.wait_until("Kari's removal from client A", || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM desired_grants WHERE client_org_number = $1",
            )
            .bind(CLIENT_A)
            .fetch_one(&pool)
            .await
            .unwrap()
                == 0
        }
    })
    .await;
    let leased: i64 = sqlx::query_scalar(
        r#"INSERT INTO outbox (firm, employee_id, client_org_number, package, action, generation,
                               idempotency_key, cause, attempts, lease_until, leased_by)
           VALUES ($1, $2, $3, $4, 'revoke', 2, concat_ws('/', $1, $2, $3, $4, 'revoke', 2),
                   gen_random_uuid(), 1, now() + interval '10 minutes', 'replica-2')
           RETURNING id"#,
    )
    .bind(FIRM)
    .bind(Uuid::parse_str(KARI).unwrap())
    .bind(CLIENT_A)
    .bind(PACKAGE)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    altinn.revoke_by_hand(altinn.a).await;
    // And someone removes Kari's package on client B by hand: drift.
    altinn.revoke_by_hand(altinn.b).await;
    assert!(altinn.kari_holds().await.is_empty());

    let command = nightly(&app, None).await;
    settled(&app, 2, "replica-2").await;
    let outcome = outcome(&app, command).await;
    assert!(
        // B is desired and missing; A is neither desired nor in Altinn.
        outcome.contains("1 missing and 0 extra grants drifted")
            // B again; A's revoke is already on its way, with the other replica.
            && outcome.contains("planned 1 grants and 0 revokes"),
        "{outcome}"
    );
    assert_eq!(altinn.kari_holds().await, [CLIENT_B]);

    // Client A's key keeps what this worker knew: the other replica records its revoke. Client
    // B's was made Altinn's truth (no grant), then delivered again, for the nightly run.
    let after = applied(&app).await;
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[0], before[0], "the leased key was left alone");
    assert_eq!(after[1].0, CLIENT_B);
    assert!(after[1].1 > before[1].1, "B was re-applied: {after:?}");
    let grants_of_b: Vec<(String, Uuid)> = sqlx::query_as(
        r#"SELECT outcome, cause FROM audit WHERE client_org_number = $1 AND action = 'grant'
           ORDER BY id"#,
    )
    .bind(CLIENT_B)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(grants_of_b.len(), 2, "{grants_of_b:?}");
    assert_eq!(grants_of_b[1], ("delivered".to_owned(), command));

    // The other replica's row is untouched: not superseded, not taken over, not doubled.
    let open: Vec<(i64, String, String, i32)> = sqlx::query_as(
        r#"SELECT id, status, leased_by, attempts FROM outbox
           WHERE client_org_number = $1 AND status IN ('pending', 'parked')"#,
    )
    .bind(CLIENT_A)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        open,
        [(leased, "pending".to_owned(), "replica-2".to_owned(), 1)]
    );
    app.teardown().await;
}
