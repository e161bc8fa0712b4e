//! System-user authentication: a signed Maskinporten JWT grant, exchanged for an Altinn token.
//!
//! # Guarantees
//! - Each grant has a fresh `jti` and lives at most [`GRANT_LIFETIME`].
//! - The Altinn token is cached per firm until [`REFRESH_MARGIN`] before it expires.
//! - Neither the key nor any token appears in `Debug` output: both are wrapped in [`Secret`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::config::ValidatedAltinnConfig;
use super::error::{Error, Result, classify, classify_maskinporten};
use super::http;
use super::paths;
use super::wire::MaskinportenToken;

/// Maskinporten accepts grants whose `exp` is at most 120 s after `iat`; stay well inside.
pub const GRANT_LIFETIME: Duration = Duration::from_secs(100);
/// Refresh this long before the Altinn token expires, so no call races the expiry.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Used when the exchanged token carries no readable `exp`.
const FALLBACK_LIFETIME: Duration = Duration::from_secs(300);

pub const SYSTEM_USER_TYPE: &str = "urn:altinn:systemuser";
pub const ORG_AUTHORITY: &str = "iso6523-actorid-upis";

/// A value that must never be logged.
#[derive(Clone)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// `authorization_details` entry naming the firm whose system user acts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationDetail {
    #[serde(rename = "type")]
    pub detail_type: String,
    pub systemuser_org: SystemUserOrg,
    /// The system user's external reference, when it was requested with one.
    #[serde(
        rename = "externalRef",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub external_ref: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemUserOrg {
    pub authority: String,
    #[serde(rename = "ID")]
    pub id: String,
}

impl AuthorizationDetail {
    /// `external_ref` may hold `{org}`, replaced by the firm's organisation number: Altinn keeps
    /// one system user, and so one reference, per firm.
    pub fn system_user(org_number: &str, external_ref: Option<&str>) -> Self {
        Self {
            detail_type: SYSTEM_USER_TYPE.to_owned(),
            systemuser_org: SystemUserOrg {
                authority: ORG_AUTHORITY.to_owned(),
                id: format!("0192:{org_number}"),
            },
            external_ref: external_ref.map(|r| r.replace("{org}", org_number)),
        }
    }
}

/// The claims of a Maskinporten JWT grant. No other claims: Maskinporten rejects unknown ones.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrantClaims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    pub scope: String,
    pub authorization_details: Vec<AuthorizationDetail>,
}

impl GrantClaims {
    pub fn new(config: &ValidatedAltinnConfig, org_number: &str, now: DateTime<Utc>) -> Self {
        Self {
            aud: config.maskinporten_url.clone(),
            iss: config.client_id.clone(),
            iat: now.timestamp(),
            exp: now.timestamp() + GRANT_LIFETIME.as_secs().cast_signed(),
            jti: uuid::Uuid::new_v4().to_string(),
            scope: config.scopes.clone(),
            authorization_details: vec![AuthorizationDetail::system_user(
                org_number,
                config.external_ref.as_deref(),
            )],
        }
    }

    /// RS256 with the `kid` header.
    pub fn sign(&self, key: &SigningKey) -> Result<Secret<String>> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, self, key.key.expose())
            .map(Secret)
            .map_err(Error::Sign)
    }
}

/// The Maskinporten private key with its `kid`.
#[derive(Clone, Debug)]
pub struct SigningKey {
    kid: String,
    key: Secret<EncodingKey>,
}

impl SigningKey {
    pub fn from_pem(kid: &str, pem: &[u8]) -> Result<Self> {
        let key = EncodingKey::from_rsa_pem(pem).map_err(Error::Sign)?;
        Ok(Self {
            kid: kid.to_owned(),
            key: Secret(key),
        })
    }

    pub fn from_file(config: &ValidatedAltinnConfig) -> Result<Self> {
        let pem = std::fs::read(&config.key_file).map_err(|source| Error::ReadKey {
            path: config.key_file.clone(),
            source,
        })?;
        Self::from_pem(&config.kid, &pem)
    }
}

#[derive(Clone, Debug)]
struct CachedToken {
    token: Secret<String>,
    refresh_at: DateTime<Utc>,
}

/// Gets and caches Altinn tokens per firm.
#[derive(Debug)]
pub struct TokenSource {
    http: reqwest::Client,
    config: ValidatedAltinnConfig,
    key: SigningKey,
    /// One async lock per firm, so concurrent calls for a firm share one refresh instead of
    /// each signing a grant; other firms are not held up.
    cache: StdMutex<HashMap<String, Arc<Mutex<Option<CachedToken>>>>>,
}

impl TokenSource {
    pub fn new(http: reqwest::Client, config: ValidatedAltinnConfig, key: SigningKey) -> Self {
        Self {
            http,
            config,
            key,
            cache: StdMutex::default(),
        }
    }

    fn slot(&self, org_number: &str) -> Arc<Mutex<Option<CachedToken>>> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.entry(org_number.to_owned()).or_default().clone()
    }

    /// A valid Altinn token for the firm's system user, from the cache when fresh.
    pub async fn token(&self, org_number: &str) -> Result<Secret<String>> {
        let slot = self.slot(org_number);
        let mut cached = slot.lock().await;
        if let Some(c) = cached.as_ref()
            && Utc::now() < c.refresh_at
        {
            return Ok(c.token.clone());
        }
        let fresh = self.fetch(org_number).await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// Forgets the firm's token after Altinn answered 401 with it.
    pub async fn invalidate(&self, org_number: &str) {
        *self.slot(org_number).lock().await = None;
    }

    /// A Maskinporten token for the firm's system user, uncached (for `doctor`).
    pub async fn maskinporten_for(&self, org_number: &str) -> Result<Secret<String>> {
        let grant = GrantClaims::new(&self.config, org_number, Utc::now()).sign(&self.key)?;
        self.maskinporten_token(&grant).await
    }

    async fn fetch(&self, org_number: &str) -> Result<CachedToken> {
        let grant = GrantClaims::new(&self.config, org_number, Utc::now()).sign(&self.key)?;
        let mp = self.maskinporten_token(&grant).await?;
        let altinn = self.exchange(&mp).await?;
        let expires_at =
            token_expiry(altinn.expose()).unwrap_or_else(|| Utc::now() + FALLBACK_LIFETIME);
        let refresh_at = expires_at - REFRESH_MARGIN;
        tracing::debug!(firm = org_number, %expires_at, "got an Altinn token");
        Ok(CachedToken {
            token: altinn,
            refresh_at,
        })
    }

    /// POSTs the grant to `{MASKINPORTEN_URL}token`.
    pub async fn maskinporten_token(&self, grant: &Secret<String>) -> Result<Secret<String>> {
        let url = format!("{}token", self.config.maskinporten_url);
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", grant.expose().as_str()),
        ];
        let request = self.http.post(url).form(&form);
        let answer = http::send(paths::MASKINPORTEN_TOKEN, None, request).await?;
        classify_maskinporten(answer.status, &answer.headers, &answer.body)?;
        let token: MaskinportenToken =
            serde_json::from_slice(&answer.body).map_err(|source| Error::Decode {
                operation: "maskinporten token",
                source,
            })?;
        Ok(Secret(token.access_token))
    }

    /// Exchanges a Maskinporten token for an Altinn token.
    pub async fn exchange(&self, mp: &Secret<String>) -> Result<Secret<String>> {
        let url = format!("{}{}", self.config.altinn_base_url, paths::EXCHANGE_PATH);
        let request = self.http.get(url).bearer_auth(mp.expose());
        let answer = http::send(paths::TOKEN_EXCHANGE, None, request).await?;
        match classify(answer.status, &answer.headers, &answer.body) {
            // A 401 here means Maskinporten's token was refused, not ours: no refresh helps.
            Err(Error::Token) => {
                return Err(Error::FirmLevel {
                    reason: "Altinn refused to exchange the Maskinporten token".into(),
                });
            }
            other => other?,
        }
        let text = String::from_utf8_lossy(&answer.body);
        // Some clients get the token JSON-quoted.
        Ok(Secret(text.trim().trim_matches('"').to_owned()))
    }
}

/// The `exp` of a JWT, read without verifying it: we only use it to plan the refresh.
fn token_expiry(token: &str) -> Option<DateTime<Utc>> {
    #[derive(Deserialize)]
    struct Exp {
        exp: i64,
    }
    let data = jsonwebtoken::dangerous::insecure_decode::<Exp>(token).ok()?;
    DateTime::from_timestamp(data.claims.exp, 0)
}
