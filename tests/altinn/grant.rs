//! The simulator verifies the Maskinporten grant the client signs, as Maskinporten does.

use altinn_sync::altinn::maskinporten::{GrantClaims, SigningKey};
use chrono::Utc;
use serde_json::Value;

use crate::helpers::{ALL_SCOPES, FIRM_ORG, KEY_A, KEY_B, TestSim, spawn};

fn claims(t: &TestSim) -> GrantClaims {
    GrantClaims::new(
        &t.config("test-client", "kid-a", ALL_SCOPES),
        FIRM_ORG,
        Utc::now(),
    )
}

async fn post_grant(t: &TestSim, claims: &GrantClaims, pem: &str) -> (u16, Value) {
    let key = SigningKey::from_pem("kid-a", pem.as_bytes()).unwrap();
    let assertion = claims.sign(&key).unwrap();
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
        ("assertion", assertion.expose().as_str()),
    ];
    let response = reqwest::Client::new()
        .post(t.url("/token"))
        .form(&form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn a_valid_grant_gets_a_token_and_a_reused_jti_is_rejected() {
    let t = spawn().await;
    let grant = claims(&t);

    let (first, body) = post_grant(&t, &grant, KEY_A).await;
    let (again, error) = post_grant(&t, &grant, KEY_A).await;

    assert_eq!(first, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], ALL_SCOPES);
    assert_eq!(again, 400);
    assert_eq!(error["error"], "invalid_grant");
    assert!(
        error["error_description"].as_str().unwrap().contains("jti"),
        "{error}"
    );
}

#[tokio::test]
async fn grants_maskinporten_would_refuse_are_refused() {
    let t = spawn().await;
    let mut too_long = claims(&t);
    too_long.exp = too_long.iat + 121;
    let mut expired = claims(&t);
    (expired.iat, expired.exp) = (expired.iat - 200, expired.iat - 100);
    let mut wrong_aud = claims(&t);
    wrong_aud.aud = "https://test.maskinporten.no/".into();
    let mut no_system_user = claims(&t);
    no_system_user.authorization_details.clear();
    let mut other_scope = claims(&t);
    other_scope.scope = "altinn:instances.read".into();

    let cases = [
        (
            "exp more than 120 s after iat",
            too_long,
            KEY_A,
            "invalid_grant",
        ),
        ("expired", expired, KEY_A, "invalid_grant"),
        ("aud is not the issuer", wrong_aud, KEY_A, "invalid_grant"),
        (
            "no authorization_details",
            no_system_user,
            KEY_A,
            "invalid_request",
        ),
        ("scope not granted", other_scope, KEY_A, "invalid_scope"),
        (
            "signed with another key than kid-a",
            claims(&t),
            KEY_B,
            "invalid_grant",
        ),
    ];
    for (case, grant, key, expected) in cases {
        let (status, body) = post_grant(&t, &grant, key).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some(expected)),
            "{case}: {body}"
        );
    }
}

#[test]
fn the_grant_carries_what_maskinporten_requires() {
    let config = altinn_sync::altinn::ValidatedAltinnConfig {
        altinn_base_url: "https://platform.tt02.altinn.no".into(),
        maskinporten_url: "https://test.maskinporten.no/".into(),
        client_id: "client-id".into(),
        kid: "kid-a".into(),
        key_file: "unused".into(),
        scopes: ALL_SCOPES.into(),
        request_timeout: std::time::Duration::from_secs(1),
        external_ref: None,
    };
    let a = GrantClaims::new(&config, FIRM_ORG, Utc::now());
    let b = GrantClaims::new(&config, FIRM_ORG, Utc::now());
    let json = serde_json::to_value(&a).unwrap();

    assert_eq!(json["aud"], "https://test.maskinporten.no/");
    assert_eq!(json["iss"], "client-id");
    assert_eq!(json["scope"], ALL_SCOPES);
    assert!(a.exp - a.iat <= 120);
    assert_ne!(a.jti, b.jti);
    let detail = &json["authorization_details"][0];
    assert_eq!(detail["type"], "urn:altinn:systemuser");
    assert_eq!(
        detail["systemuser_org"]["authority"],
        "iso6523-actorid-upis"
    );
    assert_eq!(detail["systemuser_org"]["ID"], format!("0192:{FIRM_ORG}"));
    assert!(
        detail.get("externalRef").is_none(),
        "no externalRef unless configured"
    );
    let with_ref = altinn_sync::altinn::ValidatedAltinnConfig {
        external_ref: Some("adminflow-{org}".into()),
        ..config.clone()
    };
    let c = serde_json::to_value(GrantClaims::new(&with_ref, FIRM_ORG, Utc::now())).unwrap();
    assert_eq!(
        c["authorization_details"][0]["externalRef"],
        format!("adminflow-{FIRM_ORG}"),
        "the firm's own reference"
    );
    let header = jsonwebtoken::decode_header(
        a.sign(&SigningKey::from_pem("kid-a", KEY_A.as_bytes()).unwrap())
            .unwrap()
            .expose(),
    )
    .unwrap();
    assert_eq!(
        (header.alg, header.kid.as_deref()),
        (jsonwebtoken::Algorithm::RS256, Some("kid-a"))
    );
}
