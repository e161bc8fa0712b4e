//! `schemas/asyncapi.yaml` as AdminFlow's tools see it: the official AsyncAPI parser
//! (`@asyncapi/parser`, pinned in `tests/asyncapi/package-lock.json`, default options) reads it
//! with no error and no diagnostic about schemas or payloads, and every message has a payload it
//! can read that matches the JSON Schema file it documents. The check itself is
//! `tests/asyncapi/validate.mjs`; it needs Node.js 20 and npm.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Report {
    parser: String,
    asyncapi: Option<String>,
    diagnostics: Vec<serde_json::Value>,
    messages: Vec<Message>,
    problems: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Message {
    id: String,
    payload: bool,
    properties: Vec<String>,
    source: Option<String>,
}

fn tooling() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/asyncapi")
}

/// The `@asyncapi/parser` version `package.json` at `path` names, if the file is there.
fn parser_version(path: &Path, pointer: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json.pointer(pointer)?.as_str().map(str::to_owned)
}

/// Installs the pinned parser from the lock file, unless `node_modules` already holds that
/// version.
fn install(dir: &Path) {
    let locked = parser_version(
        &dir.join("package-lock.json"),
        "/packages/node_modules~1@asyncapi~1parser/version",
    );
    let installed = parser_version(
        &dir.join("node_modules/@asyncapi/parser/package.json"),
        "/version",
    );
    assert!(
        locked.is_some(),
        "package-lock.json pins no @asyncapi/parser"
    );
    if installed == locked {
        return;
    }
    // --ignore-scripts: nothing the check needs runs at install time, and a dependency's
    // postinstall only reports usage analytics.
    let status = Command::new("npm")
        .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .expect("npm (Node.js 20) is needed to run the AsyncAPI parser");
    assert!(
        status.success(),
        "npm ci in {} failed: {status}",
        dir.display()
    );
}

#[test]
fn the_official_asyncapi_parser_reads_every_payload() {
    let dir = tooling();
    install(&dir);
    let document = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/asyncapi.yaml");
    let out = Command::new("node")
        .arg("validate.mjs")
        .arg(&document)
        .current_dir(&dir)
        .output()
        .expect("node (Node.js 20) is needed to run the AsyncAPI parser");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "validate.mjs printed no report ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success() && report.problems.is_empty(),
        "@asyncapi/parser {} finds problems in AsyncAPI {:?}:\n{}\n\nfull report:\n{stdout}",
        report.parser,
        report.asyncapi,
        report.problems.join("\n"),
    );
    assert!(
        report
            .asyncapi
            .as_deref()
            .is_some_and(|v| v.starts_with("3.")),
        "the document is AsyncAPI {:?}, not 3.x",
        report.asyncapi
    );

    let mut typed: Vec<(&str, &str)> = report
        .messages
        .iter()
        .filter(|m| m.payload && !m.properties.is_empty())
        .map(|m| (m.id.as_str(), m.source.as_deref().unwrap_or("")))
        .collect();
    typed.sort_unstable();
    assert_eq!(
        typed,
        [
            ("ClientAssigned", "events/ClientAssigned.schema.json"),
            ("ClientRemoved", "events/ClientRemoved.schema.json"),
            ("NightlyReconcile", "commands/NightlyReconcile.schema.json"),
            (
                "ProjectAccountantChanged",
                "events/ProjectAccountantChanged.schema.json"
            ),
            ("RoleChanged", "events/RoleChanged.schema.json"),
            ("SyncNow", "commands/SyncNow.schema.json"),
        ],
        "messages with a readable payload; diagnostics: {:?}",
        report.diagnostics
    );
}

/// The payloads are the 2020-12 files themselves, read by the parser as AsyncAPI schemas (a
/// draft-07 superset). They mean the same in both only while they avoid what the two drafts
/// read differently: draft-07 ignores the siblings of `$ref` (the parser drops them, e.g. a
/// `maxLength` next to a `$ref`), and knows none of the keywords 2019-09 and 2020-12 added.
#[test]
fn the_payload_schemas_mean_the_same_to_asyncapi_as_to_json_schema_2020_12() {
    const NEWER_THAN_DRAFT_07: &[&str] = &[
        "$anchor",
        "$dynamicAnchor",
        "$dynamicRef",
        "$recursiveAnchor",
        "$recursiveRef",
        "$vocabulary",
        "dependentRequired",
        "dependentSchemas",
        "maxContains",
        "minContains",
        "prefixItems",
        "unevaluatedItems",
        "unevaluatedProperties",
    ];
    fn walk(at: &str, value: &serde_json::Value, found: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if map.contains_key("$ref") && map.len() > 1 {
                    found.push(format!("{at}: `$ref` with siblings (use allOf)"));
                }
                for (key, v) in map {
                    // Keys under `properties` and `$defs` are names, not keywords.
                    if NEWER_THAN_DRAFT_07.contains(&key.as_str())
                        && !at.ends_with("/properties")
                        && !at.ends_with("/$defs")
                    {
                        found.push(format!("{at}: `{key}` is newer than draft-07"));
                    }
                    walk(&format!("{at}/{key}"), v, found);
                }
            }
            serde_json::Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(&format!("{at}/{i}"), v, found);
                }
            }
            _ => {}
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let mut found = Vec::new();
    let mut files = 0;
    for dir in ["events", "commands"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
            let name = path.strip_prefix(&root).unwrap().display().to_string();
            walk(&format!("{name}#"), &schema, &mut found);
            files += 1;
        }
    }
    assert_eq!(
        files, 6,
        "schema files in schemas/events and schemas/commands"
    );
    assert!(found.is_empty(), "{}", found.join("\n"));
}
