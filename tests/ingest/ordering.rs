//! Duplicates, reordering, tombstones, firm isolation, and sequence regressions.

use crate::common::TestApp;
use crate::common::workload::{FirmEvents, Model, Person, mixed_stream, org_number};

#[tokio::test]
async fn duplicates_change_nothing_and_are_recorded_once() {
    let mut app = TestApp::spawn().await;
    let mut firm = FirmEvents::new(org_number(10));
    let kari = Person::new(1);
    let client = org_number(1000);
    let role = firm.role_changed(&kari, &["PayrollAccountant"]);
    let assigned = firm.client_assigned(&kari, &client);
    for _ in 0..3 {
        app.publish_event(&role).await;
        app.publish_event(&assigned).await;
    }
    app.barrier().await;
    let n = app
        .count(&format!(
            "SELECT count(*) FROM processed_events WHERE firm = '{}'",
            firm.org
        ))
        .await;
    assert_eq!(n, 2, "each event id is processed once");
    assert_eq!(app.desired(&firm.org).await.len(), 1);
    app.teardown().await;
}

#[tokio::test]
async fn a_late_older_assignment_does_not_resurrect_a_removal() {
    let mut app = TestApp::spawn().await;
    let mut firm = FirmEvents::new(org_number(11));
    let kari = Person::new(1);
    let client = org_number(1100);
    let role = firm.role_changed(&kari, &["PayrollAccountant"]);
    let assigned = firm.client_assigned(&kari, &client); // sequence 2
    let removed = firm.client_removed(&kari, &client); // sequence 3

    app.publish_event(&role).await;
    app.publish_event(&removed).await; // the removal overtakes the assignment
    app.publish_event(&assigned).await;
    app.barrier().await;
    assert!(
        app.desired(&firm.org).await.is_empty(),
        "the tombstone wins"
    );
    let tombstones = app
        .count("SELECT count(*) FROM assignments WHERE NOT active")
        .await;
    assert_eq!(tombstones, 1);
    app.teardown().await;
}

#[tokio::test]
async fn an_older_role_change_arriving_late_is_ignored() {
    let mut app = TestApp::spawn().await;
    let mut firm = FirmEvents::new(org_number(12));
    let kari = Person::new(1);
    let client = org_number(1200);
    let old_role = firm.role_changed(&kari, &["PayrollAccountant"]);
    let new_role = firm.role_changed(&kari, &["AccountantWithSigningRights"]);
    let assigned = firm.client_assigned(&kari, &client);

    app.publish_event(&new_role).await;
    app.publish_event(&assigned).await;
    app.publish_event(&old_role).await;
    app.barrier().await;
    assert_eq!(
        app.desired(&firm.org).await,
        vec![(
            kari.id,
            client,
            "regnskapsforer-med-signeringsrettighet".to_owned()
        )]
    );
    app.teardown().await;
}

#[tokio::test]
async fn two_firms_with_the_same_employee_and_client_ids_stay_apart() {
    let mut app = TestApp::spawn().await;
    let mut a = FirmEvents::new(org_number(13));
    let mut b = FirmEvents::new(org_number(14));
    let kari = Person::new(1); // the same employee id in both firms
    let client = org_number(1300); // and the same client

    app.publish_event(&a.role_changed(&kari, &["PayrollAccountant"]))
        .await;
    app.publish_event(&a.client_assigned(&kari, &client)).await;
    // Firm B's events carry higher sequences and would win if facts were shared.
    b.next_sequence = 1000;
    app.publish_event(&b.role_changed(&kari, &["AccountantWithSigningRights"]))
        .await;
    app.publish_event(&b.client_assigned(&kari, &client)).await;
    app.publish_event(&b.client_removed(&kari, &client)).await;
    app.barrier().await;

    assert_eq!(
        app.desired(&a.org).await,
        vec![(kari.id, client.clone(), "regnskapsforer-lonn".to_owned())]
    );
    assert!(app.desired(&b.org).await.is_empty());
    app.assert_desired_consistent().await;
    app.teardown().await;
}

#[tokio::test]
async fn a_shuffled_stream_with_duplicates_matches_an_independent_model() {
    let mut app = TestApp::spawn().await;
    let events = mixed_stream(7, 5, 12, 20, 3000, 0.05, 25);
    let mut model = Model::default();
    for (_, e) in &events {
        model.apply(e);
    }
    app.publish_all(&events).await;
    app.barrier().await;
    assert_eq!(app.desired_all().await, model.desired());
    app.assert_desired_consistent().await;
    app.teardown().await;
}

#[tokio::test]
async fn a_sequence_regression_holds_the_firm_until_an_operator_resequences() {
    let mut app = TestApp::spawn().await; // threshold 1000 in tests
    let mut firm = FirmEvents::new(org_number(15));
    let mut other = FirmEvents::new(org_number(16));
    let kari = Person::new(1);
    let client = org_number(1500);
    firm.next_sequence = 5000;
    app.publish_event(&firm.role_changed(&kari, &["PayrollAccountant"]))
        .await;
    // AdminFlow restored from a backup: numbering restarts, and the new lineage goes on.
    firm.next_sequence = 10;
    let restored = firm.client_assigned(&kari, &client);
    let next = firm.role_changed(&kari, &["AccountantWithSigningRights"]);
    app.publish_event(&restored).await;
    app.publish_event(&next).await;
    // Other firms are not affected.
    app.publish_event(&other.role_changed(&kari, &["PayrollAccountant"]))
        .await;
    app.publish_event(&other.client_assigned(&kari, &client))
        .await;
    app.barrier().await;

    assert!(
        app.desired(&firm.org).await.is_empty(),
        "nothing of the new lineage is applied"
    );
    assert_eq!(app.desired(&other.org).await.len(), 1);
    let dead = app.drain_dead_letters(2).await;
    assert!(
        dead.iter().all(|d| d.0 == "sequence-regression"),
        "{dead:?}"
    );
    // One or both are recorded as regressions, depending on whether they shared a batch.
    assert!(app.count("SELECT count(*) FROM sequence_regressions").await >= 1);
    assert_eq!(
        app.count("SELECT count(*) FROM firms WHERE held_since IS NOT NULL")
            .await,
        1
    );

    // The operator accepts the new numbering and replays the dead letters in order.
    altinn_sync::state::resequence(&app.pool, &firm.org, altinn_sync::state::OnHealthy::Refuse)
        .await
        .unwrap();
    app.publish_event(&restored).await;
    app.publish_event(&next).await;
    app.barrier().await;
    assert_eq!(
        app.desired(&firm.org).await,
        vec![(
            kari.id,
            client,
            "regnskapsforer-med-signeringsrettighet".to_owned()
        )]
    );
    app.assert_desired_consistent().await;
    app.teardown().await;
}
