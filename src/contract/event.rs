//! The event envelope AdminFlow publishes to `adminflow.events`, and its four payloads.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::ids::{NationalIdentityNumber, OrgNumber, strict_uuid, text};
use super::object::{Object, object, optional_object};
use super::{ContractError, Rules, parse_json, timestamp};

pub const EVENT_TYPES: [&str; 4] = [
    "ClientAssigned",
    "ClientRemoved",
    "RoleChanged",
    "ProjectAccountantChanged",
];

const LAST_NAME_MAX: usize = 200;
const CLIENT_NAME_MAX: usize = 500;
const ROLE_MAX: usize = 100;

/// A validated AdminFlow event.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: Uuid,
    pub firm: OrgNumber,
    /// AdminFlow's per-firm change counter; newer facts win.
    pub sequence: i64,
    pub occurred_at: DateTime<Utc>,
    pub body: EventBody,
}

#[derive(Debug, Clone)]
pub enum EventBody {
    ClientAssigned {
        employee: Employee,
        client: Client,
    },
    ClientRemoved {
        employee_id: Uuid,
        client_org_number: OrgNumber,
    },
    RoleChanged {
        employee: Employee,
        roles: Vec<String>,
    },
    ProjectAccountantChanged {
        client: Client,
        /// Informational only: the slot's previous holder comes from the database.
        previous_employee_id: Option<Uuid>,
        employee: Option<Employee>,
    },
}

impl EventBody {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::ClientAssigned { .. } => "ClientAssigned",
            Self::ClientRemoved { .. } => "ClientRemoved",
            Self::RoleChanged { .. } => "RoleChanged",
            Self::ProjectAccountantChanged { .. } => "ProjectAccountantChanged",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Employee {
    pub id: Uuid,
    pub national_identity_number: NationalIdentityNumber,
    pub last_name: String,
}

#[derive(Debug, Clone)]
pub struct Client {
    pub org_number: OrgNumber,
    pub name: String,
}

// The raw shapes mirror the JSON Schemas in `schemas/events/`: serde checks structure and types,
// then `validate` applies the rules a schema cannot express. Unknown fields are ignored, at any
// depth (serde skips them without recursing). `data` stays raw text until its type is known: a
// `serde_json::Value` would keep the last of two duplicate keys, where the typed structs refuse
// them as the envelope does. Every nested object is read through `object` (and the envelope and
// `data` through `Object`), which refuses the array of its fields that serde would accept.

#[derive(Deserialize)]
struct RawEnvelope {
    event_id: String,
    event_type: String,
    occurred_at: String,
    #[serde(deserialize_with = "object")]
    firm: RawFirm,
    sequence: i64,
    data: Box<RawValue>,
}

#[derive(Deserialize)]
pub(super) struct RawFirm {
    pub(super) org_number: String,
}

#[derive(Deserialize)]
struct RawEmployee {
    id: String,
    national_identity_number: String,
    last_name: String,
}

#[derive(Deserialize)]
struct RawClient {
    org_number: String,
    name: String,
}

#[derive(Deserialize)]
struct RawClientAssigned {
    #[serde(deserialize_with = "object")]
    employee: RawEmployee,
    #[serde(deserialize_with = "object")]
    client: RawClient,
}

#[derive(Deserialize)]
struct RawClientRemoved {
    employee_id: String,
    client_org_number: String,
}

#[derive(Deserialize)]
struct RawRoleChanged {
    #[serde(deserialize_with = "object")]
    employee: RawEmployee,
    roles: Vec<String>,
}

#[derive(Deserialize)]
struct RawProjectAccountantChanged {
    #[serde(deserialize_with = "object")]
    client: RawClient,
    // `deserialize_with` makes the key required while still allowing null.
    #[serde(deserialize_with = "Option::deserialize")]
    previous_employee_id: Option<String>,
    #[serde(deserialize_with = "optional_object")]
    employee: Option<RawEmployee>,
}

/// Decodes one delivery from the events queue.
///
/// # Errors
/// Every way the message can break the contract, as a [`ContractError`] whose `code()` is the
/// dead-letter reason.
pub fn decode_event(routing_key: &str, body: &[u8], rules: &Rules) -> Result<Event, ContractError> {
    let raw: RawEnvelope = parse_json(body, rules)?;
    check_envelope(&raw, routing_key)?;
    let body = decode_body(&raw.event_type, &raw.data, rules)?;
    Ok(Event {
        id: strict_uuid("event_id", &raw.event_id)?,
        firm: OrgNumber::parse("firm.org_number", &raw.firm.org_number)?,
        sequence: raw.sequence,
        occurred_at: timestamp("occurred_at", &raw.occurred_at)?,
        body,
    })
}

/// A known type, sent with its own routing key, and a sequence that can be compared.
fn check_envelope(raw: &RawEnvelope, routing_key: &str) -> Result<(), ContractError> {
    if !EVENT_TYPES.contains(&raw.event_type.as_str()) {
        return Err(ContractError::UnknownType(redact_type(&raw.event_type)));
    }
    if raw.event_type != routing_key {
        return Err(ContractError::RoutingKeyMismatch {
            routing_key: redact_type(routing_key),
            declared: raw.event_type.clone(),
        });
    }
    if raw.sequence < 0 {
        return Err(ContractError::Schema {
            field: "sequence",
            reason: "must not be negative",
        });
    }
    Ok(())
}

/// The `data` of an event whose type [`check_envelope`] has accepted.
fn decode_body(
    event_type: &str,
    payload: &RawValue,
    rules: &Rules,
) -> Result<EventBody, ContractError> {
    Ok(match event_type {
        "ClientAssigned" => {
            let d: RawClientAssigned = data(payload)?;
            EventBody::ClientAssigned {
                employee: d.employee.validate(rules)?,
                client: d.client.validate()?,
            }
        }
        "ClientRemoved" => {
            let d: RawClientRemoved = data(payload)?;
            EventBody::ClientRemoved {
                employee_id: strict_uuid("employee_id", &d.employee_id)?,
                client_org_number: OrgNumber::parse("client_org_number", &d.client_org_number)?,
            }
        }
        "RoleChanged" => {
            let d: RawRoleChanged = data(payload)?;
            let roles = d
                .roles
                .iter()
                .map(|r| text("roles", r, ROLE_MAX))
                .collect::<Result<_, _>>()?;
            EventBody::RoleChanged {
                employee: d.employee.validate(rules)?,
                roles,
            }
        }
        _ => {
            let d: RawProjectAccountantChanged = data(payload)?;
            EventBody::ProjectAccountantChanged {
                client: d.client.validate()?,
                previous_employee_id: d
                    .previous_employee_id
                    .map(|id| strict_uuid("previous_employee_id", &id))
                    .transpose()?,
                employee: d.employee.map(|e| e.validate(rules)).transpose()?,
            }
        }
    })
}

impl RawEmployee {
    fn validate(self, rules: &Rules) -> Result<Employee, ContractError> {
        Ok(Employee {
            id: strict_uuid("employee.id", &self.id)?,
            national_identity_number: NationalIdentityNumber::parse(
                &self.national_identity_number,
                rules,
            )?,
            last_name: text("employee.last_name", &self.last_name, LAST_NAME_MAX)?,
        })
    }
}

impl RawClient {
    fn validate(self) -> Result<Client, ContractError> {
        Ok(Client {
            org_number: OrgNumber::parse("client.org_number", &self.org_number)?,
            name: text("client.name", &self.name, CLIENT_NAME_MAX)?,
        })
    }
}

fn data<T: serde::de::DeserializeOwned>(raw: &RawValue) -> Result<T, ContractError> {
    // serde would take an array for a struct, field by field; the contract has an object.
    if !raw.get().starts_with('{') {
        return Err(ContractError::Schema {
            field: "data",
            reason: "must be a JSON object",
        });
    }
    serde_json::from_str(raw.get())
        .map(|Object(t)| t)
        .map_err(|e| match e.classify() {
            serde_json::error::Category::Data => ContractError::shape("data", &e),
            // The envelope's parse has checked the syntax; what is left is serde_json's
            // nesting limit, which no field of ours reaches before a type error.
            _ => ContractError::NotJson(super::redact_digits(&e.to_string())),
        })
}

/// Type names come from the sender; keep only a short, printable prefix for error texts, and
/// no run of ten or more digits (an identity number has eleven): the text becomes the
/// dead-letter reason.
pub(super) fn redact_type(raw: &str) -> String {
    let kept: String = raw
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-' || *c == '_')
        .take(64)
        .collect();
    super::redact_digits(&kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: &str = r#"{"employee":{"id":"c4a8f2e6-1d7b-4c3a-b5e9-8f0d2a6c1e74","national_identity_number":"55038521011","last_name":"Kowalski"},"client":{"org_number":"911223341","name":"Havbris AS"}}"#;

    fn event(data: &str) -> Result<Event, ContractError> {
        let body = format!(
            r#"{{"event_id":"1c2d3e4f-5a6b-4c7d-8e9f-a0b1c2d3e4f5","event_type":"ClientAssigned",
                "occurred_at":"2026-03-15T09:30:00Z","firm":{{"org_number":"912345610"}},
                "sequence":43,"data":{data}}}"#
        );
        decode_event("ClientAssigned", body.as_bytes(), &Rules::default())
    }

    fn code(data: &str) -> &'static str {
        event(data).map_or_else(|e| e.code(), |_| "applied")
    }

    #[test]
    fn the_base_event_is_applied() {
        let e = event(DATA).unwrap();
        let EventBody::ClientAssigned { client, .. } = e.body else {
            panic!("{e:?}")
        };
        assert_eq!(client.org_number.as_str(), "911223341");
    }

    #[test]
    fn duplicate_keys_inside_data_are_refused() {
        let client = r#""client":{"org_number":"974760673","name":"Other AS"},"#;
        let twice = DATA.replacen(r#""client":"#, &format!("{client}\"client\":"), 1);
        assert_eq!(code(&twice), "schema");
        let err = event(&twice).unwrap_err().to_string();
        assert!(err.contains("duplicate field `client`"), "{err}");

        let nin = r#""national_identity_number":"55038521011","#;
        assert_eq!(
            code(&DATA.replacen(nin, &format!("{nin}{nin}"), 1)),
            "schema"
        );
    }

    #[test]
    fn unknown_fields_inside_data_are_ignored_at_any_depth() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let data = DATA.replacen('{', &format!(r#"{{"x_future":{deep},"#), 1);
        assert_eq!(code(&data), "applied");
        let data = DATA.replacen(
            r#""name":"Havbris AS""#,
            &format!(r#""name":"Havbris AS","x":{{"y":{deep}}}"#),
            1,
        );
        assert_eq!(code(&data), "applied");
    }

    /// D2 of fuzz/README.md: an identity number as the type or routing key is not kept.
    #[test]
    fn type_names_in_error_texts_keep_no_long_digit_run() {
        let body = |t: &str| {
            format!(
                r#"{{"event_id":"1c2d3e4f-5a6b-4c7d-8e9f-a0b1c2d3e4f5","event_type":"{t}",
                "occurred_at":"2026-03-15T09:30:00Z","firm":{{"org_number":"912345610"}},
                "sequence":43,"data":{DATA}}}"#
            )
        };
        let rules = Rules::default();
        let err = decode_event("x", body("15038512363").as_bytes(), &rules).unwrap_err();
        assert_eq!(err.code(), "unknown-type");
        assert_eq!(err.to_string(), r#"unknown message type "<redacted>""#);
        let err = decode_event(
            "Client-15038512363",
            body("ClientAssigned").as_bytes(),
            &rules,
        )
        .unwrap_err();
        assert_eq!(err.code(), "routing-key-mismatch");
        assert!(!err.to_string().contains("15038512363"), "{err}");
        // Short digit runs, such as a version, stay.
        assert_eq!(redact_type("Client.v2-123456789"), "Client.v2-123456789");
    }

    /// D4: an object of the contract written as the array of its fields is refused.
    #[test]
    fn objects_written_as_arrays_are_refused() {
        assert_eq!(code(DATA), "applied");
        let employee = r#"{"id":"c4a8f2e6-1d7b-4c3a-b5e9-8f0d2a6c1e74","national_identity_number":"55038521011","last_name":"Kowalski"}"#;
        let as_array = r#"["c4a8f2e6-1d7b-4c3a-b5e9-8f0d2a6c1e74","55038521011","Kowalski"]"#;
        assert_eq!(code(&DATA.replacen(employee, as_array, 1)), "schema");
        let client = r#"{"org_number":"911223341","name":"Havbris AS"}"#;
        let err = event(&DATA.replacen(client, r#"["911223341","Havbris AS"]"#, 1)).unwrap_err();
        assert!(err.to_string().contains("expected a JSON object"), "{err}");
        let body = |firm: &str| {
            format!(
                r#"{{"event_id":"1c2d3e4f-5a6b-4c7d-8e9f-a0b1c2d3e4f5","event_type":"ClientAssigned",
                "occurred_at":"2026-03-15T09:30:00Z","firm":{firm},"sequence":43,"data":{DATA}}}"#
            )
        };
        let rules = Rules::default();
        assert!(
            decode_event(
                "ClientAssigned",
                body(r#"{"org_number":"912345610"}"#).as_bytes(),
                &rules
            )
            .is_ok()
        );
        let err = decode_event(
            "ClientAssigned",
            body(r#"["912345610"]"#).as_bytes(),
            &rules,
        )
        .unwrap_err();
        assert_eq!(err.code(), "schema");
        // The whole envelope as the array of its fields in order.
        let envelope = format!(
            r#"["1c2d3e4f-5a6b-4c7d-8e9f-a0b1c2d3e4f5","ClientAssigned","2026-03-15T09:30:00Z",
            {{"org_number":"912345610"}},43,{DATA}]"#
        );
        let err = decode_event("ClientAssigned", envelope.as_bytes(), &rules).unwrap_err();
        assert_eq!(err.code(), "schema");
    }

    #[test]
    fn data_that_is_not_an_object_is_refused() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(
            event(&deep).unwrap_err().to_string(),
            "data must be a JSON object"
        );
        assert_eq!(code("null"), "schema");
        assert_eq!(code(r#""text""#), "schema");
        assert_eq!(code("[1, 2"), "not-json");
        // The base event's employee and client, as an array: serde alone would take it.
        let fields = DATA
            .replacen(r#"{"employee":"#, "[", 1)
            .replacen(r#","client":"#, ",", 1);
        let fields = format!("{}]", &fields[..fields.len() - 1]);
        assert_eq!(code(&fields), "schema", "{fields}");
    }
}
