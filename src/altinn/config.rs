//! Altinn and Maskinporten settings. All optional, so `altinn-sync run` can ingest without them.

use std::path::PathBuf;
use std::time::Duration;

use super::error::{Error, Result};

#[derive(Debug, Clone, Default, clap::Args)]
pub struct AltinnSettings {
    /// Altinn platform host, e.g. https://platform.tt02.altinn.no.
    #[arg(long, env = "ALTINN_BASE_URL")]
    pub altinn_base_url: Option<String>,
    /// Maskinporten issuer, e.g. https://test.maskinporten.no/ (the grant's `aud`, verbatim;
    /// the token endpoint is this value followed by `token`).
    #[arg(long, env = "MASKINPORTEN_URL")]
    pub maskinporten_url: Option<String>,
    /// The Maskinporten client id (the grant's `iss`).
    #[arg(long, env = "MASKINPORTEN_CLIENT_ID")]
    pub maskinporten_client_id: Option<String>,
    /// Key id of the registered public key (the grant's `kid` header).
    #[arg(long, env = "MASKINPORTEN_KID")]
    pub maskinporten_kid: Option<String>,
    /// PEM file with the RSA private key that signs the grant.
    #[arg(long, env = "MASKINPORTEN_KEY_FILE")]
    pub maskinporten_key_file: Option<PathBuf>,
    /// Space-separated scopes, sent verbatim.
    #[arg(long, env = "MASKINPORTEN_SCOPES")]
    pub maskinporten_scopes: Option<String>,
    /// Timeout for each call to Altinn or Maskinporten.
    #[arg(long, env = "ALTINN_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub altinn_request_timeout_ms: u64,
    /// The system users' external reference, if they were requested with one (`{org}` becomes
    /// the firm's organisation number). Optional.
    #[arg(long, env = "MASKINPORTEN_SYSTEMUSER_EXTERNAL_REF")]
    pub maskinporten_systemuser_external_ref: Option<String>,
}

/// Settings with everything needed to talk to Altinn.
#[derive(Debug, Clone)]
pub struct ValidatedAltinnConfig {
    /// Without a trailing slash.
    pub altinn_base_url: String,
    pub maskinporten_url: String,
    pub client_id: String,
    pub kid: String,
    pub key_file: PathBuf,
    pub scopes: String,
    pub request_timeout: Duration,
    pub external_ref: Option<String>,
}

/// What the worker asks Maskinporten for: reading the firm's party, and reading and changing
/// its client delegations (Altinn matches each scope exactly).
pub const REQUIRED_SCOPES: [&str; 3] = [
    "altinn:accessmanagement/authorizedparties",
    "altinn:clientdelegations.read",
    "altinn:clientdelegations.write",
];

impl AltinnSettings {
    /// Whether the Altinn settings are given at all (the worker then flushes to Altinn).
    pub fn is_configured(&self) -> bool {
        self.altinn_base_url
            .as_deref()
            .is_some_and(|s| !s.trim().is_empty())
    }

    /// `Ok(None)` when no Altinn setting is given; an error naming the missing ones when only
    /// some are.
    pub fn validate(&self) -> Result<Option<ValidatedAltinnConfig>> {
        let fields = self.presence();
        let missing: Vec<&str> = fields.iter().filter(|(_, p)| !p).map(|(n, _)| *n).collect();
        if missing.len() == fields.len() {
            return Ok(None);
        }
        if !missing.is_empty() {
            return Err(Error::Config(format!(
                "some Altinn settings are given but these are missing: {}",
                missing.join(", ")
            )));
        }
        let maskinporten_url = self.maskinporten_url.clone().unwrap_or_default();
        check_issuer(&maskinporten_url)?;
        check_scopes(self.maskinporten_scopes.as_deref().unwrap_or_default())?;
        if self.altinn_request_timeout_ms == 0 {
            return Err(Error::Config(
                "ALTINN_REQUEST_TIMEOUT_MS must be above 0".into(),
            ));
        }
        Ok(Some(ValidatedAltinnConfig {
            altinn_base_url: self
                .altinn_base_url
                .as_deref()
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_owned(),
            maskinporten_url,
            client_id: self.maskinporten_client_id.clone().unwrap_or_default(),
            kid: self.maskinporten_kid.clone().unwrap_or_default(),
            key_file: self.maskinporten_key_file.clone().unwrap_or_default(),
            scopes: self.maskinporten_scopes.clone().unwrap_or_default(),
            request_timeout: Duration::from_millis(self.altinn_request_timeout_ms),
            external_ref: self
                .maskinporten_systemuser_external_ref
                .clone()
                .filter(|r| !r.trim().is_empty()),
        }))
    }

    /// Each setting `validate` requires, by its variable's name, and whether it is given.
    fn presence(&self) -> [(&'static str, bool); 6] {
        let present = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
        [
            ("ALTINN_BASE_URL", present(&self.altinn_base_url)),
            ("MASKINPORTEN_URL", present(&self.maskinporten_url)),
            (
                "MASKINPORTEN_CLIENT_ID",
                present(&self.maskinporten_client_id),
            ),
            ("MASKINPORTEN_KID", present(&self.maskinporten_kid)),
            (
                "MASKINPORTEN_KEY_FILE",
                self.maskinporten_key_file.is_some(),
            ),
            ("MASKINPORTEN_SCOPES", present(&self.maskinporten_scopes)),
        ]
    }
}

/// The token endpoint is the issuer followed by `token`, so the slash matters.
fn check_issuer(maskinporten_url: &str) -> Result<()> {
    if maskinporten_url.ends_with('/') {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "MASKINPORTEN_URL must end with '/' (it is the issuer), got {maskinporten_url}"
        )))
    }
}

/// Without one of these every firm gets a 403, which looks like every firm's pause.
fn check_scopes(scopes: &str) -> Result<()> {
    let lacking: Vec<&str> = REQUIRED_SCOPES
        .iter()
        .copied()
        .filter(|needed| !scopes.split_whitespace().any(|s| s == *needed))
        .collect();
    if lacking.is_empty() {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "MASKINPORTEN_SCOPES lacks {}: the worker needs all of {}",
            lacking.join(" and "),
            REQUIRED_SCOPES.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_set_means_ingest_only() {
        let settings = AltinnSettings {
            altinn_request_timeout_ms: 10_000,
            ..Default::default()
        };
        assert!(settings.validate().unwrap().is_none());
    }

    #[test]
    fn a_missing_scope_is_named() {
        let settings = AltinnSettings {
            altinn_base_url: Some("http://localhost".into()),
            maskinporten_url: Some("http://localhost/".into()),
            maskinporten_client_id: Some("c".into()),
            maskinporten_kid: Some("k".into()),
            maskinporten_key_file: Some("key.pem".into()),
            maskinporten_scopes: Some(
                "altinn:accessmanagement/authorizedparties altinn:clientdelegations.read".into(),
            ),
            altinn_request_timeout_ms: 10_000,
            maskinporten_systemuser_external_ref: None,
        };
        let err = settings.validate().unwrap_err().to_string();
        assert!(
            err.contains("lacks altinn:clientdelegations.write"),
            "{err}"
        );
        let all = AltinnSettings {
            maskinporten_scopes: Some(REQUIRED_SCOPES.join(" ")),
            ..settings
        };
        assert!(all.validate().unwrap().is_some());
    }

    #[test]
    fn some_set_names_the_missing_ones() {
        let settings = AltinnSettings {
            altinn_base_url: Some("http://localhost".into()),
            altinn_request_timeout_ms: 10_000,
            ..Default::default()
        };
        let err = settings.validate().unwrap_err().to_string();
        assert!(err.contains("MASKINPORTEN_KID"), "{err}");
        assert!(!err.contains("ALTINN_BASE_URL"), "{err}");
    }
}
