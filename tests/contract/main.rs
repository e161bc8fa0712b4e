//! The JSON Schemas in `schemas/` and the Rust decoder must agree on the example corpus in
//! `schemas/examples/`: both accept every valid case; the decoder rejects every invalid case,
//! and the schemas reject every invalid case that JSON Schema can express.
#![allow(
    // Tests and benchmarks report failure by panicking, and count in small numbers.
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

mod asyncapi;

use std::path::{Path, PathBuf};

use altinn_sync::contract::{Rules, decode_command, decode_event};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    description: String,
    kind: String,
    routing_key: String,
    #[serde(default)]
    schema_rejects: Option<bool>,
    message: serde_json::Value,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

fn cases(dir: &str) -> Vec<(String, Case)> {
    let mut out: Vec<(String, Case)> = std::fs::read_dir(root().join("examples").join(dir))
        .expect("corpus directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read case");
            let case = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{p:?}: {e}"));
            (p.file_name().unwrap().to_string_lossy().into_owned(), case)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The schema for a routing key, or `None` when no message type has that name.
fn schema_accepts(case: &Case) -> Option<bool> {
    let dir = if case.kind == "event" {
        "events"
    } else {
        "commands"
    };
    let path = root()
        .join(dir)
        .join(format!("{}.schema.json", case.routing_key));
    let text = std::fs::read_to_string(path).ok()?;
    let schema: serde_json::Value = serde_json::from_str(&text).expect("schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    Some(validator.is_valid(&case.message))
}

fn decoder_accepts(case: &Case) -> Result<(), String> {
    let body = serde_json::to_vec(&case.message).unwrap();
    let rules = Rules::default();
    match case.kind.as_str() {
        "event" => decode_event(&case.routing_key, &body, &rules).map(|_| ()),
        "command" => decode_command(&case.routing_key, &body, &rules).map(|_| ()),
        other => panic!("unknown kind {other}"),
    }
    .map_err(|e| format!("{} ({})", e, e.code()))
}

#[test]
fn every_valid_case_passes_schema_and_decoder() {
    let cases = cases("valid");
    assert!(
        cases.len() >= 12,
        "the corpus has {} valid cases",
        cases.len()
    );
    for (name, case) in &cases {
        assert_eq!(
            schema_accepts(case),
            Some(true),
            "{name}: schema rejects: {}",
            case.description
        );
        if let Err(e) = decoder_accepts(case) {
            panic!("{name}: decoder rejects ({e}): {}", case.description);
        }
    }
}

#[test]
fn every_invalid_case_fails_the_decoder_and_where_expressible_the_schema() {
    let cases = cases("invalid");
    assert!(
        cases.len() >= 18,
        "the corpus has {} invalid cases",
        cases.len()
    );
    for (name, case) in &cases {
        assert!(
            decoder_accepts(case).is_err(),
            "{name}: decoder accepts: {}",
            case.description
        );
        let expressible = case
            .schema_rejects
            .unwrap_or_else(|| panic!("{name}: invalid cases must say schema_rejects"));
        let schema = schema_accepts(case).unwrap_or(false);
        assert_eq!(
            !schema,
            expressible,
            "{name}: schema {} it, but the case says schema_rejects={expressible}: {}",
            if schema { "accepts" } else { "rejects" },
            case.description
        );
    }
}

#[test]
fn every_schema_states_the_rules_it_cannot_express() {
    for dir in ["events", "commands"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for rule in ["262144", "check digit", "routing key"] {
                assert!(
                    text.contains(rule),
                    "{dir}: a schema does not mention {rule:?}"
                );
            }
        }
    }
}
