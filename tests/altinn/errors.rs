//! Each class of failure, as Altinn (the simulator) produces it.

use std::time::Duration;

use altinn_sync::altinn::error::LOCKOUT;
use altinn_sync::altinn::wire::{DelegationBatch, PersonInput};
use altinn_sync::altinn::{Class, Error, Firm};
use altinn_sync::sim::Faults;

use crate::helpers::{
    KEY_B, KLADM, LAST_NAME, LONN, NIN, READ_SCOPES, REGN, UNAPPROVED_FIRM_ORG, spawn,
};

fn person(last_name: &str) -> PersonInput {
    PersonInput {
        person_identifier: NIN.into(),
        last_name: last_name.into(),
    }
}

fn rejection(err: Error) -> Box<altinn_sync::altinn::Rejection> {
    match err {
        Error::Permanent(r) => r,
        other => panic!("expected a permanent rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn client_without_the_firm_as_accountant_is_vld_00032() {
    let t = spawn().await;
    let client = t.client();
    let agent = client
        .add_agent(&t.firm, &person(LAST_NAME))
        .await
        .unwrap()
        .to_id;

    let err = client
        .delegate(
            &t.firm,
            t.stranger,
            agent,
            &DelegationBatch::for_role(REGN, [LONN]),
        )
        .await
        .unwrap_err();

    assert_eq!(err.class(), Class::Permanent);
    let r = rejection(err);
    assert_eq!((r.status, r.code.as_deref()), (400, Some("AM.VLD-00032")));
    assert!(r.explanation.contains(
        "not registered as accountant for this client in the Register of Legal Entities"
    ));
    assert_eq!(
        r.validation_errors[0].paths,
        vec!["/values[0]/role".to_owned()]
    );
    assert!(r.trace_id.is_some());
    assert!(t.sim.delegations().await.is_empty());
}

#[tokio::test]
async fn package_the_role_does_not_allow_is_vld_00026_and_rejects_the_batch() {
    let t = spawn().await;
    let client = t.client();
    let agent = client
        .add_agent(&t.firm, &person(LAST_NAME))
        .await
        .unwrap()
        .to_id;

    let batch = DelegationBatch::for_role(REGN, [LONN, KLADM]);
    let err = client
        .delegate(&t.firm, t.client, agent, &batch)
        .await
        .unwrap_err();

    let r = rejection(err);
    assert_eq!(r.code.as_deref(), Some("AM.VLD-00026"));
    assert_eq!(
        r.validation_errors[0].paths,
        vec!["/values[0]/packages[1]".to_owned()]
    );
    assert!(
        t.sim.delegations().await.is_empty(),
        "nothing of a rejected batch is applied"
    );
}

#[tokio::test]
async fn name_mismatch_is_vld_00034_and_repeats_lock_the_firm_out() {
    let t = spawn().await;
    let client = t.client();

    for _ in 0..2 {
        let r = rejection(
            client
                .add_agent(&t.firm, &person("Hansen"))
                .await
                .unwrap_err(),
        );
        assert_eq!(r.code.as_deref(), Some("AM.VLD-00034"));
        assert!(r.explanation.contains("do not match"), "{}", r.explanation);
    }
    let locked = client
        .add_agent(&t.firm, &person(LAST_NAME))
        .await
        .unwrap_err();

    assert_eq!(locked.class(), Class::LockedOut);
    assert!(
        locked.retry_after() >= Some(LOCKOUT),
        "never retried within the hour"
    );
    assert!(client.agents(&t.firm).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_revoked_token_is_refreshed_once_and_the_call_retried() {
    let t = spawn().await;
    let client = t.client();
    client.firm_party(&t.firm.org_number).await.unwrap();

    let revoke = reqwest::Client::new()
        .post(t.url("/_sim/tokens/revoke"))
        .send()
        .await
        .unwrap();
    assert!(revoke.status().is_success());
    let clients = client.clients(&t.firm).await.unwrap();

    assert_eq!(clients.len(), 1);
    assert_eq!(t.calls("POST", "/token"), 2, "one refresh after the 401");
    let journal = t.sim.journal();
    assert!(
        journal
            .iter()
            .any(|e| e.status == 401 && e.path.ends_with("/clients"))
    );
}

#[tokio::test]
async fn token_without_the_write_scope_is_firm_level() {
    let t = spawn().await;
    let config = t.config("read-only-client", "kid-b", READ_SCOPES);
    let client = t.client_with(config, KEY_B);

    let read = client.clients(&t.firm).await;
    let err = client
        .add_agent(&t.firm, &person(LAST_NAME))
        .await
        .unwrap_err();

    assert!(read.is_ok(), "the read scope is enough to read: {read:?}");
    assert_eq!(err.class(), Class::FirmLevel, "{err:?}");
}

#[tokio::test]
async fn system_user_not_approved_by_the_firm_is_firm_level() {
    let t = spawn().await;
    let firm = Firm {
        org_number: UNAPPROVED_FIRM_ORG.into(),
        party: uuid::Uuid::new_v4(),
    };

    let err = t.client().clients(&firm).await.unwrap_err();

    assert_eq!(err.class(), Class::FirmLevel, "{err:?}");
    assert!(err.to_string().contains("not approved"), "{err}");
}

#[tokio::test]
async fn too_many_requests_and_server_errors_are_transient_with_retry_after() {
    let t = spawn().await;
    let client = t.client();
    client.firm_party(&t.firm.org_number).await.unwrap();

    t.sim
        .set_faults(Faults {
            too_many_requests_share: 1.0,
            retry_after_secs: 7,
            ..Faults::default()
        })
        .await;
    let throttled = client.clients(&t.firm).await.unwrap_err();
    t.sim
        .set_faults(Faults {
            server_error_share: 1.0,
            ..Faults::default()
        })
        .await;
    let failed = client.clients(&t.firm).await.unwrap_err();
    t.sim.set_faults(Faults::default()).await;
    let recovered = client.clients(&t.firm).await;

    assert_eq!(throttled.class(), Class::Transient);
    assert_eq!(throttled.retry_after(), Some(Duration::from_secs(7)));
    assert_eq!(failed.class(), Class::Transient);
    assert!(recovered.is_ok());
}

#[tokio::test]
async fn dropped_connections_and_hangs_are_transient() {
    let t = spawn().await;
    let mut config = t.config("test-client", "kid-a", crate::helpers::ALL_SCOPES);
    config.request_timeout = Duration::from_millis(300);
    let client = t.client_with(config, crate::helpers::KEY_A);
    client.firm_party(&t.firm.org_number).await.unwrap();

    t.sim
        .set_faults(Faults {
            drop_share: 1.0,
            ..Faults::default()
        })
        .await;
    let dropped = client.clients(&t.firm).await.unwrap_err();
    t.sim
        .set_faults(Faults {
            hang_share: 1.0,
            hang_ms: 60_000,
            ..Faults::default()
        })
        .await;
    let hung = client.clients(&t.firm).await.unwrap_err();

    assert_eq!(dropped.class(), Class::Transient, "{dropped:?}");
    assert_eq!(hung.class(), Class::Transient, "{hung:?}");
    assert!(hung.to_string().contains("timed out"), "{hung}");
}
