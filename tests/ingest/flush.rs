//! Sync-now end to end: events, then a `SyncNow` command, then the simulator's delegations.

use std::path::Path;

use altinn_sync::altinn::AltinnSettings;
use altinn_sync::sim::{self, MaskinportenClient};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::TestApp;
use crate::common::altinn::{
    CLIENT, DemoAltinn, FIRM, KARI, MED_URN, SECOND, STRANGER, UNAPPROVED, maskinporten_client,
};
use crate::common::steps::{
    commands_handled, demo, flushed, flushing_app, kari_granted, kari_on_both_clients_synced,
    publish_demo, sync_now, sync_now_for,
};

const LONN: &str = "urn:altinn:accesspackage:regnskapsforer-lonn";

/// A client for changing Altinn by hand, as a person in the portal would.
fn by_hand(altinn: &DemoAltinn) -> altinn_sync::altinn::AltinnClient {
    altinn_sync::altinn::AltinnClient::new(altinn.settings.validate().unwrap().unwrap()).unwrap()
}

/// Sends an all-firm `NightlyReconcile`, waits for the flush after it (the `commands`th
/// command), and returns its outcome.
async fn nightly(app: &TestApp, commands: i64) -> String {
    let command = json!({
        "command_id": Uuid::new_v4(), "command_type": "NightlyReconcile",
        "requested_at": "2026-11-24T02:00:00Z", "firm": null
    });
    app.publish_command(&command).await;
    flushed(app, commands).await;
    sqlx::query_scalar("SELECT outcome FROM commands WHERE command_type = 'NightlyReconcile'")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn sync_now_delivers_the_help_page_stories_to_altinn() {
    let altinn = DemoAltinn::start().await;
    let mut app = flushing_app(&altinn.settings).await;

    publish_demo(&app, "01-kari-role-changed.json").await;
    publish_demo(&app, "02-kari-client-assigned.json").await;
    app.barrier().await;
    assert!(
        altinn.delegations().await.is_empty(),
        "nothing changes in Altinn before a sync"
    );

    sync_now(&app, 1002).await;
    flushed(&app, 1).await;
    assert_eq!(
        altinn.delegations().await,
        vec![(altinn.kari, vec![MED_URN.to_owned()])]
    );

    // Ola becomes project accountant and Kari leaves the client: access moves.
    publish_demo(&app, "03-ola-role-changed.json").await;
    publish_demo(&app, "04-project-accountant-to-ola.json").await;
    publish_demo(&app, "05-kari-client-removed.json").await;
    sync_now(&app, 1005).await;
    flushed(&app, 2).await;
    assert_eq!(
        altinn.delegations().await,
        vec![(altinn.ola, vec![LONN.to_owned()])]
    );

    let audit: Vec<(String, String)> =
        sqlx::query_as("SELECT action, outcome FROM audit ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        audit,
        [
            ("grant", "delivered"),
            ("grant", "delivered"),
            ("revoke", "delivered")
        ]
        .map(|(a, o)| (a.to_owned(), o.to_owned()))
    );
    app.teardown().await;
}

#[tokio::test]
async fn a_client_that_has_not_registered_the_firm_is_parked_and_explained() {
    let altinn = DemoAltinn::start().await;
    let app = flushing_app(&altinn.settings).await;

    kari_on_both_clients_synced(&app).await;

    assert_eq!(
        altinn.delegations().await,
        vec![(altinn.kari, vec![MED_URN.to_owned()])]
    );
    let parked: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT client_org_number, explanation, attempts FROM outbox WHERE status = 'parked'",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].0, STRANGER);
    assert!(
        parked[0].1.contains("Register of Legal Entities"),
        "{}",
        parked[0].1
    );
    assert_eq!(parked[0].2, 1, "a permanent error is not retried in a loop");

    // Another sync-now does not retry it either.
    sync_now(&app, 1003).await;
    flushed(&app, 2).await;
    let attempts: i64 = app
        .count("SELECT sum(attempts)::bigint FROM outbox WHERE status = 'parked'")
        .await;
    assert_eq!(attempts, 1);
    let employee: Uuid = KARI.parse().unwrap();
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM audit WHERE outcome = 'parked' AND employee_id = '{employee}'"
        ))
        .await,
        1
    );

    // Support sees both clients from the employee's side.
    let explained = cli(&app, &["explain", "--firm", FIRM, "--employee", KARI]).await;
    assert!(
        explained.contains("in Altinn: regnskapsforer-med-signeringsrettighet"),
        "{explained}"
    );
    assert!(
        explained.contains(&format!(
            "refused: Altinn refused regnskapsforer-med-signeringsrettighet for {STRANGER}"
        )),
        "{explained}"
    );

    // Operators see it with its explanation, and can re-queue it on purpose.
    let listed = cli(&app, &["parked", "--firm", FIRM]).await;
    assert!(
        listed.contains(STRANGER) && listed.contains("Register of Legal Entities"),
        "{listed}"
    );
    let retried = cli(&app, &["retry", "--firm", FIRM]).await;
    assert!(retried.contains("1 parked changes"), "{retried}");
    let pool = app.pool.clone();
    app.wait_until("the retried change to be parked again", || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i32>("SELECT attempts FROM outbox WHERE status = 'parked'")
                .fetch_optional(&pool)
                .await
                .unwrap()
                == Some(2)
        }
    })
    .await;
    app.teardown().await;
}

#[tokio::test]
async fn the_sync_command_asks_the_worker_for_a_flush() {
    let altinn = DemoAltinn::start().await;
    let app = flushing_app(&altinn.settings).await;
    publish_demo(&app, "01-kari-role-changed.json").await;
    publish_demo(&app, "02-kari-client-assigned.json").await;
    let prefix = app.settings.ingest.topology_prefix.clone();
    let out = cli(
        &app,
        &[
            "sync",
            "--firm",
            FIRM,
            "--after-sequence",
            "1002",
            "--topology-prefix",
            &prefix,
        ],
    )
    .await;
    assert!(
        out.contains("SyncNow") && out.contains("published"),
        "{out}"
    );
    flushed(&app, 1).await;
    assert_eq!(
        altinn.delegations().await,
        vec![(altinn.kari, vec![MED_URN.to_owned()])]
    );
    app.teardown().await;
}

/// Runs the binary against the test's database and broker; returns standard output.
async fn cli(app: &TestApp, args: &[&str]) -> String {
    String::from_utf8(crate::cli::cli(app, args).await.stdout).unwrap()
}

#[tokio::test]
async fn under_server_errors_every_change_still_converges() {
    let altinn = DemoAltinn::start().await;
    altinn
        .sim
        .set_faults(sim::Faults {
            server_error_share: 0.3,
            ..Default::default()
        })
        .await;
    let app = flushing_app(&altinn.settings).await;

    for file in [
        "01-kari-role-changed.json",
        "02-kari-client-assigned.json",
        "03-ola-role-changed.json",
        "04-project-accountant-to-ola.json",
    ] {
        publish_demo(&app, file).await;
    }
    sync_now(&app, 1004).await;
    flushed(&app, 1).await;

    let mut want = vec![
        (altinn.kari, vec![MED_URN.to_owned()]),
        (altinn.ola, vec![LONN.to_owned()]),
    ];
    want.sort();
    assert_eq!(altinn.delegations().await, want);
    // Each change is delivered once; failed attempts are retried, never a success.
    let delivered = app
        .count("SELECT count(*) FROM audit WHERE outcome = 'delivered'")
        .await;
    assert_eq!(delivered, 2);
    let retried_after_success = app
        .count(
            r#"SELECT count(*) FROM audit a JOIN audit b USING (outbox_id)
               WHERE a.outcome = 'delivered' AND b.at > a.at"#,
        )
        .await;
    assert_eq!(retried_after_success, 0);
    app.teardown().await;
}

#[tokio::test]
async fn the_nightly_reconcile_repairs_drift_made_by_hand_in_altinn() {
    let altinn = DemoAltinn::start().await;
    let app = flushing_app(&altinn.settings).await;
    kari_granted(&app).await;
    assert_eq!(
        altinn.delegations().await,
        vec![(altinn.kari, vec![MED_URN.to_owned()])]
    );

    // By hand in Altinn: Kari's package is swapped for one she should not hold.
    let by_hand = by_hand(&altinn);
    let firm = by_hand.firm_party(FIRM).await.unwrap();
    let batch =
        |p: &str| altinn_sync::altinn::wire::DelegationBatch::for_role("regnskapsforer", [p]);
    by_hand
        .revoke(&firm, altinn.client, altinn.kari, &batch(MED_URN))
        .await
        .unwrap();
    by_hand
        .delegate(&firm, altinn.client, altinn.kari, &batch(LONN))
        .await
        .unwrap();
    assert_eq!(
        altinn.delegations().await,
        vec![(altinn.kari, vec![LONN.to_owned()])]
    );

    // A sync-now trusts what it last applied and sees nothing to do; the nightly run looks.
    let outcome = nightly(&app, 2).await;
    assert_eq!(
        altinn.delegations().await,
        vec![(altinn.kari, vec![MED_URN.to_owned()])]
    );
    assert!(
        outcome.contains("1 missing and 1 extra grants drifted"),
        "{outcome}"
    );
    app.teardown().await;
}

#[tokio::test]
async fn rows_claimed_by_a_dead_worker_are_taken_over_when_the_lease_runs_out() {
    let altinn = DemoAltinn::start().await;
    // First an ingest-only worker: the command is recorded, nothing is planned.
    let mut app = TestApp::spawn().await;
    publish_demo(&app, "01-kari-role-changed.json").await;
    publish_demo(&app, "02-kari-client-assigned.json").await;
    sync_now(&app, 1002).await;
    app.barrier().await;
    let pool = app.pool.clone();
    app.wait_until("the command to be recorded", || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM commands")
                .fetch_one(&pool)
                .await
                .unwrap()
                == 1
        }
    })
    .await;
    app.stop_worker().await;

    // A worker planned the flush, claimed the row and died before finishing it.
    altinn_sync::sync::handle_commands(&app.pool, &app.settings.flush)
        .await
        .unwrap();
    sqlx::query(
        r#"UPDATE outbox SET leased_by = 'a-dead-worker', attempts = 1,
                             lease_until = now() + interval '1 second'"#,
    )
    .execute(&app.pool)
    .await
    .unwrap();

    app.settings.altinn = altinn.settings.clone();
    app.start_worker().await;
    flushed(&app, 1).await;
    assert_eq!(
        altinn.delegations().await,
        vec![(altinn.kari, vec![MED_URN.to_owned()])]
    );
    let (attempts, leased_by): (i32, String) =
        sqlx::query_as("SELECT attempts, leased_by FROM outbox WHERE status = 'delivered'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(attempts, 2);
    assert_ne!(leased_by, "a-dead-worker");
    app.teardown().await;
}

/// Audit rows of agent removals, oldest first.
async fn removals(app: &TestApp, count: i64) -> Vec<String> {
    let pool = app.pool.clone();
    app.wait_until("the agent removals", || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM audit WHERE action = 'remove-agent'")
                .fetch_one(&pool)
                .await
                .unwrap()
                >= count
        }
    })
    .await;
    sqlx::query_scalar("SELECT outcome FROM audit WHERE action = 'remove-agent' ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn idle_agents_are_removed_when_asked_but_never_with_packages_left() {
    let altinn = DemoAltinn::start().await;
    let mut app = TestApp::without_worker().await;
    app.settings.altinn = altinn.settings.clone();
    app.settings.flush.remove_idle_agents = true;
    app.start_worker().await;
    let by_hand = by_hand(&altinn);
    let firm = by_hand.firm_party(FIRM).await.unwrap();
    let agents = || async {
        let mut agents: Vec<Uuid> = by_hand
            .agents(&firm)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.agent.id)
            .collect();
        agents.sort();
        agents
    };

    // Kari gets the client, then loses it: once the revoke is through she is no agent.
    publish_demo(&app, "01-kari-role-changed.json").await;
    let mut assigned = publish_demo(&app, "02-kari-client-assigned.json").await;
    sync_now(&app, 1002).await;
    flushed(&app, 1).await;
    assert_eq!(agents().await, vec![altinn.kari]);
    let mut removed = publish_demo(&app, "05-kari-client-removed.json").await;
    sync_now(&app, 1005).await;
    flushed(&app, 2).await;
    assert_eq!(removals(&app, 1).await, ["delivered"]);
    assert!(agents().await.is_empty());
    assert!(altinn.delegations().await.is_empty());

    // She comes back (and is made an agent again), and someone gives her a package by hand.
    assigned["event_id"] = json!(Uuid::new_v4());
    assigned["sequence"] = json!(1006);
    app.publish_event(&assigned).await;
    sync_now(&app, 1006).await;
    flushed(&app, 3).await;
    assert_eq!(
        altinn.delegations().await,
        vec![(altinn.kari, vec![MED_URN.to_owned()])]
    );
    let batch = altinn_sync::altinn::wire::DelegationBatch::for_role("regnskapsforer", [LONN]);
    by_hand
        .delegate(&firm, altinn.client, altinn.kari, &batch)
        .await
        .unwrap();

    // Idle again as far as this worker knows, but Altinn refuses cascade=false: left alone.
    removed["event_id"] = json!(Uuid::new_v4());
    removed["sequence"] = json!(1007);
    app.publish_event(&removed).await;
    sync_now(&app, 1007).await;
    flushed(&app, 4).await;
    assert_eq!(removals(&app, 2).await, ["delivered", "kept"]);
    assert_eq!(agents().await, vec![altinn.kari]);
    assert_eq!(
        altinn.delegations().await,
        vec![(altinn.kari, vec![LONN.to_owned()])]
    );
    let kept: Option<String> = sqlx::query_scalar("SELECT kept_reason FROM altinn_agents")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(
        kept.as_deref()
            .is_some_and(|k| k.contains("still holds packages")),
        "{kept:?}"
    );
    app.teardown().await;
}

#[tokio::test]
async fn a_firm_whose_system_user_altinn_refuses_is_paused_while_the_others_go_on() {
    let altinn = DemoAltinn::start().await;
    let app = flushing_app(&altinn.settings).await;
    // The same story in two firms; Altinn refuses the second firm's system user.
    for file in ["01-kari-role-changed.json", "02-kari-client-assigned.json"] {
        let mut event = publish_demo(&app, file).await;
        event["event_id"] = json!(Uuid::new_v4());
        event["firm"]["org_number"] = json!(UNAPPROVED);
        app.publish_event(&event).await;
    }
    sync_now(&app, 1002).await;
    sync_now_for(&app, UNAPPROVED, 1002).await;
    let pool = app.pool.clone();
    let paused_and_delivered = || {
        let pool = pool.clone();
        async move {
            let (delivered, paused): (i64, i64) = sqlx::query_as(
                r#"SELECT (SELECT count(*) FROM outbox WHERE firm = $1 AND status = 'delivered'),
                          (SELECT count(*) FROM firms
                           WHERE org_number = $2 AND flush_paused_until > now())"#,
            )
            .bind(FIRM)
            .bind(UNAPPROVED)
            .fetch_one(&pool)
            .await
            .unwrap();
            delivered == 1 && paused == 1
        }
    };
    app.wait_until("one firm delivered, the other paused", paused_and_delivered)
        .await;
    assert_eq!(
        altinn.delegations().await,
        vec![(altinn.kari, vec![MED_URN.to_owned()])]
    );
    let waiting: (String, i32) =
        sqlx::query_as("SELECT status, attempts FROM outbox WHERE firm = $1")
            .bind(UNAPPROVED)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(waiting, ("pending".to_owned(), 1), "kept, not parked");

    // Support and operators see why.
    let explained = cli(&app, &["explain", "--firm", UNAPPROVED, "--employee", KARI]).await;
    assert!(explained.contains("Altinn flush: PAUSED"), "{explained}");
    assert!(explained.contains("system user"), "{explained}");
    let listed = cli(&app, &["parked", "--firm", UNAPPROVED]).await;
    assert!(
        listed.contains(&format!("firm {UNAPPROVED} PAUSED"))
            && listed.contains("1 changes waiting"),
        "{listed}"
    );

    // A sync-now tries again at once; still refused, so paused again, and nothing lost.
    sync_now_for(&app, UNAPPROVED, 1002).await;
    app.wait_until("a second try", || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i32>("SELECT attempts FROM outbox WHERE firm = $1")
                .bind(UNAPPROVED)
                .fetch_one(&pool)
                .await
                .unwrap()
                == 2
        }
    })
    .await;
    app.wait_until("paused again", paused_and_delivered).await;
    app.teardown().await;
}

#[tokio::test]
async fn a_parked_grant_is_retried_once_adminflow_corrects_the_person() {
    let altinn = DemoAltinn::start().await;
    let app = flushing_app(&altinn.settings).await;
    // AdminFlow has Kari's last name wrong (Altinn compares the first four letters): Altinn
    // cannot match the person.
    let mut role = publish_demo_as(&app, "01-kari-role-changed.json", "Normann").await;
    publish_demo_as(&app, "02-kari-client-assigned.json", "Normann").await;
    sync_now(&app, 1002).await;
    flushed(&app, 1).await;
    let parked: (String, i32) =
        sqlx::query_as("SELECT explanation, attempts FROM outbox WHERE status = 'parked'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(parked.0.contains("do not match"), "{}", parked.0);
    assert!(altinn.delegations().await.is_empty());

    // The correction arrives; the next sync-now retries the parked grant, which goes through.
    role["event_id"] = json!(Uuid::new_v4());
    role["sequence"] = json!(1003);
    role["data"]["employee"]["last_name"] = json!("Nordmann");
    app.publish_event(&role).await;
    sync_now(&app, 1003).await;
    flushed(&app, 2).await;
    assert_eq!(
        altinn.delegations().await,
        vec![(altinn.kari, vec![MED_URN.to_owned()])]
    );
    let rows: Vec<(String, i32)> = sqlx::query_as("SELECT status, attempts FROM outbox")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, [("delivered".to_owned(), 2)], "the same row, retried");
    app.teardown().await;
}

/// Publishes a demo event with the employee's last name replaced.
async fn publish_demo_as(app: &TestApp, file: &str, last_name: &str) -> Value {
    let mut event = demo(file);
    event["data"]["employee"]["last_name"] = json!(last_name);
    app.publish_event(&event).await;
    event
}

#[tokio::test]
async fn the_nightly_reconcile_retries_parked_changes_and_re_adds_a_lost_agent() {
    let altinn = DemoAltinn::start().await;
    let app = flushing_app(&altinn.settings).await;
    kari_on_both_clients_synced(&app).await;
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE status = 'parked'")
            .await,
        1
    );

    // Someone removes Kari as agent in Altinn, with her packages.
    let by_hand = by_hand(&altinn);
    let firm = by_hand.firm_party(FIRM).await.unwrap();
    by_hand
        .remove_agent(&firm, altinn.kari, true)
        .await
        .unwrap();
    assert!(altinn.delegations().await.is_empty());

    let outcome = nightly(&app, 2).await;
    // Kari is made an agent again and gets her package back.
    assert_eq!(
        altinn.delegations().await,
        vec![(altinn.kari, vec![MED_URN.to_owned()])]
    );
    assert!(
        // Both of Kari's clients are missing: the lost one and the refused one.
        outcome.contains("2 missing and 0 extra grants drifted")
            && outcome.contains("1 parked changes retried")
            && outcome.contains("planned 1 grants"),
        "{outcome}"
    );
    // The refused change was tried once more, and refused again for the same reason.
    let parked: (i32, String) =
        sqlx::query_as("SELECT attempts, explanation FROM outbox WHERE status = 'parked'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(parked.0, 2);
    assert!(
        parked.1.contains("Register of Legal Entities"),
        "{}",
        parked.1
    );
    app.teardown().await;
}

#[tokio::test]
async fn a_sync_now_waiting_for_its_events_is_honoured_after_a_plain_one() {
    let altinn = DemoAltinn::start().await;
    let mut app = flushing_app(&altinn.settings).await;
    publish_demo(&app, "01-kari-role-changed.json").await;
    app.barrier().await;
    // AdminFlow asks for a sync after Kari's assignment (1002), which is still on its way; an
    // administrator's plain sync-now overtakes it.
    sync_now(&app, 1002).await;
    let plain = json!({
        "command_id": Uuid::new_v4(), "command_type": "SyncNow",
        "requested_at": "2026-11-24T08:00:00Z", "requested_by": "admin@firm.example",
        "firm": {"org_number": FIRM}
    });
    app.publish_command(&plain).await;
    app.wait_until("the plain sync-now handled", || async {
        app.count(&format!(
            "SELECT count(*) FROM commands WHERE command_id = '{}' AND handled_at IS NOT NULL",
            plain["command_id"].as_str().unwrap()
        ))
        .await
            == 1
    })
    .await;
    assert_eq!(
        app.count(
            "SELECT count(*) FROM commands WHERE after_sequence = 1002 AND handled_at IS NULL"
        )
        .await,
        1,
        "the sync-now waiting for 1002 is still waiting"
    );
    publish_demo(&app, "02-kari-client-assigned.json").await;
    flushed(&app, 2).await;
    assert_eq!(
        altinn.delegations().await,
        vec![(altinn.kari, vec![MED_URN.to_owned()])],
        "the waiting sync-now delivered Kari's access once her assignment arrived"
    );
    app.teardown().await;
}

/// Kari's assignment again, as a new event after everything in the demo.
async fn kari_assigned_again(app: &TestApp, sequence: i64) {
    let mut event = demo("02-kari-client-assigned.json");
    event["event_id"] = json!(Uuid::new_v4());
    event["sequence"] = json!(sequence);
    app.publish_event(&event).await;
}

#[tokio::test]
async fn a_removal_while_its_grant_is_in_flight_is_delivered_after_it() {
    let altinn = DemoAltinn::start().await;
    let app = flushing_app(&altinn.settings).await;
    // Altinn holds the grant unanswered: it is on its way when Kari leaves the client.
    altinn.sim.close_gate();
    publish_demo(&app, "01-kari-role-changed.json").await;
    publish_demo(&app, "02-kari-client-assigned.json").await;
    sync_now(&app, 1002).await;
    altinn.sim.held_at_gate(1).await;
    publish_demo(&app, "05-kari-client-removed.json").await;
    sync_now(&app, 1005).await;
    commands_handled(&app, 2).await;
    altinn.sim.open_gate();
    // No further command: the two sync-nows are all there is.
    flushed(&app, 2).await;
    assert_eq!(
        altinn.delegations().await,
        vec![],
        "Kari, removed while her grant was in flight, holds nothing"
    );
    let changes: Vec<(String, String)> =
        sqlx::query_as("SELECT action, status FROM outbox ORDER BY generation")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        changes,
        [("grant", "delivered"), ("revoke", "delivered")].map(|(a, s)| (a.into(), s.into()))
    );
    assert_eq!(app.count("SELECT count(*) FROM applied_grants").await, 0);
    app.teardown().await;
}

#[tokio::test]
async fn access_wanted_again_while_its_revoke_is_in_flight_is_granted_after_it() {
    let altinn = DemoAltinn::start().await;
    let app = flushing_app(&altinn.settings).await;
    kari_granted(&app).await;
    altinn.sim.close_gate();
    publish_demo(&app, "05-kari-client-removed.json").await;
    sync_now(&app, 1005).await;
    altinn.sim.held_at_gate(1).await;
    kari_assigned_again(&app, 1006).await;
    sync_now(&app, 1006).await;
    commands_handled(&app, 3).await;
    altinn.sim.open_gate();
    flushed(&app, 3).await;
    assert_eq!(
        altinn.delegations().await,
        vec![(altinn.kari, vec![MED_URN.to_owned()])],
        "Kari, assigned again while her revoke was in flight, holds her access"
    );
    assert_eq!(app.count("SELECT count(*) FROM applied_grants").await, 1);
    app.teardown().await;
}

#[tokio::test]
async fn a_revoke_waits_for_the_new_project_accountant_only_so_long() {
    let altinn = DemoAltinn::start().await;
    let mut app = TestApp::without_worker().await;
    app.settings.altinn = altinn.settings.clone();
    app.settings.flush.make_before_break_max_secs = 2;
    app.start_worker().await;
    kari_granted(&app).await;
    // Altinn has locked the firm out of person lookups for the hour, so Ola, the new project
    // accountant, cannot be made an agent: his grant waits out the hour.
    sqlx::query(
        "UPDATE firms SET agent_lookups_locked_until = now() + interval '1 hour' \
         WHERE org_number = $1",
    )
    .bind(FIRM)
    .execute(&app.pool)
    .await
    .unwrap();
    publish_demo(&app, "03-ola-role-changed.json").await;
    publish_demo(&app, "04-project-accountant-to-ola.json").await;
    publish_demo(&app, "05-kari-client-removed.json").await;
    sync_now(&app, 1005).await;
    app.wait_until("Kari's revoke delivered", || async {
        app.count("SELECT count(*) FROM outbox WHERE action = 'revoke' AND status = 'delivered'")
            .await
            == 1
    })
    .await;
    let waited: f64 = sqlx::query_scalar(
        r#"SELECT extract(epoch FROM a.at - o.created_at)::float8
           FROM outbox o JOIN audit a ON a.outbox_id = o.id AND a.outcome = 'delivered'
           WHERE o.action = 'revoke'"#,
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(
        waited >= 2.0,
        "the revoke waited for Ola's grant ({waited:.1} s), for MAKE_BEFORE_BREAK_MAX_SECS"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE action = 'grant' AND status = 'pending'")
            .await,
        1,
        "Ola's grant still waits out the lock-out"
    );
    assert_eq!(altinn.delegations().await, vec![], "Kari holds nothing");
    app.teardown().await;
}

#[tokio::test]
async fn a_client_with_several_roles_gets_the_package_under_the_role_that_has_it() {
    let altinn = DemoAltinn::start().await;
    // Before its registration in ER, the client delegated payroll to the firm in Altinn.
    altinn
        .sim
        .give_firm_role(CLIENT, FIRM, "rettighetshaver", &[LONN])
        .await;
    let app = flushing_app(&altinn.settings).await;
    kari_granted(&app).await;
    assert_eq!(
        altinn.delegations().await,
        vec![(altinn.kari, vec![MED_URN.to_owned()])],
        "delegated under regnskapsforer, the role that has the package, not the first listed"
    );
    app.teardown().await;
}

#[tokio::test]
async fn a_revoke_after_the_client_dropped_the_firm_in_er_is_done_not_parked() {
    let altinn = DemoAltinn::start().await;
    let mut app = flushing_app(&altinn.settings).await;
    kari_granted(&app).await;
    // The client ends the firm's registration in ER: Altinn drops the delegations with it. A
    // restarted worker (nothing cached) finds the client no longer listed.
    altinn.sim.drop_firm_from_client(CLIENT, FIRM).await;
    assert_eq!(altinn.delegations().await, vec![]);
    app.stop_worker().await;
    app.start_worker().await;
    publish_demo(&app, "05-kari-client-removed.json").await;
    sync_now(&app, 1005).await;
    flushed(&app, 2).await;
    let (status, detail): (String, Option<String>) = sqlx::query_as(
        r#"SELECT o.status, a.detail FROM outbox o JOIN audit a ON a.outbox_id = o.id
           WHERE o.action = 'revoke'"#,
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(status, "delivered");
    assert!(
        detail
            .as_deref()
            .unwrap_or_default()
            .contains("nothing left to revoke"),
        "the audit says why: {detail:?}"
    );
    assert_eq!(app.count("SELECT count(*) FROM applied_grants").await, 0);
    app.teardown().await;
}

#[tokio::test]
async fn an_agent_removed_behind_the_workers_back_is_made_again_not_parked() {
    let altinn = DemoAltinn::start().await;
    let mut app = flushing_app(&altinn.settings).await;
    kari_granted(&app).await;
    // Another replica (or a person in Altinn's portal) removes Kari as agent; this worker still
    // knows her as one.
    let client = by_hand(&altinn);
    let firm = client.firm_party(FIRM).await.unwrap();
    client.remove_agent(&firm, altinn.kari, true).await.unwrap();
    // Kari takes on a second client, which has now registered the firm too.
    altinn
        .sim
        .give_firm_role(STRANGER, FIRM, "regnskapsforer", &[])
        .await;
    let mut second = demo("02-kari-client-assigned.json");
    second["event_id"] = json!(Uuid::new_v4());
    second["sequence"] = json!(1006);
    second["data"]["client"]["org_number"] = json!(STRANGER);
    app.publish_event(&second).await;
    app.barrier().await;
    sync_now(&app, 1006).await;
    flushed(&app, 2).await;
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE status = 'parked'")
            .await,
        0,
        "nothing parked: the refusal came from a stale agent, so Kari was made one again"
    );
    let held = altinn
        .sim
        .delegations()
        .await
        .into_iter()
        .filter(|d| d.agent_party == altinn.kari && d.packages == [MED_URN])
        .count();
    assert_eq!(held, 1, "Kari holds her second client's package");
    app.teardown().await;
}

#[tokio::test]
async fn a_setup_error_holds_every_delivery_parks_nothing_and_clears_by_itself() {
    let altinn = DemoAltinn::start().await;
    let mut app = TestApp::without_worker().await;
    app.settings.altinn = altinn.settings.clone();
    // The operator configured a kid Maskinporten does not know: every grant is refused.
    app.settings.altinn.maskinporten_kid = Some("kid-new".into());
    app.start_worker().await;
    publish_demo(&app, "01-kari-role-changed.json").await;
    publish_demo(&app, "02-kari-client-assigned.json").await;
    sync_now(&app, 1002).await;
    app.wait_until("the refusal recorded", || async {
        app.count("SELECT count(*) FROM audit WHERE outcome = 'retry'")
            .await
            > 0
    })
    .await;
    let detail: String =
        sqlx::query_scalar("SELECT detail FROM audit WHERE outcome = 'retry' LIMIT 1")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(
        detail.contains("invalid_client") && detail.contains("MASKINPORTEN_KID"),
        "the reason names the setting to fix: {detail}"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE status = 'parked'")
            .await,
        0,
        "a setup error parks nothing"
    );
    // The key is registered under the new kid: the worker resumes by itself.
    altinn
        .sim
        .add_maskinporten_client(MaskinportenClient {
            kid: "kid-new".into(),
            ..maskinporten_client()
        })
        .await;
    flushed(&app, 1).await;
    assert_eq!(
        altinn.delegations().await,
        vec![(altinn.kari, vec![MED_URN.to_owned()])]
    );
    app.teardown().await;
}

/// Kari's demo story (role, then the demo client) in `firm`.
pub(crate) async fn kari_story_in(app: &TestApp, firm: &str) {
    for file in ["01-kari-role-changed.json", "02-kari-client-assigned.json"] {
        let mut event = demo(file);
        event["event_id"] = json!(Uuid::new_v4());
        event["firm"]["org_number"] = json!(firm);
        app.publish_event(&event).await;
    }
}

#[tokio::test]
async fn a_403_on_every_firm_holds_every_delivery_pauses_no_firm_and_clears_by_itself() {
    let altinn = DemoAltinn::start().await;
    // The Maskinporten client was not granted the write scope: Altinn answers every change,
    // for every firm, with 403.
    let write = "altinn:clientdelegations.write";
    altinn
        .sim
        .set_faults(sim::Faults {
            missing_scope: Some(write.into()),
            ..sim::Faults::default()
        })
        .await;
    let app = flushing_app(&altinn.settings).await;
    // One firm refused is that firm's refusal: it is paused, as before.
    kari_story_in(&app, FIRM).await;
    sync_now(&app, 1002).await;
    app.wait_until("the first firm paused", || async {
        app.count("SELECT count(*) FROM firms WHERE flush_paused_at IS NOT NULL")
            .await
            == 1
    })
    .await;
    // A second firm refused, and none let through: the worker itself lacks the scope. The
    // first firm's pause is lifted, and both wait for the hold.
    kari_story_in(&app, SECOND).await;
    sync_now_for(&app, SECOND, 1002).await;
    let held = || async {
        let told = app
            .count(&format!(
                "SELECT count(DISTINCT firm) FROM audit WHERE outcome = 'retry' AND detail LIKE \
                 '%{write}%' AND detail LIKE '%altinn:accessmanagement/authorizedparties%'"
            ))
            .await;
        let paused = app
            .count("SELECT count(*) FROM firms WHERE flush_paused_at IS NOT NULL")
            .await;
        told == 2 && paused == 0
    };
    app.wait_until(
        "both firms held by the setup error, told the missing scope, neither paused",
        held,
    )
    .await;
    // Probed again, and still held: nothing parked, no firm paused.
    app.wait_until("a probe after the hold", || async {
        app.count("SELECT count(*) FROM outbox WHERE attempts >= 3")
            .await
            > 0
    })
    .await;
    assert!(held().await, "still held after a probe, and no firm paused");
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE status <> 'pending'")
            .await,
        0,
        "a setup error parks nothing"
    );
    // The scope is granted: the worker resumes by itself.
    altinn.sim.set_faults(sim::Faults::default()).await;
    flushed(&app, 2).await;
    assert_eq!(
        altinn.delegations().await,
        vec![
            (altinn.kari, vec![MED_URN.to_owned()]),
            (altinn.kari, vec![MED_URN.to_owned()])
        ]
    );
    assert_eq!(
        app.count("SELECT count(*) FROM firms WHERE flush_paused_at IS NOT NULL")
            .await,
        0
    );
    app.teardown().await;
}

#[tokio::test]
async fn doctor_checks_a_setup_step_by_step_and_names_what_is_wrong() {
    use altinn_sync::doctor::{self, DoctorArgs};
    let altinn = DemoAltinn::start().await;
    let app = TestApp::without_worker().await;
    let args = |altinn_settings: AltinnSettings, firm: &str| DoctorArgs {
        db: app.settings.db.clone(),
        altinn: altinn_settings,
        firm: Some(firm.to_owned()),
        role_mapping: Default::default(),
    };
    let failed = |checks: &[doctor::Check]| -> Vec<(&'static str, String)> {
        checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| (c.step, c.detail.clone()))
            .collect()
    };

    let good = doctor::run(&args(altinn.settings.clone(), FIRM))
        .await
        .unwrap();
    let steps: Vec<&str> = good.iter().map(|c| c.step).collect();
    assert_eq!(
        steps,
        [
            "key file",
            "maskinporten",
            "token exchange",
            "authorizedparties",
            "clients",
            "agents"
        ]
    );
    assert!(failed(&good).is_empty(), "{}", doctor::render(&good));

    // A kid Maskinporten does not know.
    let mut wrong_kid = altinn.settings.clone();
    wrong_kid.maskinporten_kid = Some("kid-unknown".into());
    let checks = doctor::run(&args(wrong_kid, FIRM)).await.unwrap();
    let [(step, detail)] = failed(&checks).try_into().unwrap();
    assert_eq!(step, "maskinporten");
    assert!(detail.contains("MASKINPORTEN_KID"), "{detail}");

    // A firm that has not approved the system user.
    let checks = doctor::run(&args(altinn.settings.clone(), UNAPPROVED))
        .await
        .unwrap();
    let [(step, detail)] = failed(&checks).try_into().unwrap();
    assert_eq!(step, "maskinporten");
    assert!(detail.contains("not approved"), "{detail}");

    // The wrong base URL.
    let mut wrong_url = altinn.settings.clone();
    wrong_url.altinn_base_url = Some(format!(
        "{}/platform",
        altinn.settings.altinn_base_url.as_deref().unwrap()
    ));
    let checks = doctor::run(&args(wrong_url, FIRM)).await.unwrap();
    let [(step, detail)] = failed(&checks).try_into().unwrap();
    assert_eq!(step, "token exchange");
    assert!(detail.contains("ALTINN_BASE_URL"), "{detail}");

    // A key file that is not a key.
    let mut no_key = altinn.settings.clone();
    no_key.maskinporten_key_file = Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"));
    let checks = doctor::run(&args(no_key, FIRM)).await.unwrap();
    let [(step, _)] = failed(&checks).try_into().unwrap();
    assert_eq!(step, "key file");
    assert_eq!(checks.len(), 1, "nothing else can be checked without a key");
    app.teardown().await;
}

#[tokio::test]
async fn a_person_already_an_agent_costs_no_lookup_even_during_a_lock_out() {
    use altinn_sync::altinn::wire::PersonInput;
    let altinn = DemoAltinn::start().await;
    let app = flushing_app(&altinn.settings).await;
    // Kari was made the firm's agent by hand; then two failed lookups (another caller's, say)
    // set off Altinn's hour-long lock-out on person lookups.
    let client = by_hand(&altinn);
    let firm = client.firm_party(FIRM).await.unwrap();
    let kari = |last_name: &str| PersonInput {
        person_identifier: "15038512363".into(),
        last_name: last_name.into(),
    };
    client.add_agent(&firm, &kari("Nordmann")).await.unwrap();
    for _ in 0..2 {
        client.add_agent(&firm, &kari("Hansen")).await.unwrap_err();
    }
    assert!(matches!(
        client.add_agent(&firm, &kari("Nordmann")).await,
        Err(altinn_sync::altinn::Error::LockedOut { .. })
    ));
    // The worker finds Kari among the firm's agents and delegates without a lookup.
    kari_granted(&app).await;
    assert_eq!(
        altinn.delegations().await,
        vec![(altinn.kari, vec![MED_URN.to_owned()])]
    );
    app.teardown().await;
}
