//! Commands sent to `altinn-sync.commands`: an administrator's sync-now and the nightly reconcile.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::event::{RawFirm, redact_type};
use super::ids::{OrgNumber, strict_uuid, text};
use super::object::optional_object;
use super::{ContractError, Rules, parse_json, timestamp};

pub const COMMAND_TYPES: [&str; 2] = ["SyncNow", "NightlyReconcile"];

const REQUESTED_BY_MAX: usize = 200;

#[derive(Debug, Clone)]
pub struct Command {
    pub id: Uuid,
    pub requested_at: DateTime<Utc>,
    pub requested_by: Option<String>,
    pub kind: CommandKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandKind {
    /// Flush one firm now; first wait until its events up to `after_sequence` are applied.
    SyncNow {
        firm: OrgNumber,
        after_sequence: Option<i64>,
    },
    /// Read Altinn's actual state and repair drift, for one firm or (`None`) all of them.
    NightlyReconcile { firm: Option<OrgNumber> },
}

impl CommandKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::SyncNow { .. } => "SyncNow",
            Self::NightlyReconcile { .. } => "NightlyReconcile",
        }
    }

    pub fn firm(&self) -> Option<&OrgNumber> {
        match self {
            Self::SyncNow { firm, .. } => Some(firm),
            Self::NightlyReconcile { firm } => firm.as_ref(),
        }
    }
}

#[derive(Deserialize)]
struct RawCommand {
    command_id: String,
    command_type: String,
    requested_at: String,
    #[serde(default)]
    requested_by: Option<String>,
    #[serde(default, deserialize_with = "optional_object")]
    firm: Option<RawFirm>,
    #[serde(default)]
    after_sequence: Option<i64>,
}

/// Decodes one delivery from the commands queue.
///
/// # Errors
/// See [`ContractError`]; `code()` gives the dead-letter reason.
pub fn decode_command(
    routing_key: &str,
    body: &[u8],
    rules: &Rules,
) -> Result<Command, ContractError> {
    let raw: RawCommand = parse_json(body, rules)?;
    if !COMMAND_TYPES.contains(&raw.command_type.as_str()) {
        return Err(ContractError::UnknownType(redact_type(&raw.command_type)));
    }
    if raw.command_type != routing_key {
        return Err(ContractError::RoutingKeyMismatch {
            routing_key: redact_type(routing_key),
            declared: raw.command_type,
        });
    }
    let firm = raw
        .firm
        .map(|f| OrgNumber::parse("firm.org_number", &f.org_number))
        .transpose()?;
    let kind = if raw.command_type == "SyncNow" {
        let firm = firm.ok_or(ContractError::Schema {
            field: "firm",
            reason: "SyncNow must name a firm",
        })?;
        if raw.after_sequence.is_some_and(|s| s < 0) {
            return Err(ContractError::Schema {
                field: "after_sequence",
                reason: "must not be negative",
            });
        }
        CommandKind::SyncNow {
            firm,
            after_sequence: raw.after_sequence,
        }
    } else {
        CommandKind::NightlyReconcile { firm }
    };
    Ok(Command {
        id: strict_uuid("command_id", &raw.command_id)?,
        requested_at: timestamp("requested_at", &raw.requested_at)?,
        requested_by: raw
            .requested_by
            .map(|r| text("requested_by", &r, REQUESTED_BY_MAX))
            .transpose()?,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(firm: &str) -> &'static str {
        let body = format!(
            r#"{{"command_id":"5b8e2f1a-3c4d-4e5f-8a9b-0c1d2e3f4a5b","command_type":"NightlyReconcile",
            "requested_at":"2026-03-15T09:30:00Z","firm":{firm}}}"#
        );
        decode_command("NightlyReconcile", body.as_bytes(), &Rules::default())
            .map_or_else(|e| e.code(), |_| "applied")
    }

    /// D4 of fuzz/README.md: the firm written as the array of its fields is refused.
    #[test]
    fn the_firm_is_an_object_or_null() {
        assert_eq!(code(r#"{"org_number":"912345610"}"#), "applied");
        assert_eq!(code("null"), "applied");
        assert_eq!(code(r#"["912345610"]"#), "schema");
    }
}
