//! What an Altinn or Maskinporten answer means for the caller, as a type.
//!
//! Success is `Ok`. Every failure is one [`Error`] variant, and [`Error::class`] tells the
//! dispatcher's error policy what to do with it, so no call site matches on strings.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::wire::{OAuthError, ProblemDetails, ValidationError};
use crate::retry::Retryable;
use crate::telemetry::redact_digit_runs;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Altinn's lock-out after repeated failed person lookups lasts an hour (`FailedAttemptsCache`).
pub const LOCKOUT: Duration = Duration::from_secs(3600);

/// Altinn's code for "too many failed person lookups" (HTTP 429).
pub const LOOKUP_LOCKOUT_CODE: &str = "AM-00026";

/// What a 403 from Altinn means for one firm.
pub const FORBIDDEN_REASON: &str = "Altinn answered 403: the system user lacks the scope or the \
     client administration right for this firm";

/// Maskinporten's error when the firm has not approved the system user (MP-303).
pub const CUSTOMER_CONFIGURATION_ERROR: &str = "invalid_altinn_customer_configuration";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 429 (not AM-00026), 5xx, timeouts and connection errors: try again later.
    #[error("Altinn is temporarily unavailable: {reason}")]
    Transient {
        retry_after: Option<Duration>,
        reason: String,
    },
    /// 401 even after one token refresh.
    #[error("Altinn rejected the access token")]
    Token,
    /// A system user Maskinporten will not issue tokens for: pause this firm only.
    #[error("the firm's system user may not do this: {reason}")]
    FirmLevel { reason: String },
    /// 403 from Altinn: this firm's system user lacks a right (pause the firm), or, when every
    /// firm gets it, the worker lacks a scope (a setup error; the flush tells the two apart).
    #[error("the firm's system user may not do this: {reason}")]
    Forbidden { reason: String },
    /// Any other 4xx: retrying the same request cannot help.
    #[error("Altinn rejected the request: {}", .0.explanation)]
    Permanent(Box<Rejection>),
    /// 429 AM-00026: too many failed person lookups; never retry within the hour.
    #[error(
        "Altinn refuses person lookups for an hour after too many failed ones (AM-00026); it \
         counts failures per calling user, which may include other system users' lookups, so \
         the cause need not be this firm's data: check that each new employee's identity number \
         and last name match the National Population Register"
    )]
    LockedOut { retry_after: Duration },
    #[error("invalid Altinn settings: {0}")]
    Config(String),
    #[error("failed to read the Maskinporten key {path}")]
    ReadKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to sign the Maskinporten grant")]
    Sign(#[source] jsonwebtoken::errors::Error),
    #[error("failed to build the HTTP client")]
    HttpClient(#[source] reqwest::Error),
    #[error("failed to decode Altinn's answer to {operation}")]
    Decode {
        operation: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// Maskinporten or Altinn refuses the worker itself, whatever the firm: fix the settings or
    /// the registration; deliveries wait, nothing is parked.
    #[error("{reason}")]
    Setup { reason: String },
    /// A list whose pages do not end: retried, as a partial list must never be used.
    #[error("Altinn's list for {operation} could not be read to its end: {reason}")]
    Paging {
        operation: &'static str,
        reason: String,
    },
}

/// What the error policy does with an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Transient,
    Token,
    FirmLevel,
    Permanent,
    LockedOut,
    /// Our own setup is wrong (settings, key file): fix and restart.
    Setup,
}

impl Retryable for Error {
    /// A busy or unreachable Altinn, an expired token, a lock-out: the same call may go
    /// through later. What to do with a row is [`Error::class`]'s finer answer.
    fn is_retryable(&self) -> bool {
        matches!(
            self.class(),
            Class::Transient | Class::Token | Class::LockedOut
        )
    }
}

impl Error {
    pub fn class(&self) -> Class {
        match self {
            Error::Transient { .. } | Error::Paging { .. } => Class::Transient,
            Error::Token => Class::Token,
            Error::FirmLevel { .. } | Error::Forbidden { .. } => Class::FirmLevel,
            // A 2xx we cannot read will not read better next time.
            Error::Permanent(_) | Error::Decode { .. } => Class::Permanent,
            Error::LockedOut { .. } => Class::LockedOut,
            Error::Config(_)
            | Error::ReadKey { .. }
            | Error::Sign(_)
            | Error::HttpClient(_)
            | Error::Setup { .. } => Class::Setup,
        }
    }

    /// When to try again at the earliest, where the answer said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Transient { retry_after, .. } => *retry_after,
            Error::LockedOut { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    pub(crate) fn transport(err: reqwest::Error) -> Self {
        let kind = if err.is_timeout() {
            "timed out"
        } else {
            "connection failed"
        };
        Error::Transient {
            retry_after: None,
            reason: format!("{kind}: {err}"),
        }
    }
}

/// A permanent rejection, kept with Altinn's own words and explained in ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    /// The most specific code: the first validation error's, else the problem's.
    pub code: Option<String>,
    pub validation_errors: Vec<ValidationError>,
    pub explanation: String,
    pub trace_id: Option<String>,
}

/// Plain words for the codes an accountant can act on.
pub fn explain(code: &str) -> Option<&'static str> {
    Some(match code {
        "AM.VLD-00032" => {
            "the firm is not registered as accountant for this client in the Register of Legal \
             Entities (or the employee is not yet an agent of the firm)"
        }
        "AM.VLD-00034" => {
            "the national identity number and last name do not match the same person in the \
             National Population Register"
        }
        "AM.VLD-00026" => "the firm's role for this client does not allow this access package",
        "AM.VLD-00006" => "the client or the employee is not known to Altinn for this firm",
        "AM.VLD-00008" => "only persons can be the firm's agents",
        "AM.VLD-00029" => "Altinn does not know this role",
        "AM.VLD-00030" => "Altinn does not know this access package",
        "AM.VLD-00031" => "the employee still holds packages for this client",
        "AM.VLD-00033" => "this access package cannot be delegated",
        "AM-00018" => "Altinn could not find the person",
        _ => return None,
    })
}

/// Classifies an Altinn API answer; `Ok(())` for 2xx.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<()> {
    if status.is_success() {
        return Ok(());
    }
    let problem: Option<ProblemDetails> = serde_json::from_slice(body).ok();
    let code = problem.as_ref().and_then(|p| p.code.clone());
    match status {
        StatusCode::UNAUTHORIZED => Err(Error::Token),
        // Every path the client calls is documented: a 404 means the wrong host or prefix.
        StatusCode::NOT_FOUND => Err(Error::Setup {
            reason: "Altinn answered 404 on a documented path: ALTINN_BASE_URL is probably wrong \
                     (https://platform.tt02.altinn.no for test, https://platform.altinn.no for \
                     production, with no path)"
                .into(),
        }),
        StatusCode::FORBIDDEN => Err(Error::Forbidden {
            reason: FORBIDDEN_REASON.into(),
        }),
        StatusCode::TOO_MANY_REQUESTS if code.as_deref() == Some(LOOKUP_LOCKOUT_CODE) => {
            // Altinn's lock-out lasts an hour; whatever the header says, the hour is kept.
            Err(Error::LockedOut {
                retry_after: LOCKOUT,
            })
        }
        s if s == StatusCode::TOO_MANY_REQUESTS || s == StatusCode::REQUEST_TIMEOUT => {
            Err(Error::Transient {
                retry_after: retry_after(headers),
                reason: format!("HTTP {s}"),
            })
        }
        s if s.is_server_error() => Err(Error::Transient {
            retry_after: retry_after(headers),
            reason: format!("HTTP {s}"),
        }),
        s => Err(Error::Permanent(Box::new(rejection(s, problem)))),
    }
}

/// Altinn's free text may quote what it was sent, an identity number among it; it is stored,
/// logged and served, so long digit runs go before it is kept.
fn rejection(status: StatusCode, problem: Option<ProblemDetails>) -> Rejection {
    let mut problem = problem.unwrap_or_default();
    let redact = |text: &mut Option<String>| *text = text.as_deref().map(redact_digit_runs);
    redact(&mut problem.title);
    redact(&mut problem.detail);
    for e in &mut problem.validation_errors {
        redact(&mut e.title);
        redact(&mut e.detail);
        e.paths = e.paths.iter().map(|p| redact_digit_runs(p)).collect();
    }
    let code = problem
        .validation_errors
        .first()
        .map(|e| e.code.clone())
        .or(problem.code.clone());
    let explanation = code
        .as_deref()
        .and_then(explain)
        .map(str::to_owned)
        .or_else(|| {
            problem
                .validation_errors
                .first()
                .and_then(|e| e.title.clone())
        })
        .or(problem.detail.clone())
        .or(problem.title.clone())
        .unwrap_or_else(|| format!("Altinn answered HTTP {status} without an explanation"));
    Rejection {
        status: status.as_u16(),
        code,
        validation_errors: problem.validation_errors,
        explanation,
        trace_id: problem.trace_id,
    }
}

/// What to check for an OAuth error that refuses the worker itself, whichever firm it asks for.
fn setup_fix(code: &str) -> Option<&'static str> {
    Some(match code {
        "invalid_client" | "unauthorized_client" => {
            "MASKINPORTEN_CLIENT_ID or MASKINPORTEN_KID is not a Maskinporten client with this \
             key; register the public key under that kid"
        }
        "invalid_grant" => {
            "the grant was refused: the key does not match MASKINPORTEN_KID, the clock is off by \
             more than a few seconds, or MASKINPORTEN_URL is not Maskinporten's issuer"
        }
        "invalid_scope" => {
            "the Maskinporten client lacks a scope of MASKINPORTEN_SCOPES; the clientdelegations \
             scopes are granted by Altinn support"
        }
        _ => return None,
    })
}

/// Classifies Maskinporten's answer to a grant; OAuth errors come as 400 with `error`.
pub fn classify_maskinporten(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<()> {
    if status.is_success() {
        return Ok(());
    }
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        let reason = format!("Maskinporten answered HTTP {status}");
        return Err(Error::Transient {
            retry_after: retry_after(headers),
            reason,
        });
    }
    let oauth: Option<OAuthError> = serde_json::from_slice(body).ok();
    let (code, description) = match oauth {
        Some(e) => (e.error, e.error_description.unwrap_or_default()),
        None => (format!("HTTP {status}"), String::new()),
    };
    if code == CUSTOMER_CONFIGURATION_ERROR {
        let reason = format!(
            "Maskinporten finds no usable system user for the firm (MP-303: {description}): the \
             firm has not approved the system user, or the system user was requested for \
             another client id than MASKINPORTEN_CLIENT_ID, or with an externalRef the grant \
             does not send (MASKINPORTEN_SYSTEMUSER_EXTERNAL_REF)"
        );
        return Err(Error::FirmLevel { reason });
    }
    if let Some(fix) = setup_fix(&code) {
        return Err(Error::Setup {
            reason: format!("Maskinporten refused the worker's grant: {code} {description}: {fix}"),
        });
    }
    Err(Error::Permanent(Box::new(Rejection {
        status: status.as_u16(),
        explanation: format!("Maskinporten refused the grant: {code} {description}"),
        code: Some(code),
        validation_errors: Vec::new(),
        trace_id: None,
    })))
}

/// The longest `Retry-After` believed. The flush caps its waits lower still
/// (`FLUSH_RETRY_MAX_SECS`); this keeps an absurd header from reaching any arithmetic.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(24 * 3600);

/// `Retry-After` as seconds or as an HTTP date, at most [`RETRY_AFTER_MAX`].
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
        at.signed_duration_since(chrono::Utc::now())
            .to_std()
            .unwrap_or_default()
    };
    Some(wait.min(RETRY_AFTER_MAX))
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;
    use serde_json::json;

    use super::*;

    fn with_retry_after(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        headers
    }

    fn body(value: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&value).unwrap()
    }

    #[test]
    fn statuses_map_to_classes() {
        let none = HeaderMap::new();
        let class = |status: u16, body: &[u8]| {
            classify(StatusCode::from_u16(status).unwrap(), &none, body).map_err(|e| e.class())
        };
        assert_eq!(class(200, b"[]"), Ok(()));
        assert_eq!(class(401, b""), Err(Class::Token));
        assert_eq!(class(403, b""), Err(Class::FirmLevel));
        assert_eq!(class(429, b""), Err(Class::Transient));
        assert_eq!(class(502, b"<html>"), Err(Class::Transient));
        // Every path is documented: a 404 is the wrong base URL, for every firm.
        assert_eq!(class(404, b""), Err(Class::Setup));
        assert_eq!(class(400, b""), Err(Class::Permanent));
        let lockout = body(json!({"code": "AM-00026", "status": 429}));
        assert_eq!(class(429, &lockout), Err(Class::LockedOut));
    }

    #[test]
    fn retry_after_is_honoured_in_seconds_and_as_a_date() {
        let err = classify(
            StatusCode::SERVICE_UNAVAILABLE,
            &with_retry_after("12"),
            b"",
        )
        .unwrap_err();
        assert_eq!(err.retry_after(), Some(Duration::from_secs(12)));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(90)).to_rfc2822();
        let wait = retry_after(&with_retry_after(&later)).unwrap();
        assert!(
            wait > Duration::from_secs(80) && wait <= Duration::from_secs(90),
            "{wait:?}"
        );
    }

    #[test]
    fn identity_numbers_in_altinns_free_text_are_not_kept() {
        let problem = body(json!({
            "title": "Party 15038512345 not found",
            "detail": "to 15038512345",
            "validationErrors": [{"code": "X-1", "title": "bad 15038512345",
                                  "detail": "see 15038512345", "paths": ["/to/15038512345"]}]
        }));
        let err = classify(StatusCode::BAD_REQUEST, &HeaderMap::new(), &problem).unwrap_err();
        let Error::Permanent(rejection) = err else {
            panic!("a 400 is permanent: {err:?}")
        };
        let kept = format!("{rejection:?}");
        assert!(!kept.contains("15038512345"), "{kept}");
        assert_eq!(rejection.explanation, "bad <redacted>");
    }

    #[test]
    fn validation_errors_are_kept_and_explained() {
        let problem = body(json!({
            "type": "urn:altinn:error:STD-00000",
            "code": "STD-00000",
            "traceId": "00-abc-def-00",
            "validationErrors": [{"code": "AM.VLD-00032", "paths": ["/values[0]/role"]}]
        }));
        let err = classify(StatusCode::BAD_REQUEST, &HeaderMap::new(), &problem).unwrap_err();
        let Error::Permanent(r) = err else {
            panic!("{err:?}")
        };
        assert_eq!(r.code.as_deref(), Some("AM.VLD-00032"));
        assert_eq!(r.trace_id.as_deref(), Some("00-abc-def-00"));
        assert!(r.explanation.starts_with(
            "the firm is not registered as accountant for this client in the Register of Legal \
             Entities"
        ));
    }

    #[test]
    fn unapproved_system_user_is_firm_level() {
        let oauth = body(json!({"error": CUSTOMER_CONFIGURATION_ERROR}));
        let err = classify_maskinporten(StatusCode::BAD_REQUEST, &HeaderMap::new(), &oauth);
        assert_eq!(err.map_err(|e| e.class()), Err(Class::FirmLevel));
    }
}
