//! The message JSON Schemas, compiled once, chosen by routing key as `schemas/examples/README.md`
//! describes (no schema for a routing key means the schema rejects the message).

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use jsonschema::Validator;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Event,
    Command,
}

type Validators = HashMap<(Kind, String), Validator>;

fn validators() -> &'static Validators {
    static ALL: OnceLock<Validators> = OnceLock::new();
    ALL.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
        let mut all = HashMap::new();
        for (kind, dir) in [(Kind::Event, "events"), (Kind::Command, "commands")] {
            for entry in std::fs::read_dir(root.join(dir)).expect("schemas directory") {
                let path = entry.expect("schema file").path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                let Some(routing_key) = name.strip_suffix(".schema.json") else {
                    continue;
                };
                let text = std::fs::read_to_string(&path).expect("read schema");
                let schema: serde_json::Value =
                    serde_json::from_str(&text).expect("schema is JSON");
                let validator = jsonschema::options()
                    // The schemas use no `format` today; should one appear, it is checked.
                    .should_validate_formats(true)
                    .build(&schema)
                    .expect("schema compiles");
                all.insert((kind, routing_key.to_owned()), validator);
            }
        }
        assert_eq!(all.len(), 6, "four event and two command schemas");
        all
    })
}

/// Whether the schema for `routing_key` accepts `message`.
pub fn accepts(kind: Kind, routing_key: &str, message: &serde_json::Value) -> bool {
    validators()
        .get(&(kind, routing_key.to_owned()))
        .is_some_and(|v| v.is_valid(message))
}
