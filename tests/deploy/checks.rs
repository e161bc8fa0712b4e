//! Checks shared by the manifests, each returning what is wrong so that a test can show it
//! fails on a bad manifest as well as passes on the real one.

use std::collections::BTreeSet;

use serde_norway::Value;

use crate::code::Series;

pub fn yaml(text: &str) -> Value {
    serde_norway::from_str(text).unwrap_or_else(|e| panic!("YAML does not parse: {e}\n{text}"))
}

/// Every document of a multi-document YAML text (`---` separated), empty ones skipped.
pub fn yaml_documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|doc| <Value as serde::Deserialize>::deserialize(doc).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

pub fn str_of<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value:?}"))
}

pub fn seq<'a>(value: &'a Value, what: &str) -> &'a [Value] {
    value
        .as_sequence()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("{what} is not a list: {value:?}"))
}

/// The env names in `set` that `known` (the code's) lacks.
pub fn unknown_env<'a>(
    set: impl IntoIterator<Item = &'a str>,
    known: &BTreeSet<String>,
) -> Vec<String> {
    // The secrets read from files: `cli::Secrets` reads these `_FILE`s for their variables.
    const FILE_SECRETS: [&str; 2] = ["DATABASE_URL_FILE", "AMQP_URL_FILE"];
    set.into_iter()
        .filter(|name| {
            let secret_of_known = FILE_SECRETS.contains(name)
                && name
                    .strip_suffix("_FILE")
                    .is_some_and(|var| known.contains(var));
            !known.contains(*name) && !secret_of_known
        })
        .map(str::to_owned)
        .collect()
}

/// The env names a container spec sets (`env[].name`, not `envFrom`).
pub fn container_env_names(container: &Value) -> Vec<&str> {
    container["env"]
        .as_sequence()
        .map(|env| env.iter().map(|e| str_of(&e["name"], "env name")).collect())
        .unwrap_or_default()
}

/// The identifiers in a PromQL expression that look like altinn-sync series.
pub fn series_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in expr.match_indices("altinn_sync_") {
        let starts_word = expr[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        if starts_word {
            let name: String = expr[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.insert(name);
        }
    }
    out
}

/// What is wrong with a PromQL expression against the exported series: names the code does
/// not export, `histogram_quantile` over something other than a `_bucket`, no series at all.
pub fn promql_problems(expr: &str, series: &Series) -> Vec<String> {
    let used = series_in(expr);
    let mut problems: Vec<String> = used
        .iter()
        .filter(|name| !series.exports(name))
        .map(|name| format!("`{name}` is not exported by the code"))
        .collect();
    if used.is_empty() {
        problems.push(format!("`{expr}` names no altinn_sync series"));
    }
    if expr.contains("histogram_quantile") && !used.iter().any(|n| n.ends_with("_bucket")) {
        problems.push(format!(
            "`{expr}`: histogram_quantile needs a _bucket series"
        ));
    }
    problems
}

/// The label values in `label="value"` matchers of an expression.
pub fn matcher_values(expr: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, _) in expr.match_indices("=\"") {
        let label: String = expr[..i]
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let value = expr[i + 2..].split('"').next().unwrap_or_default();
        if !label.is_empty() {
            out.push((label, value.to_owned()));
        }
    }
    out
}

/// The port of a `host:port` address.
pub fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr} has no port"))
}

/// A probe's problems: it must `GET path` on the container port that `port` serves.
pub fn probe_problems(
    probe: &Value,
    path: &str,
    admin_port: u16,
    container: &Value,
) -> Vec<String> {
    let mut problems = Vec::new();
    let http = &probe["httpGet"];
    if http["path"].as_str() != Some(path) {
        problems.push(format!("probe path {:?}, expected {path}", http["path"]));
    }
    let port = match &http["port"] {
        Value::Number(n) => n.as_u64(),
        Value::String(name) => container["ports"].as_sequence().and_then(|ports| {
            ports
                .iter()
                .find(|p| p["name"].as_str() == Some(name))
                .and_then(|p| p["containerPort"].as_u64())
        }),
        _ => None,
    };
    if port != Some(u64::from(admin_port)) {
        problems.push(format!(
            "probe port {:?} is not the admin port {admin_port}",
            http["port"]
        ));
    }
    problems
}

/// GitHub's anchor for a Markdown heading.
pub fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Whether an image reference is pinned: a digest, or a tag with a version number (not
/// `latest`, not missing).
pub fn is_pinned(image: &str) -> bool {
    if image.contains("@sha256:") {
        return true;
    }
    let name_end = image.rfind('/').map_or(0, |i| i + 1);
    match image[name_end..].split_once(':') {
        Some((_, tag)) => tag != "latest" && tag.chars().any(|c| c.is_ascii_digit()),
        None => false,
    }
}
