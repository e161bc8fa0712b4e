//! The happy path: token, firm party, clients, agent, delegate, revoke, all idempotent.

use altinn_sync::altinn::wire::{DelegationBatch, PersonInput};

use crate::helpers::{LAST_NAME, LONN, NIN, REGN, UTEN_SIGN, spawn};

fn kari() -> PersonInput {
    PersonInput {
        person_identifier: NIN.into(),
        last_name: LAST_NAME.into(),
    }
}

#[tokio::test]
async fn token_is_fetched_once_and_finds_the_firm_party() {
    let t = spawn().await;
    let client = t.client();

    let firm = client.firm_party(&t.firm.org_number).await.unwrap();
    let clients = client.clients(&firm).await.unwrap();

    assert_eq!(firm, t.firm);
    assert_eq!(
        clients.len(),
        1,
        "only the client that registered the firm is listed"
    );
    assert_eq!(
        t.calls("POST", "/token"),
        1,
        "the Altinn token is cached per firm"
    );
    assert_eq!(
        t.calls("GET", "/authentication/api/v1/exchange/maskinporten"),
        1
    );
}

#[tokio::test]
async fn clients_show_the_role_and_its_delegable_packages() {
    let t = spawn().await;

    let clients = t.client().clients(&t.firm).await.unwrap();

    let [entry] = clients.as_slice() else {
        panic!("one client expected: {clients:?}")
    };
    assert_eq!(entry.client.id, t.client);
    assert_eq!(
        entry.client.organization_identifier.as_deref(),
        Some("910000001")
    );
    let [access] = entry.access.as_slice() else {
        panic!("one role expected")
    };
    assert_eq!(access.role.code.as_deref(), Some(REGN));
    let urns: Vec<_> = access
        .packages
        .iter()
        .filter_map(|p| p.urn.as_deref())
        .collect();
    assert!(
        urns.contains(&LONN) && urns.contains(&UTEN_SIGN),
        "{urns:?}"
    );
}

#[tokio::test]
async fn ensure_agent_is_idempotent_and_listed() {
    let t = spawn().await;
    let client = t.client();

    let first = client.add_agent(&t.firm, &kari()).await.unwrap();
    let again = client.add_agent(&t.firm, &kari()).await.unwrap();
    let agents = client.agents(&t.firm).await.unwrap();

    assert_eq!(first.to_id, t.person);
    assert_eq!(first.from_id, t.firm.party);
    assert_eq!(
        again.id, first.id,
        "an existing agent assignment comes back as it is"
    );
    let ids: Vec<_> = agents.iter().map(|a| a.agent.id).collect();
    assert_eq!(ids, vec![t.person]);
    assert_eq!(agents[0].agent.person_identifier.as_deref(), Some(NIN));
}

#[tokio::test]
async fn delegate_and_revoke_report_changed_only_the_first_time() {
    let t = spawn().await;
    let client = t.client();
    let agent = client.add_agent(&t.firm, &kari()).await.unwrap().to_id;
    let batch = DelegationBatch::for_role(REGN, [LONN, UTEN_SIGN]);

    let added = client
        .delegate(&t.firm, t.client, agent, &batch)
        .await
        .unwrap();
    let added_again = client
        .delegate(&t.firm, t.client, agent, &batch)
        .await
        .unwrap();
    let held = client.agent_packages(&t.firm, agent).await.unwrap();
    let in_altinn = t.sim.delegations().await;

    assert_eq!(
        added.iter().map(|d| d.changed).collect::<Vec<_>>(),
        [true, true]
    );
    assert_eq!(
        added_again.iter().map(|d| d.changed).collect::<Vec<_>>(),
        [false, false]
    );
    assert!(
        added
            .iter()
            .all(|d| d.from_id == t.client && d.to_id == agent && d.via_id == t.firm.party)
    );
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].client.id, t.client);
    assert_eq!(held[0].access[0].packages.len(), 2);
    assert_eq!(in_altinn.len(), 1);
    assert_eq!(
        in_altinn[0].packages,
        vec![LONN.to_owned(), UTEN_SIGN.to_owned()]
    );

    let lonn_only = DelegationBatch::for_role(REGN, [LONN]);
    let revoked = client
        .revoke(&t.firm, t.client, agent, &lonn_only)
        .await
        .unwrap();
    let revoked_again = client
        .revoke(&t.firm, t.client, agent, &lonn_only)
        .await
        .unwrap();

    assert!(revoked[0].changed);
    assert!(
        !revoked_again[0].changed,
        "an absent package is revoked with changed=false"
    );
    assert_eq!(
        t.sim.delegations().await[0].packages,
        vec![UTEN_SIGN.to_owned()]
    );

    client
        .revoke(&t.firm, t.client, agent, &batch)
        .await
        .unwrap();
    assert!(
        t.sim.delegations().await.is_empty(),
        "the delegation goes with its last package"
    );
    assert!(
        client
            .agent_packages(&t.firm, agent)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn debug_output_shows_neither_key_nor_token() {
    let t = spawn().await;
    let client = t.client();
    client.firm_party(&t.firm.org_number).await.unwrap();
    let token = client.tokens().token(&t.firm.org_number).await.unwrap();

    let shown = format!("{client:?} {token:?} {:?}", kari());

    assert!(!shown.contains(token.expose().as_str()), "{shown}");
    assert!(
        !shown.contains("PRIVATE KEY") && !shown.contains(NIN),
        "{shown}"
    );
    assert!(shown.contains("<redacted>"));
}

#[tokio::test]
async fn lists_are_read_to_their_last_page() {
    let t = spawn().await;
    let mut world = crate::helpers::world(t.firm.party, t.client, t.stranger, t.person);
    let registered = world.clients[0].clone();
    for n in 0..4 {
        let mut client = registered.clone();
        client.party_uuid = uuid::Uuid::new_v4();
        client.org_number = format!("91000010{n}");
        world.clients.push(client);
    }
    t.sim.load(world).await;
    t.sim
        .set_faults(altinn_sync::sim::Faults {
            page_size: 2,
            ..Default::default()
        })
        .await;

    let clients = t.client().clients(&t.firm).await.unwrap();

    assert_eq!(clients.len(), 5, "every page was read: {clients:?}");
    assert_eq!(
        t.calls("GET", altinn_sync::altinn::paths::CLIENTS_PATH),
        3,
        "five clients in pages of two"
    );
}
