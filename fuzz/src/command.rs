//! The invariants of `decode_command`, as `event.rs` has them for events.

use altinn_sync::contract::{Command, CommandKind, Rules, decode_command};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::alloc::{decode_budget, peak_during};
use crate::event::timestamp;
use crate::schema::{self, Kind};

/// Decodes one delivery and asserts every invariant; returns whether it was accepted.
pub fn check(routing_key: &str, body: &[u8]) -> bool {
    let rules = Rules::default();
    let (decoded, peak) = peak_during(|| decode_command(routing_key, body, &rules));
    assert!(
        peak <= decode_budget(body.len()),
        "decoding {} bytes held {peak} bytes at once",
        body.len()
    );
    let command = match decoded {
        Ok(command) => command,
        Err(e) => {
            crate::assert_no_digit_runs(&e.to_string());
            return false;
        }
    };
    let input: Value = serde_json::from_slice(body).expect("an accepted body is JSON");
    assert!(
        schema::accepts(Kind::Command, routing_key, &input),
        "the decoder accepts what the schema for {routing_key:?} rejects: {input}"
    );
    let encoded = encode(&command);
    assert!(
        schema::accepts(Kind::Command, routing_key, &encoded),
        "the re-encoded command breaks the schema: {encoded}"
    );
    assert_eq!(
        Some(&encoded),
        canonical(&input).as_ref(),
        "the decoded command differs from the input"
    );
    let again = decode_command(routing_key, &serde_json::to_vec(&encoded).unwrap(), &rules)
        .expect("a re-encoded command decodes");
    assert_eq!(again.kind, command.kind);
    assert_eq!(encode(&again), encoded, "re-encoding is not stable");
    true
}

/// The command in the contract's shape, absent optional fields written as `null`.
pub fn encode(c: &Command) -> Value {
    let (firm, after_sequence) = match &c.kind {
        CommandKind::SyncNow {
            firm,
            after_sequence,
        } => (Some(firm), *after_sequence),
        CommandKind::NightlyReconcile { firm } => (firm.as_ref(), None),
    };
    json!({
        "command_id": c.id.to_string(),
        "command_type": c.kind.type_name(),
        "requested_at": timestamp(&c.requested_at),
        "requested_by": c.requested_by,
        "firm": firm.map(|f| json!({ "org_number": f.as_str() })),
        "after_sequence": after_sequence,
    })
}

/// The input with only the contract's fields, absent ones as `null`, the id in lower case and
/// the time in UTC. `after_sequence` only counts for SyncNow: NightlyReconcile has none.
pub fn canonical(input: &Value) -> Option<Value> {
    let o = input.as_object()?;
    let command_type = o.get("command_type")?.as_str()?;
    let field = |k: &str| o.get(k).cloned().unwrap_or(Value::Null);
    let firm = match field("firm") {
        Value::Null => Value::Null,
        f => json!({ "org_number": f.as_object()?.get("org_number")?.clone() }),
    };
    let requested_at = DateTime::parse_from_rfc3339(o.get("requested_at")?.as_str()?).ok()?;
    Some(json!({
        "command_id": o.get("command_id")?.as_str()?.to_ascii_lowercase(),
        "command_type": command_type,
        "requested_at": timestamp(&requested_at.with_timezone(&Utc)),
        "requested_by": field("requested_by"),
        "firm": firm,
        "after_sequence": if command_type == "SyncNow" { field("after_sequence") } else { Value::Null },
    }))
}
