//! The AdminFlow contract: what may arrive on our queues, decoded and checked.
//!
//! The JSON Schemas in `schemas/` describe the same shapes for other teams; the corpus test in
//! `tests/contract/main.rs` shows the two agree. Rules a schema cannot express (check digits, body
//! size, routing key, real calendar dates, the AMQP content type and encoding) are enforced here
//! only.

mod command;
mod content;
mod event;
mod ids;
mod object;

use chrono::{DateTime, Utc};

pub use command::{COMMAND_TYPES, Command, CommandKind, decode_command};
pub use content::check_content;
pub use event::{Client, EVENT_TYPES, Employee, Event, EventBody, decode_event};
pub use ids::{NationalIdentityNumber, OrgNumber};

/// Settings that change what the decoder accepts.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Accept Tenor's synthetic identity numbers (month + 80). Test environments only.
    pub allow_synthetic_nin: bool,
    pub max_body_bytes: usize,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            allow_synthetic_nin: false,
            max_body_bytes: 256 * 1024,
        }
    }
}

/// Why a message breaks the contract. Texts never include identity numbers or names.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("the message is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("the message is not JSON: {0}")]
    NotJson(String),
    #[error("the message's content type {0:?} is not application/json")]
    ContentType(String),
    #[error(
        "the message's content encoding {0:?} is not supported; publish the JSON as it is, \
         with no content encoding"
    )]
    ContentEncoding(String),
    #[error("{field} {reason}")]
    Schema {
        field: &'static str,
        reason: &'static str,
    },
    #[error("the message does not match the contract: {0}")]
    Shape(String),
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    #[error("routing key {routing_key:?} differs from the declared type {declared:?}")]
    RoutingKeyMismatch {
        routing_key: String,
        declared: String,
    },
    #[error("{field}: {reason}")]
    Checksum {
        field: &'static str,
        reason: &'static str,
    },
}

impl ContractError {
    /// The stable reason code carried to the dead-letter queue and the `dead_letters` table.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too-large",
            Self::NotJson(_) | Self::ContentType(_) | Self::ContentEncoding(_) => "not-json",
            Self::Schema { .. } | Self::Shape(_) => "schema",
            Self::UnknownType(_) => "unknown-type",
            Self::RoutingKeyMismatch { .. } => "routing-key-mismatch",
            Self::Checksum { .. } => "checksum",
        }
    }

    fn shape(context: &str, err: &serde_json::Error) -> Self {
        Self::Shape(format!("{context}: {}", redact_digits(&err.to_string())))
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(
    body: &[u8],
    rules: &Rules,
) -> Result<T, ContractError> {
    if body.len() > rules.max_body_bytes {
        return Err(ContractError::TooLarge {
            size: body.len(),
            limit: rules.max_body_bytes,
        });
    }
    // serde_json checks the strings it reads, but skips an ignored field's without looking:
    // check the whole body, so that bytes that are not UTF-8 are refused wherever they sit
    // (simdutf8: a 256 KiB body of non-ASCII text in about a tenth of std's time).
    let text = simdutf8::compat::from_utf8(body).map_err(|e| {
        ContractError::NotJson(format!(
            "the body is not UTF-8 (invalid bytes at offset {})",
            e.valid_up_to()
        ))
    })?;
    serde_json::from_str(text)
        .map(|object::Object(t)| t)
        .map_err(|e| match e.classify() {
            serde_json::error::Category::Data => ContractError::shape("envelope", &e),
            _ => ContractError::NotJson(redact_digits(&e.to_string())),
        })
}

/// RFC 3339 as the schemas' pattern has it (`T`, seconds, at most nine fractional digits, `Z`
/// or `±hh:mm`), a date and time that exist, and a year from 0000 to 9999 in UTC too, so that
/// the time has an RFC 3339 form once converted.
fn timestamp(field: &'static str, raw: &str) -> Result<DateTime<Utc>, ContractError> {
    use chrono::Datelike as _;
    let bad = ContractError::Schema {
        field,
        reason: "must be an RFC 3339 timestamp with an offset, such as 2026-11-23T09:15:00Z",
    };
    if !rfc3339_shaped(raw.as_bytes()) {
        return Err(bad);
    }
    let t = DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| bad)?;
    if !(0..=9999).contains(&t.year()) {
        return Err(ContractError::Schema {
            field,
            reason: "must fall in the years 0000 to 9999 in UTC",
        });
    }
    Ok(t)
}

/// `^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$`
fn rfc3339_shaped(b: &[u8]) -> bool {
    let fixed = |s: &[u8], shape: &[u8]| {
        s.len() == shape.len()
            && s.iter().zip(shape).all(|(c, p)| match p {
                b'9' => c.is_ascii_digit(),
                _ => c == p,
            })
    };
    let Some((date_time, rest)) = b.split_at_checked(19) else {
        return false;
    };
    if !fixed(date_time, b"9999-99-99T99:99:99") {
        return false;
    }
    let rest = match rest.strip_prefix(b".") {
        Some(fraction) => {
            let digits = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
            if !(1..=9).contains(&digits) {
                return false;
            }
            &fraction[digits..]
        }
        None => rest,
    };
    rest == b"Z" || fixed(rest, b"+99:99") || fixed(rest, b"-99:99")
}

/// serde's messages quote offending values; long digit runs could be identity numbers.
fn redact_digits(msg: &str) -> String {
    crate::telemetry::redact_digit_runs(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_long_digit_runs() {
        assert_eq!(
            redact_digits("invalid type: integer `15038512345`, expected a string at line 1"),
            "invalid type: integer `<redacted>`, expected a string at line 1"
        );
        assert_eq!(redact_digits("org 912345610"), "org 912345610");
    }

    #[test]
    fn timestamps_are_strict() {
        assert!(timestamp("t", "2026-11-23T09:15:00Z").is_ok());
        assert!(timestamp("t", "2026-11-23T09:15:00.123+01:00").is_ok());
        assert!(timestamp("t", "2026-11-23 09:15:00Z").is_err());
        assert!(timestamp("t", "2026-11-23T09:15:00").is_err());
        assert!(timestamp("t", "2026-02-30T09:15:00Z").is_err());
        assert!(timestamp("t", "2026-11-23t09:15:00Z").is_err());
        assert!(timestamp("t", "2026-11-23T09:15:00z").is_err());
        assert!(timestamp("t", "2026-11-23T09:15:00.Z").is_err());
        assert!(timestamp("t", "2026-11-23T09:15:00+0100").is_err());
        assert!(timestamp("t", "+2026-11-23T09:15:00Z").is_err());
    }

    /// D6 of fuzz/README.md: the schema allows at most nine fractional digits.
    #[test]
    fn fractions_have_at_most_nine_digits() {
        assert!(timestamp("t", "2026-03-15T09:30:00.012345678Z").is_ok());
        assert!(timestamp("t", "2026-03-15T09:30:00.123456789+01:00").is_ok());
        assert!(timestamp("t", "2026-03-15T09:30:00.0123456789Z").is_err());
        assert!(timestamp("t", "2026-03-15T09:30:00.1234567890-01:00").is_err());
    }

    /// D7: a time whose year in UTC has no four-digit form is refused.
    #[test]
    fn the_year_stays_within_four_digits_in_utc() {
        assert!(timestamp("t", "0000-01-01T00:30:00Z").is_ok());
        assert!(timestamp("t", "9999-12-31T23:30:00Z").is_ok());
        assert!(timestamp("t", "0000-01-01T01:00:00+01:00").is_ok());
        let err = timestamp("t", "0000-01-01T00:30:00+01:00").unwrap_err();
        assert_eq!(
            err.to_string(),
            "t must fall in the years 0000 to 9999 in UTC"
        );
        assert!(timestamp("t", "9999-12-31T23:30:00-01:00").is_err());
    }

    /// D1: bytes that are not UTF-8 are refused wherever they sit, an ignored field included.
    #[test]
    fn a_body_that_is_not_utf8_is_refused() {
        #[derive(Debug, serde::Deserialize)]
        struct Known {
            known: u8,
        }
        let rules = Rules::default();
        let ok = parse_json::<Known>(br#"{"known":1,"x":"ok"}"#, &rules).unwrap();
        assert_eq!(ok.known, 1);
        let err = parse_json::<Known>(b"{\"known\":1,\"x\":\"\xff\"}", &rules).unwrap_err();
        assert_eq!(err.code(), "not-json");
        assert_eq!(
            err.to_string(),
            "the message is not JSON: the body is not UTF-8 (invalid bytes at offset 16)"
        );
    }
}
