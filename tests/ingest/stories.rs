//! The help page's stories about desired state, from published events to `desired` output.

use crate::common::TestApp;
use crate::common::workload::{FirmEvents, Person, org_number};

const LONN: &str = "regnskapsforer-lonn";
const MED: &str = "regnskapsforer-med-signeringsrettighet";
const UTEN: &str = "regnskapsforer-uten-signeringsrettighet";

fn grant(p: &Person, client: &str, package: &str) -> (uuid::Uuid, String, String) {
    (p.id, client.to_owned(), package.to_owned())
}

#[tokio::test]
async fn a_new_client_assignment_grants_the_roles_package() {
    let mut app = TestApp::spawn().await;
    let mut firm = FirmEvents::new(org_number(1));
    let kari = Person::new(1);
    let client = org_number(100);

    app.publish_event(&firm.role_changed(&kari, &["PayrollAccountant"]))
        .await;
    app.barrier().await;
    assert!(
        app.desired(&firm.org).await.is_empty(),
        "a role alone grants nothing"
    );

    app.publish_event(&firm.client_assigned(&kari, &client))
        .await;
    app.barrier().await;
    assert_eq!(
        app.desired(&firm.org).await,
        vec![grant(&kari, &client, LONN)]
    );
    app.assert_desired_consistent().await;
    app.teardown().await;
}

#[tokio::test]
async fn only_the_clients_an_employee_works_with() {
    let mut app = TestApp::spawn().await;
    let mut firm = FirmEvents::new(org_number(2));
    let (kari, ola) = (Person::new(1), Person::new(2));
    let (a, b) = (org_number(200), org_number(201));

    app.publish_event(&firm.role_changed(&kari, &["AccountantWithSigningRights"]))
        .await;
    app.publish_event(&firm.role_changed(&ola, &["AccountantWithoutSigningRights"]))
        .await;
    app.publish_event(&firm.client_assigned(&kari, &a)).await;
    app.publish_event(&firm.client_assigned(&ola, &b)).await;
    app.barrier().await;

    let mut want = vec![grant(&kari, &a, MED), grant(&ola, &b, UTEN)];
    want.sort();
    assert_eq!(app.desired(&firm.org).await, want);
    app.assert_desired_consistent().await;
    app.teardown().await;
}

#[tokio::test]
async fn a_removed_client_loses_access() {
    let mut app = TestApp::spawn().await;
    let mut firm = FirmEvents::new(org_number(3));
    let kari = Person::new(1);
    let (a, b) = (org_number(300), org_number(301));

    app.publish_event(&firm.role_changed(&kari, &["PayrollAccountant"]))
        .await;
    app.publish_event(&firm.client_assigned(&kari, &a)).await;
    app.publish_event(&firm.client_assigned(&kari, &b)).await;
    app.publish_event(&firm.client_removed(&kari, &a)).await;
    app.barrier().await;

    assert_eq!(app.desired(&firm.org).await, vec![grant(&kari, &b, LONN)]);
    app.assert_desired_consistent().await;
    app.teardown().await;
}

#[tokio::test]
async fn a_role_change_swaps_the_package_and_an_empty_role_set_removes_access() {
    let mut app = TestApp::spawn().await;
    let mut firm = FirmEvents::new(org_number(4));
    let kari = Person::new(1);
    let client = org_number(400);

    app.publish_event(&firm.role_changed(&kari, &["AccountantWithoutSigningRights"]))
        .await;
    app.publish_event(&firm.client_assigned(&kari, &client))
        .await;
    app.barrier().await;
    assert_eq!(
        app.desired(&firm.org).await,
        vec![grant(&kari, &client, UTEN)]
    );

    app.publish_event(&firm.role_changed(&kari, &["AccountantWithSigningRights", "Receptionist"]))
        .await;
    app.barrier().await;
    assert_eq!(
        app.desired(&firm.org).await,
        vec![grant(&kari, &client, MED)],
        "the unmapped role is kept and grants nothing"
    );

    app.publish_event(
        &firm.role_changed(&kari, &["PayrollAccountant", "AccountantWithSigningRights"]),
    )
    .await;
    app.barrier().await;
    assert_eq!(
        app.desired(&firm.org).await,
        vec![grant(&kari, &client, LONN), grant(&kari, &client, MED)]
    );

    app.publish_event(&firm.role_changed(&kari, &[])).await;
    app.barrier().await;
    assert!(
        app.desired(&firm.org).await.is_empty(),
        "an empty role set means no access"
    );
    app.assert_desired_consistent().await;
    app.teardown().await;
}

#[tokio::test]
async fn a_project_accountant_change_moves_access_to_the_new_person() {
    let mut app = TestApp::spawn().await;
    let mut firm = FirmEvents::new(org_number(5));
    let (kari, ola) = (Person::new(1), Person::new(2));
    let client = org_number(500);

    app.publish_event(&firm.role_changed(&kari, &["AccountantWithSigningRights"]))
        .await;
    app.publish_event(&firm.role_changed(&ola, &["AccountantWithSigningRights"]))
        .await;
    app.publish_event(&firm.project_accountant_changed(&client, None, Some(&kari)))
        .await;
    app.barrier().await;
    assert_eq!(
        app.desired(&firm.org).await,
        vec![grant(&kari, &client, MED)]
    );

    app.publish_event(&firm.project_accountant_changed(&client, Some(&kari), Some(&ola)))
        .await;
    app.barrier().await;
    assert_eq!(
        app.desired(&firm.org).await,
        vec![grant(&ola, &client, MED)]
    );

    app.publish_event(&firm.project_accountant_changed(&client, Some(&ola), None))
        .await;
    app.barrier().await;
    assert!(
        app.desired(&firm.org).await.is_empty(),
        "an emptied slot grants nothing"
    );
    app.assert_desired_consistent().await;
    app.teardown().await;
}

#[tokio::test]
async fn the_previous_project_accountant_keeps_access_while_still_assigned() {
    let mut app = TestApp::spawn().await;
    let mut firm = FirmEvents::new(org_number(6));
    let (kari, ola) = (Person::new(1), Person::new(2));
    let client = org_number(600);

    app.publish_event(&firm.role_changed(&kari, &["PayrollAccountant"]))
        .await;
    app.publish_event(&firm.role_changed(&ola, &["AccountantWithoutSigningRights"]))
        .await;
    app.publish_event(&firm.client_assigned(&kari, &client))
        .await;
    app.publish_event(&firm.project_accountant_changed(&client, None, Some(&kari)))
        .await;
    app.publish_event(&firm.project_accountant_changed(&client, Some(&kari), Some(&ola)))
        .await;
    app.barrier().await;

    let mut want = vec![grant(&kari, &client, LONN), grant(&ola, &client, UTEN)];
    want.sort();
    assert_eq!(app.desired(&firm.org).await, want);

    // Removing Kari's assignment now removes her access: the slot no longer holds her.
    app.publish_event(&firm.client_removed(&kari, &client))
        .await;
    app.barrier().await;
    assert_eq!(
        app.desired(&firm.org).await,
        vec![grant(&ola, &client, UTEN)]
    );

    // And a ClientRemoved for the slot holder leaves the slot, and so the access, alone.
    app.publish_event(&firm.client_removed(&ola, &client)).await;
    app.barrier().await;
    assert_eq!(
        app.desired(&firm.org).await,
        vec![grant(&ola, &client, UTEN)]
    );
    app.assert_desired_consistent().await;
    app.teardown().await;
}
