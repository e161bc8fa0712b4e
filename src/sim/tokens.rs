//! Maskinporten's token endpoint, Altinn's token exchange, and the bearer check on the API.
//!
//! The grant is verified as Maskinporten does: RS256 signature by the registered `kid`, `aud`
//! equal to the issuer, `iss` equal to the client id, `exp` at most 120 s after `iat` and not
//! past, no reused `jti`, no unknown claims, allowed scopes, and `authorization_details` naming
//! a firm that approved the system user. Issued tokens are HS256 JWTs signed by the simulator.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Error;
use super::simulator::Simulator;
use super::world::MaskinportenClient;
use crate::altinn::error::CUSTOMER_CONFIGURATION_ERROR;
use crate::altinn::maskinporten::{GrantClaims, ORG_AUTHORITY, SYSTEM_USER_TYPE};
use crate::altinn::wire::MaskinportenToken;

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const GRANT_CLAIMS: &[&str] = &[
    "aud",
    "iss",
    "iat",
    "exp",
    "jti",
    "scope",
    "resource",
    "authorization_details",
];
const MAX_GRANT_LIFETIME: i64 = 120;
const CLOCK_SKEW: i64 = 10;
const MASKINPORTEN_TOKEN_LIFETIME: i64 = 120;
const ALTINN_TOKEN_LIFETIME: u64 = 30 * 60;

/// Claims of the tokens the simulator issues, Maskinporten's and Altinn's alike.
#[derive(Debug, Serialize, Deserialize)]
struct IssuedClaims {
    iss: String,
    exp: i64,
    iat: i64,
    scope: String,
    /// The firm whose system user the token acts for.
    org: String,
    /// [`super::world::State::token_generation`] when issued.
    generation: u64,
}

/// Who called the API, once the bearer token checked out.
pub struct Caller {
    pub org_number: String,
    pub firm_party: Uuid,
}

fn invalid(error: &'static str, description: impl Into<String>) -> Error {
    Error::OAuth {
        error,
        description: description.into(),
    }
}

/// `POST /token`: a JWT grant checked step by step as Maskinporten does, then a token.
pub async fn maskinporten_token(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Json<MaskinportenToken>, Error> {
    let (assertion, kid) = assertion(&form)?;
    // Held to the end: the `jti` check and its insert must be one step.
    let mut state = sim.inner.state.lock().await;
    let client = state
        .world
        .maskinporten_clients
        .iter()
        .find(|c| c.kid == kid)
        .cloned()
        .ok_or_else(|| invalid("invalid_client", format!("unknown kid {kid}")))?;
    let issuer = issuer(&state, &headers);
    let grant = decode_grant(assertion, &client, &issuer)?;
    let now = Utc::now().timestamp();
    check_lifetime(&grant, now)?;
    use_jti(&mut state, &grant, now)?;
    check_scopes(&grant, &client)?;
    let org = approved_system_user(&state, &grant)?;
    let claims = IssuedClaims {
        iss: issuer,
        exp: now + MASKINPORTEN_TOKEN_LIFETIME,
        iat: now,
        scope: grant.scope.clone(),
        org,
        generation: state.token_generation,
    };
    let access_token = sign(&claims, &sim.inner.maskinporten_secret)?;
    Ok(Json(MaskinportenToken {
        access_token,
        token_type: "Bearer".into(),
        expires_in: MASKINPORTEN_TOKEN_LIFETIME as u64,
        scope: Some(grant.scope),
    }))
}

/// The form's assertion and the `kid` in its header, once grant type and `alg` are right.
fn assertion(form: &HashMap<String, String>) -> Result<(&str, String), Error> {
    if form.get("grant_type").map(String::as_str) != Some(JWT_BEARER) {
        return Err(invalid(
            "unsupported_grant_type",
            "grant_type must be jwt-bearer",
        ));
    }
    let assertion = form
        .get("assertion")
        .ok_or_else(|| invalid("invalid_request", "no assertion"))?;
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|e| invalid("invalid_grant", format!("Invalid assertion: {e}")))?;
    if header.alg != Algorithm::RS256 {
        return Err(invalid(
            "invalid_grant",
            "Invalid assertion: alg must be RS256",
        ));
    }
    let kid = header
        .kid
        .ok_or_else(|| invalid("invalid_grant", "Invalid assertion: no kid"))?;
    Ok((assertion, kid))
}

/// The `aud` a grant must name: the world's issuer, or this host as the client reached it.
fn issuer(state: &super::world::State, headers: &HeaderMap) -> String {
    state.world.maskinporten_issuer.clone().unwrap_or_else(|| {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        format!("http://{host}/")
    })
}

/// The grant's claims, signed by the client's key for `issuer`, with no claim Maskinporten
/// does not know.
fn decode_grant(
    assertion: &str,
    client: &MaskinportenClient,
    issuer: &str,
) -> Result<GrantClaims, Error> {
    let kid = &client.kid;
    let key = DecodingKey::from_rsa_pem(client.public_key_pem.as_bytes())
        .map_err(|e| Error::BadRequest(format!("bad public key for kid {kid}: {e}")))?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.leeway = CLOCK_SKEW as u64;
    validation.set_audience(&[issuer]);
    validation.set_issuer(&[&client.client_id]);
    validation.set_required_spec_claims(&["exp", "aud", "iss"]);
    let raw = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
        assertion,
        &key,
        &validation,
    )
    .map_err(|e| invalid("invalid_grant", format!("Invalid assertion: {e}")))?
    .claims;
    if let Some(unknown) = raw.keys().find(|k| !GRANT_CLAIMS.contains(&k.as_str())) {
        return Err(invalid(
            "invalid_grant",
            format!("Invalid assertion: unknown claim {unknown}"),
        ));
    }
    serde_json::from_value(serde_json::Value::Object(raw))
        .map_err(|e| invalid("invalid_grant", format!("Invalid assertion: {e}")))
}

/// `exp` at most 120 s after `iat`, and `iat` not ahead of our clock by more than the skew.
fn check_lifetime(grant: &GrantClaims, now: i64) -> Result<(), Error> {
    if grant.exp - grant.iat > MAX_GRANT_LIFETIME || grant.exp <= grant.iat {
        return Err(invalid(
            "invalid_grant",
            "Invalid assertion: exp must be at most 120 s after iat",
        ));
    }
    if grant.iat > now + CLOCK_SKEW {
        return Err(invalid(
            "invalid_grant",
            "Invalid assertion: iat is in the future",
        ));
    }
    Ok(())
}

/// Remembers the grant's `jti`, refusing one seen before; a `jti` is forgotten once the grant
/// it came with has expired, since that grant is refused anyway.
fn use_jti(state: &mut super::world::State, grant: &GrantClaims, now: i64) -> Result<(), Error> {
    state.used_jtis.retain(|_, exp| *exp + CLOCK_SKEW >= now);
    if state
        .used_jtis
        .insert(grant.jti.clone(), grant.exp)
        .is_some()
    {
        return Err(invalid(
            "invalid_grant",
            "Invalid assertion: jti has been used before",
        ));
    }
    Ok(())
}

fn check_scopes(grant: &GrantClaims, client: &MaskinportenClient) -> Result<(), Error> {
    match grant
        .scope
        .split(' ')
        .find(|s| !client.scopes.iter().any(|a| a == s))
    {
        Some(scope) => Err(invalid(
            "invalid_scope",
            format!("scope {scope} is not allowed for this client"),
        )),
        None => Ok(()),
    }
}

/// The org number of the system user the grant asks for, if that firm approved it.
fn approved_system_user(state: &super::world::State, grant: &GrantClaims) -> Result<String, Error> {
    let org = system_user_org(grant)?;
    match state.firm(&org) {
        Some(firm) if firm.system_user_approved => Ok(org),
        _ => {
            let description = format!("no approved system user for 0192:{org}");
            Err(invalid(CUSTOMER_CONFIGURATION_ERROR, description))
        }
    }
}

fn system_user_org(grant: &GrantClaims) -> Result<String, Error> {
    let [detail] = grant.authorization_details.as_slice() else {
        return Err(invalid(
            "invalid_request",
            "authorization_details must name one system user org",
        ));
    };
    let org = detail.systemuser_org.id.strip_prefix("0192:");
    match org {
        Some(org)
            if detail.detail_type == SYSTEM_USER_TYPE
                && detail.systemuser_org.authority == ORG_AUTHORITY =>
        {
            Ok(org.to_owned())
        }
        _ => Err(invalid(
            "invalid_request",
            "authorization_details is not a urn:altinn:systemuser for 0192:<orgno>",
        )),
    }
}

/// `GET /authentication/api/v1/exchange/{tokenProvider}`: 200 with the Altinn JWT as text.
pub async fn exchange(
    State(sim): State<Simulator>,
    Path(provider): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    if provider != "maskinporten" {
        return Err(Error::BadRequest(format!(
            "unknown token provider {provider}"
        )));
    }
    let state = sim.inner.state.lock().await;
    let mp = verify(
        &headers,
        &sim.inner.maskinporten_secret,
        state.token_generation,
    )?;
    let now = Utc::now().timestamp();
    let lifetime = state
        .world
        .altinn_token_lifetime_secs
        .unwrap_or(ALTINN_TOKEN_LIFETIME);
    let claims = IssuedClaims {
        iss: "altinn-sim".into(),
        exp: now.saturating_add(i64::try_from(lifetime).unwrap_or(i64::MAX)),
        iat: now,
        scope: mp.scope,
        org: mp.org,
        generation: state.token_generation,
    };
    let token = sign(&claims, &sim.inner.altinn_secret)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], token).into_response())
}

/// Checks the Altinn bearer token: 401 if missing, invalid, expired or revoked; 403 if it lacks
/// `scope` (or the faults withhold it), names no known firm, or `party` is not that firm.
pub fn authorize(
    sim: &Simulator,
    state: &super::world::State,
    headers: &HeaderMap,
    scope: &str,
    party: Option<Uuid>,
) -> Result<Caller, Error> {
    let claims = verify(headers, &sim.inner.altinn_secret, state.token_generation)?;
    if !claims.scope.split(' ').any(|s| s == scope)
        || state.faults.missing_scope.as_deref() == Some(scope)
    {
        return Err(Error::Forbidden("the token lacks the scope"));
    }
    let firm = state
        .firm(&claims.org)
        .ok_or(Error::Forbidden("unknown firm"))?;
    if party.is_some_and(|p| p != firm.party_uuid) {
        return Err(Error::Forbidden("party is not the system user's firm"));
    }
    Ok(Caller {
        org_number: firm.org_number.clone(),
        firm_party: firm.party_uuid,
    })
}

fn verify(headers: &HeaderMap, secret: &[u8], generation: u64) -> Result<IssuedClaims, Error> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or(Error::Unauthorized)?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.validate_aud = false;
    let key = DecodingKey::from_secret(secret).map_err(|_| Error::Unauthorized)?;
    let claims = jsonwebtoken::decode::<IssuedClaims>(token, &key, &validation)
        .map_err(|_| Error::Unauthorized)?
        .claims;
    if claims.generation != generation {
        return Err(Error::Unauthorized);
    }
    Ok(claims)
}

fn sign(claims: &IssuedClaims, secret: &[u8]) -> Result<String, Error> {
    EncodingKey::from_secret(secret)
        .and_then(|key| jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key))
        .map_err(|e| Error::BadRequest(format!("failed to sign a token: {e}")))
}

/// For the admin endpoint: 401 for every token issued so far.
pub fn revoke_all(state: &mut super::world::State) -> StatusCode {
    state.token_generation += 1;
    StatusCode::NO_CONTENT
}
