//! Every kind of poison message goes to the dead-letter queue, with its reason, while the good
//! messages around it in the same batch are applied.

use serde_json::json;

use crate::common::TestApp;
use crate::common::workload::{FirmEvents, Person, org_number};

#[tokio::test]
async fn each_poison_kind_is_dead_lettered_and_good_messages_around_it_are_applied() {
    let mut app = TestApp::without_worker().await;
    // A real refusal by PostgreSQL for a message the decoder accepts.
    sqlx::query("ALTER TABLE clients ADD CONSTRAINT test_refuses CHECK (name <> 'Refuse Me AS')")
        .execute(&app.pool)
        .await
        .unwrap();
    let mut firm = FirmEvents::new(org_number(20));
    let kari = Person::new(1);
    let good_client = org_number(2000);
    let other_client = org_number(2001);

    let mut bad_checksum = firm.client_assigned(&kari, &good_client);
    bad_checksum["data"]["client"]["org_number"] = json!("912345611");
    let mut bad_schema = firm.client_assigned(&kari, &good_client);
    bad_schema["data"]["employee"]["last_name"] = json!("Nord\u{0}mann");
    let mut unknown = firm.client_assigned(&kari, &good_client);
    unknown["event_type"] = json!("ClientArchived");
    let mismatched = firm.client_assigned(&kari, &good_client);
    let mut too_large = firm.client_assigned(&kari, &good_client);
    too_large["padding"] = json!("x".repeat(300 * 1024));
    let mut refused = firm.client_assigned(&kari, &other_client);
    refused["data"]["client"]["name"] = json!("Refuse Me AS");

    // All in one queue so that the worker takes them in one batch.
    app.publish_event(&firm.role_changed(&kari, &["PayrollAccountant"]))
        .await;
    app.publish_raw(
        &app.topology.events_exchange.clone(),
        "ClientAssigned",
        b"{not json",
        None,
    )
    .await;
    app.publish_event(&bad_checksum).await;
    app.publish_event(&bad_schema).await;
    app.publish_as("ClientAssigned", &unknown).await;
    app.publish_as("ClientRemoved", &mismatched).await;
    app.publish_event(&too_large).await;
    app.publish_event(&refused).await;
    app.publish_event(&firm.client_assigned(&kari, &good_client))
        .await;
    app.start_worker().await;
    app.barrier().await;

    assert_eq!(
        app.desired(&firm.org).await,
        vec![(kari.id, good_client, "regnskapsforer-lonn".to_owned())],
        "the good messages are applied"
    );
    let mut codes: Vec<String> = app
        .drain_dead_letters(7)
        .await
        .into_iter()
        .map(|d| d.0)
        .collect();
    codes.sort();
    let mut want = vec![
        "checksum",
        "database-refused",
        "not-json",
        "routing-key-mismatch",
        "schema",
        "too-large",
        "unknown-type",
    ];
    want.sort();
    assert_eq!(codes, want);
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT reason_code, reason FROM dead_letters ORDER BY reason_code")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), want);
    for (code, reason) in &rows {
        assert!(!reason.is_empty(), "{code} has a reason");
        assert!(
            !reason.contains(&kari.nin),
            "{code}: a reason never carries the identity number"
        );
    }
    app.teardown().await;
}

#[tokio::test]
async fn a_mistyped_identity_number_is_not_echoed_in_the_reason() {
    let mut app = TestApp::spawn().await;
    let mut firm = FirmEvents::new(org_number(21));
    let kari = Person::new(1);
    let mut event = firm.client_assigned(&kari, &org_number(2100));
    let as_number: u64 = kari.nin.parse().unwrap();
    event["data"]["employee"]["national_identity_number"] = json!(as_number);
    app.publish_event(&event).await;
    app.barrier().await;
    let reason: String = sqlx::query_scalar("SELECT reason FROM dead_letters")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(reason.contains("<redacted>"), "{reason}");
    assert!(!reason.contains(&kari.nin[..6]), "{reason}");
    app.teardown().await;
}

#[tokio::test]
async fn identity_numbers_never_reach_the_logs() {
    let mut logs = crate::common::logs::subscribe();
    let mut app = TestApp::spawn().await;
    let mut firm = FirmEvents::new(org_number(22));
    let kari = Person::new(7);
    let client = org_number(2200);
    app.publish_event(&firm.role_changed(&kari, &["PayrollAccountant"]))
        .await;
    app.publish_event(&firm.client_assigned(&kari, &client))
        .await;
    // Poison that carries the number in every shape the decoder may complain about.
    let mut wrong_type = firm.client_assigned(&kari, &client);
    wrong_type["data"]["employee"]["national_identity_number"] =
        json!(kari.nin.parse::<u64>().unwrap());
    app.publish_event(&wrong_type).await;
    let mut bad_check = firm.client_assigned(&kari, &client);
    let mut digits = kari.nin.clone().into_bytes();
    digits[10] = if digits[10] == b'9' {
        b'0'
    } else {
        digits[10] + 1
    };
    bad_check["data"]["employee"]["national_identity_number"] =
        json!(String::from_utf8(digits.clone()).unwrap());
    app.publish_event(&bad_check).await;
    app.barrier().await;
    app.drain_dead_letters(2).await;
    app.teardown().await;

    let mut lines = 0;
    loop {
        let line = match logs.try_recv() {
            Ok(line) => line,
            Err(tokio::sync::broadcast::error::TryRecvError::Empty) => break,
            Err(e) => panic!("not every log line could be checked: {e}"),
        };
        lines += 1;
        assert!(
            !line.contains(&kari.nin),
            "a log line carries the number: {line}"
        );
        assert!(
            !line.contains(std::str::from_utf8(&digits).unwrap()),
            "a log line carries the mistyped number: {line}"
        );
    }
    assert!(lines > 0, "the worker logged something while this ran");
}
