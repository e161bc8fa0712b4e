//! The invariants of `decode_event`. `Event` has no `Serialize`, so [`encode`] writes it back
//! in the contract's shape; [`canonical`] reduces the input to the same shape (known fields
//! only, UUIDs lower case, timestamps in UTC) without using the decoder.

use altinn_sync::contract::{Client, Employee, Event, EventBody, Rules, decode_event};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use crate::alloc::{decode_budget, peak_during};
use crate::schema::{self, Kind};

pub fn rules() -> Rules {
    Rules::default()
}

/// Decodes one delivery and asserts every invariant; returns whether it was accepted.
pub fn check(routing_key: &str, body: &[u8]) -> bool {
    let (decoded, peak) = peak_during(|| decode_event(routing_key, body, &rules()));
    assert!(
        peak <= decode_budget(body.len()),
        "decoding {} bytes held {peak} bytes at once",
        body.len()
    );
    let event = match decoded {
        Ok(event) => event,
        Err(e) => {
            crate::assert_no_digit_runs(&e.to_string());
            return false;
        }
    };
    let input: Value = serde_json::from_slice(body).expect("an accepted body is JSON");
    assert!(
        schema::accepts(Kind::Event, routing_key, &input),
        "the decoder accepts what the schema for {routing_key:?} rejects: {input}"
    );
    let encoded = encode(&event);
    assert!(
        schema::accepts(Kind::Event, routing_key, &encoded),
        "the re-encoded event breaks the schema: {encoded}"
    );
    assert_eq!(
        Some(&encoded),
        canonical(&input).as_ref(),
        "the decoded event differs from the input"
    );
    let again = decode_event(
        routing_key,
        &serde_json::to_vec(&encoded).unwrap(),
        &rules(),
    )
    .expect("a re-encoded event decodes");
    assert_eq!(encode(&again), encoded, "re-encoding is not stable");
    true
}

pub fn timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The event in the contract's shape.
pub fn encode(e: &Event) -> Value {
    let data = match &e.body {
        EventBody::ClientAssigned { employee, client } => {
            json!({ "employee": employee_json(employee), "client": client_json(client) })
        }
        EventBody::ClientRemoved {
            employee_id,
            client_org_number,
        } => json!({
            "employee_id": employee_id.to_string(),
            "client_org_number": client_org_number.as_str(),
        }),
        EventBody::RoleChanged { employee, roles } => {
            json!({ "employee": employee_json(employee), "roles": roles })
        }
        EventBody::ProjectAccountantChanged {
            client,
            previous_employee_id,
            employee,
        } => json!({
            "client": client_json(client),
            "previous_employee_id": previous_employee_id.map(|id| id.to_string()),
            "employee": employee.as_ref().map(employee_json),
        }),
    };
    json!({
        "event_id": e.id.to_string(),
        "event_type": e.body.type_name(),
        "occurred_at": timestamp(&e.occurred_at),
        "firm": { "org_number": e.firm.as_str() },
        "sequence": e.sequence,
        "data": data,
    })
}

fn employee_json(e: &Employee) -> Value {
    json!({
        "id": e.id.to_string(),
        "national_identity_number": e.national_identity_number.expose(),
        "last_name": e.last_name,
    })
}

fn client_json(c: &Client) -> Value {
    json!({ "org_number": c.org_number.as_str(), "name": c.name })
}

/// The input with only the contract's fields, UUIDs in lower case and the timestamp in UTC;
/// `None` when it does not have the contract's shape at all.
pub fn canonical(input: &Value) -> Option<Value> {
    let o = input.as_object()?;
    let event_type = o.get("event_type")?.as_str()?;
    let d = o.get("data")?.as_object()?;
    let data = match event_type {
        "ClientAssigned" => json!({
            "employee": canonical_employee(d.get("employee")?)?,
            "client": canonical_client(d.get("client")?)?,
        }),
        "ClientRemoved" => json!({
            "employee_id": lower(d.get("employee_id")?)?,
            "client_org_number": d.get("client_org_number")?.clone(),
        }),
        "RoleChanged" => json!({
            "employee": canonical_employee(d.get("employee")?)?,
            "roles": d.get("roles")?.clone(),
        }),
        "ProjectAccountantChanged" => json!({
            "client": canonical_client(d.get("client")?)?,
            "previous_employee_id": nullable(d.get("previous_employee_id")?, lower)?,
            "employee": nullable(d.get("employee")?, canonical_employee)?,
        }),
        _ => return None,
    };
    let occurred_at = DateTime::parse_from_rfc3339(o.get("occurred_at")?.as_str()?).ok()?;
    Some(json!({
        "event_id": lower(o.get("event_id")?)?,
        "event_type": event_type,
        "occurred_at": timestamp(&occurred_at.with_timezone(&Utc)),
        "firm": { "org_number": o.get("firm")?.as_object()?.get("org_number")?.clone() },
        "sequence": o.get("sequence")?.clone(),
        "data": data,
    }))
}

fn lower(v: &Value) -> Option<Value> {
    Some(Value::String(v.as_str()?.to_ascii_lowercase()))
}

fn nullable(v: &Value, f: fn(&Value) -> Option<Value>) -> Option<Value> {
    if v.is_null() { Some(Value::Null) } else { f(v) }
}

fn pick(v: &Value, keys: &[&str]) -> Option<Map<String, Value>> {
    let o = v.as_object()?;
    keys.iter()
        .map(|&k| Some((k.to_owned(), o.get(k)?.clone())))
        .collect()
}

fn canonical_employee(v: &Value) -> Option<Value> {
    let mut e = pick(v, &["id", "national_identity_number", "last_name"])?;
    let id = lower(&e["id"])?;
    e.insert("id".to_owned(), id);
    Some(Value::Object(e))
}

fn canonical_client(v: &Value) -> Option<Value> {
    pick(v, &["org_number", "name"]).map(Value::Object)
}
