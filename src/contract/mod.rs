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
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ContractError::shape("envelope", &e),
        _ => ContractError::NotJson(redact_digits(&e.to_string())),
    })
}

/// RFC 3339 with a `T`, seconds and an explicit offset, and a date that exists.
fn timestamp(field: &'static str, raw: &str) -> Result<DateTime<Utc>, ContractError> {
    let b = raw.as_bytes();
    let shaped = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && (raw.ends_with('Z') || matches!(b[b.len() - 6], b'+' | b'-'));
    let bad = ContractError::Schema {
        field,
        reason: "must be an RFC 3339 timestamp with an offset, such as 2026-11-23T09:15:00Z",
    };
    if !shaped {
        return Err(bad);
    }
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| bad)
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
    }
}
